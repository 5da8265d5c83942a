"""The service database's migrations on a SQLite file and on the real PostgreSQL: an old
database is upgraded in place with its rows, a fresh one gets exactly the tables `db.tables`
declares, migrating again changes nothing, and the newest revision downgrades."""

import json
import uuid
from datetime import UTC, datetime

import pandas as pd
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, event, insert, inspect, select, text
from sqlalchemy.exc import IntegrityError

from db import engine_for, migrate
from db.migrations import BASELINE, VERSION_TABLE, alembic_config, current_revision, head
from db.schemas import BOUND_FIELDS, UNCERTAINTY_FIELDS
from db.suggestions import get_batch, list_suggestions, save_batch
from db.tables import Base, PriceSuggestionRow, SkippedOfferRow, SuggestionBatchRow

SUGGESTION = {
    "item_id": "p1", "channel": "web", "current_price": 5.99, "suggested_price": 6.49,
    "expected_units_current": 3.0, "expected_units_suggested": 2.8,
    "expected_revenue_current": 17.97, "expected_revenue_suggested": 18.17,
    "expected_profit_current": 12.5, "expected_profit_suggested": 13.1,
    "bound_by": ["max_change"], "model_version": "demand-model:7",
    "explanation": "raised within the max change",
}
SKIPPED = {"item_id": "p9", "channel": "web", "reason": "no observed prices"}
UNCERTAINTY = {  # SUGGESTION's: a gain of 13.1 - 12.5 = 0.6 within [-0.2, 1.4]
    "expected_profit_gain_low": -0.2, "expected_profit_gain_high": 1.4, "elasticity": 1.8,
    "elasticity_low": 1.2, "elasticity_high": 2.5, "evidence_share": 0.35,
}
NO_UNCERTAINTY = dict.fromkeys(UNCERTAINTY_FIELDS)
REVIEW_COLUMNS = (*BOUND_FIELDS, "approved_price", "reviewed_by")
"""The columns revision 0003 adds to `price_suggestions`."""
BASELINE_COLUMNS = [column.name for column in PriceSuggestionRow.__table__.columns
                    if column.name not in (*UNCERTAINTY_FIELDS, *REVIEW_COLUMNS)]
"""The columns of `price_suggestions` at revision 0001."""


@pytest.fixture
def engine(empty_database: Engine) -> Engine:
    return empty_database


def store_rows(engine: Engine) -> str:
    """A batch of two suggestions, the first with its uncertainty, the second without."""
    suggestions = pd.DataFrame([{**SUGGESTION, **UNCERTAINTY},
                                {**SUGGESTION, "channel": "etsy", "bound_by": []}])
    return save_batch(engine, suggestions, pd.DataFrame([SKIPPED]), "demand-model:7",
                      {"max_change_percent": 20.0}, {"p1": "sewing"})


def baseline_database(engine: Engine, stamped: bool) -> None:
    """The tables of revision 0001, as the service made them (with `create_all`, unstamped)
    before migrations existed, or stamped at that revision."""
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), BASELINE)
        if not stamped:
            connection.execute(text(f"DROP TABLE {VERSION_TABLE}"))


def store_baseline_rows(engine: Engine) -> str:
    """A batch as the code of revision 0001 wrote it (its columns only): two suggestions and
    a skipped offer."""
    batch_id, created_at = str(uuid.uuid4()), datetime.now(UTC)
    suggestions = [SUGGESTION, {**SUGGESTION, "channel": "etsy", "bound_by": []}]
    with engine.begin() as connection:
        connection.execute(insert(SuggestionBatchRow), [{
            "id": batch_id, "created_at": created_at, "model_version": "demand-model:7",
            "guardrails": json.dumps({"max_change_percent": 20.0}), "suggestion_count": 2,
            "skipped_count": 1}])
        connection.execute(insert(PriceSuggestionRow), [
            {**row, "batch_id": batch_id, "category": "sewing", "status": "pending",
             "created_at": created_at, "reviewed_at": None} for row in suggestions])
        connection.execute(insert(SkippedOfferRow), [{**SKIPPED, "batch_id": batch_id}])
    return batch_id


def contents(engine: Engine, batch_id: str) -> tuple:
    return list_suggestions(engine, status=None), get_batch(engine, batch_id)


def baseline_contents(engine: Engine, batch_id: str) -> tuple:
    """The batch and its suggestions in the columns of revision 0001 (readable at any
    revision), suggestions by id."""
    table = PriceSuggestionRow.__table__
    with engine.connect() as connection:
        rows = connection.execute(
            select(*(table.c[name] for name in BASELINE_COLUMNS)).order_by(table.c.id))
        return [dict(row._mapping) for row in rows], get_batch(engine, batch_id)


