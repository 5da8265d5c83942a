"""The service database's migrations on a SQLite file and on the real PostgreSQL: an old
database is upgraded in place with its rows, a fresh one gets exactly the tables `db.tables`
declares, and migrating again changes nothing."""


import pandas as pd
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, event, inspect, text

from db import engine_for, migrate
from db.migrations import BASELINE, VERSION_TABLE, alembic_config, current_revision, head
from db.suggestions import get_batch, list_suggestions, save_batch
from db.tables import Base

SUGGESTION = {
    "item_id": "p1", "channel": "web", "current_price": 5.99, "suggested_price": 6.49,
    "expected_units_current": 3.0, "expected_units_suggested": 2.8,
    "expected_revenue_current": 17.97, "expected_revenue_suggested": 18.17,
    "expected_profit_current": 12.5, "expected_profit_suggested": 13.1,
    "bound_by": ["max_change"], "model_version": "demand-model:7",
    "explanation": "raised within the max change",
}
SKIPPED = {"item_id": "p9", "channel": "web", "reason": "no observed prices"}


@pytest.fixture
def engine(empty_database: Engine) -> Engine:
    return empty_database


def store_rows(engine: Engine) -> str:
    suggestions = pd.DataFrame([SUGGESTION, {**SUGGESTION, "channel": "etsy", "bound_by": []}])
    return save_batch(engine, suggestions, pd.DataFrame([SKIPPED]), "demand-model:7",
                      {"max_change_percent": 20.0}, {"p1": "sewing"})


def contents(engine: Engine, batch_id: str) -> tuple:
    return list_suggestions(engine, status=None), get_batch(engine, batch_id)


def schema_differences(engine: Engine) -> list:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, Base.metadata)


def revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return current_revision(connection)


def test_migrate_adopts_a_database_made_before_migrations_keeping_its_rows(engine):
    Base.metadata.create_all(engine)  # how the service made its tables before migrations
    batch_id = store_rows(engine)
    before = contents(engine, batch_id)

    assert revision(engine) is None
    assert migrate(engine) == head()

    assert revision(engine) == head()
    assert contents(engine, batch_id) == before
    assert len(before[0]) == 2 and before[1]["skipped_count"] == 1


def test_migrate_upgrades_the_previous_revision_keeping_its_rows(engine):
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), BASELINE)
    batch_id = store_rows(engine)
    before = contents(engine, batch_id)

    migrate(engine)

    assert revision(engine) == head()
    assert contents(engine, batch_id) == before


def test_migrate_makes_exactly_the_declared_tables(engine):
    migrate(engine)

    assert schema_differences(engine) == []  # a table changed without a migration fails here
    tables = set(inspect(engine).get_table_names())
    assert tables == set(Base.metadata.tables) | {VERSION_TABLE}


def test_migrate_twice_changes_nothing(engine):
    migrate(engine)
    batch_id = store_rows(engine)
    before = contents(engine, batch_id)
    statements: list[str] = []

    def record(_connection, _cursor, statement, *_args) -> None:
        statements.append(statement.strip().split()[0].upper())

    event.listen(engine, "before_cursor_execute", record)
    try:
        assert migrate(engine) == head()
    finally:
        event.remove(engine, "before_cursor_execute", record)

    writes = {"CREATE", "ALTER", "DROP", "INSERT", "UPDATE", "DELETE"}
    assert not writes & set(statements), statements
    assert contents(engine, batch_id) == before


def test_migrate_refuses_a_database_with_only_some_of_the_tables(engine):
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE suggestion_batches (id VARCHAR(36))"))

    with pytest.raises(RuntimeError, match="holds some suggestion tables"):
        migrate(engine)


def test_migrate_accepts_a_url(tmp_path):
    url = f"sqlite:///{tmp_path / 'by-url.db'}"

    assert migrate(url) == head()

    engine = engine_for(url)
    assert schema_differences(engine) == []
    engine.dispose()
