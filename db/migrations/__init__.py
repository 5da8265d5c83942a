"""Alembic migrations of the service database, run from Python (no alembic.ini).

`migrate(engine_or_url)` upgrades a database to the newest revision (`head()`), creating the
tables on an empty one. A database created before migrations existed (the tables of
revision 0001, no `alembic_version` table) is adopted in place: stamped at 0001, then
upgraded; its rows are kept. Migrating an up-to-date database changes nothing. On PostgreSQL
concurrent callers (several workers starting) are serialised by an advisory lock.

A table change needs a new revision in `versions/` (`NNNN_what.py`, `revision = "NNNN"`):
draft it with `alembic.command.revision(alembic_config(connection), "what",
autogenerate=True, rev_id="NNNN")` on a connection to a database at head, then review it.
"""

import threading
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect, text

from db.tables import engine_for

DIRECTORY = Path(__file__).resolve().parent
BASELINE = "0001"
"""The revision whose tables the pre-migration `create_all` made."""
BASELINE_TABLES = frozenset({"suggestion_batches", "price_suggestions", "skipped_offers"})
VERSION_TABLE = "alembic_version"
_PG_LOCK = 0x7461696C6F72  # "tailor": the advisory lock key of migrations


def alembic_config(connection: Connection | None = None) -> Config:
    """The migrations' Alembic configuration; `env.py` runs on `connection` when given."""
    config = Config()
    config.set_main_option("script_location", str(DIRECTORY))
    config.attributes["connection"] = connection
    return config


def head() -> str:
    """The newest revision."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head() or BASELINE


def current_revision(connection: Connection) -> str | None:
    """The revision a database is at (None: not under migrations, or empty)."""
    return MigrationContext.configure(connection).get_current_revision()


def _adopt_legacy(connection: Connection, config: Config) -> None:
    tables = set(inspect(connection).get_table_names())
    if VERSION_TABLE in tables or not tables & BASELINE_TABLES:
        return
    missing = BASELINE_TABLES - tables
    if missing:
        raise RuntimeError(
            f"the service database holds some suggestion tables but not {sorted(missing)} "
            f"and no {VERSION_TABLE} table: it was not made by this program; fix it by hand")
    command.stamp(config, BASELINE)


_IN_PROCESS = threading.Lock()


def migrate(database: Engine | str) -> str:
    """Upgrade the database (an engine or a SQLAlchemy URL) to `head()`; returns the revision."""
    engine = engine_for(database) if isinstance(database, str) else database
    try:
        # Alembic runs a migration through module-level proxies: one thread at a time (the
        # stream consumer and its repricer thread both open the database).
        with _IN_PROCESS, engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK})
            config = alembic_config(connection)
            _adopt_legacy(connection, config)
            command.upgrade(config, "head")
            return current_revision(connection) or head()
    finally:
        if isinstance(database, str):
            engine.dispose()
