"""The service database: tables (`db.tables`), entities (`db.schemas`), queries
(`db.suggestions`) and Alembic migrations (`db.migrations`; `db.migrate` upgrades a database
to the newest revision). Below `training` and `serving`, above `models`."""

from db.migrations import migrate
from db.tables import engine_for

__all__ = ["engine_for", "migrate"]
