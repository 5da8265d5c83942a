"""The service database: tables (`db.tables`), entities (`db.schemas`), queries
(`db.suggestions`, `db.reviews`, `db.keys`) and Alembic migrations (`db.migrations`;
`db.migrate` upgrades a database to the newest revision). Below `training` and `serving`,
above `models`."""

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine

from db.migrations import migrate
from db.tables import engine_for
from features.settings import Settings

__all__ = ["engine_for", "migrate", "service_database"]


@contextmanager
def service_database(settings: Settings) -> Iterator[Engine]:
    """The service database of `settings`, migrated to the newest revision (the embedded
    SQLite file's folder made first); its engine is disposed on exit."""
    if settings.database_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = engine_for(settings.database)
    try:
        migrate(engine)
        yield engine
    finally:
        engine.dispose()