def uncertainty_by_id(engine: Engine) -> dict[int, dict]:
    return {row["id"]: {name: row[name] for name in UNCERTAINTY_FIELDS}
            for row in list_suggestions(engine, status=None)}


def suggestion_columns(engine: Engine) -> set[str]:
    return {column["name"] for column in inspect(engine).get_columns("price_suggestions")}


def schema_differences(engine: Engine) -> list:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, Base.metadata)


def revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return current_revision(connection)


def test_migrate_adopts_a_database_made_before_migrations_keeping_its_rows(engine):
    baseline_database(engine, stamped=False)
    batch_id = store_baseline_rows(engine)
    before = baseline_contents(engine, batch_id)

    assert revision(engine) is None
    assert migrate(engine) == head()

    assert revision(engine) == head()
    assert baseline_contents(engine, batch_id) == before
    assert len(before[0]) == 2 and before[1]["skipped_count"] == 1
    assert list(uncertainty_by_id(engine).values()) == [NO_UNCERTAINTY] * 2


def test_migrate_upgrades_the_previous_revision_keeping_its_rows(engine):
    baseline_database(engine, stamped=True)
    batch_id = store_baseline_rows(engine)
    before = baseline_contents(engine, batch_id)
    assert suggestion_columns(engine) == set(BASELINE_COLUMNS)

    migrate(engine)

    assert revision(engine) == head()
    assert suggestion_columns(engine) == (set(BASELINE_COLUMNS) | set(UNCERTAINTY_FIELDS)
                                          | set(REVIEW_COLUMNS))
    assert baseline_contents(engine, batch_id) == before  # old rows kept, uncertainty null
    assert list(uncertainty_by_id(engine).values()) == [NO_UNCERTAINTY] * 2
    assert [(row["item_id"], row["channel"]) for row in before[0]] == [("p1", "web"),
                                                                       ("p1", "etsy")]
    newer_id = store_rows(engine)  # the upgraded table takes a batch with uncertainty
    newer = list_suggestions(engine, batch_id=newer_id)
    assert [{name: row[name] for name in UNCERTAINTY_FIELDS} for row in newer] == [
        NO_UNCERTAINTY, UNCERTAINTY]  # by channel: etsy, web


def test_downgrade_drops_the_uncertainty_keeping_the_rows(engine):
    migrate(engine)
    batch_id = store_rows(engine)
    before = baseline_contents(engine, batch_id)

    with engine.begin() as connection:
        command.downgrade(alembic_config(connection), BASELINE)

    assert revision(engine) == BASELINE
    assert suggestion_columns(engine) == set(BASELINE_COLUMNS)
    assert baseline_contents(engine, batch_id) == before
    checks = inspect(engine).get_check_constraints("price_suggestions")
    assert [check["name"] for check in checks] == ["ck_price_suggestions_status"]
    with pytest.raises(IntegrityError, match=r"(?i)check constraint"), engine.begin() as c:
        c.execute(text("UPDATE price_suggestions SET status = 'done'"))  # the check is kept

    assert migrate(engine) == head()  # and up again: the declared tables, rows kept, null
    assert schema_differences(engine) == []
    assert baseline_contents(engine, batch_id) == before
    assert list(uncertainty_by_id(engine).values()) == [NO_UNCERTAINTY] * 2


def test_review_revision_admits_superseded_and_downgrades_it_to_rejected(engine):
    migrate(engine)
    store_rows(engine)
    with engine.begin() as connection:
        connection.execute(text("UPDATE price_suggestions SET status = 'superseded' "
                                "WHERE channel = 'web'"))
    with pytest.raises(IntegrityError, match=r"(?i)check constraint"), engine.begin() as c:
        c.execute(text("UPDATE price_suggestions SET status = 'done'"))

    with engine.begin() as connection:
        command.downgrade(alembic_config(connection), "0002")
        statuses = dict(connection.execute(
            text("SELECT channel, status FROM price_suggestions")).all())

    assert statuses == {"web": "rejected", "etsy": "pending"}
    assert not {"api_keys", "suggestion_decisions"} & set(inspect(engine).get_table_names())
    with pytest.raises(IntegrityError, match=r"(?i)check constraint"), engine.begin() as c:
        c.execute(text("UPDATE price_suggestions SET status = 'superseded'"))


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
