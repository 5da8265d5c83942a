"""The service database's entities: one pydantic model per entity, matching its table, and
the errors a bad row gets when a batch is saved (naming the row and the field), on a SQLite
file and on the real PostgreSQL."""

import math

import pandas as pd
import pytest
from sqlalchemy import Engine, func, select

from db import migrate
from db.schemas import (
    ASSIGNED_ON_WRITE,
    BOUND_FIELDS,
    UNCERTAINTY_FIELDS,
    NewSuggestion,
    PriceSuggestion,
    SkippedOffer,
)
from db.suggestions import list_suggestions, save_batch
from db.tables import PriceSuggestionRow, SkippedOfferRow, SuggestionBatchRow
from models.pricing.optimizer import SKIPPED_COLUMNS, SUGGESTION_COLUMNS
from tests.test_db_migrations import NO_UNCERTAINTY, SKIPPED, SUGGESTION, UNCERTAINTY

PUBLISHED_FIELDS = [  # `PriceSuggestion` as first published: its fields keep this order
    "id", "batch_id", "item_id", "channel", "category", "current_price", "suggested_price",
    "expected_units_current", "expected_units_suggested", "expected_revenue_current",
    "expected_revenue_suggested", "expected_profit_current", "expected_profit_suggested",
    "bound_by", "explanation", "model_version", "status", "created_at", "reviewed_at",
]


@pytest.fixture
def engine(empty_database: Engine) -> Engine:
    migrate(empty_database)
    return empty_database


def batch_count(engine: Engine) -> int:
    with engine.connect() as connection:
        return connection.scalar(select(func.count()).select_from(SuggestionBatchRow))


def test_entities_match_their_tables_and_the_optimizer_columns():
    assert set(PriceSuggestion.model_fields) == set(PriceSuggestionRow.__table__.columns.keys())
    # The uncertainty and bound columns are optional: frames of older code lack them.
    assert set(NewSuggestion.model_fields) == set(SUGGESTION_COLUMNS) | {"category"}
    assert list(PriceSuggestion.model_fields) == (
        PUBLISHED_FIELDS + list(UNCERTAINTY_FIELDS)
        + [*BOUND_FIELDS, "approved_price", "reviewed_by"])
    assert all(not NewSuggestion.model_fields[name].is_required()
               for name in (*UNCERTAINTY_FIELDS, *BOUND_FIELDS))
    assert set(NewSuggestion.model_fields) | set(ASSIGNED_ON_WRITE) == set(
        PriceSuggestion.model_fields)
    assert set(SkippedOffer.model_fields) == set(SKIPPED_COLUMNS)
    assert set(SkippedOfferRow.__table__.columns.keys()) == set(SKIPPED_COLUMNS) | {
        "id", "batch_id"}


@pytest.mark.parametrize("field, value, problem", [
    ("suggested_price", math.nan, "field 'suggested_price' must be finite, got nan"),
    ("current_price", 0.0, "field 'current_price' must be > 0, got 0.0"),
    ("expected_units_suggested", -1.0, "field 'expected_units_suggested' must be >= 0"),
    ("expected_profit_current", math.inf, "field 'expected_profit_current' must be finite"),
    ("item_id", "  ", "field 'item_id' must be a non-empty string, got '  '"),
    ("explanation", None, "field 'explanation' must be a non-empty string, got None"),
    ("bound_by", ["max_change", "bogus"], "field 'bound_by' names an unknown rule; known: "
                                          "min_margin, min_price"),
    ("bound_by", "not json", "field 'bound_by'"),
])
def test_save_batch_names_the_row_and_field_of_a_bad_value(engine, field, value, problem):
    rows = pd.DataFrame([SUGGESTION, {**SUGGESTION, "channel": "etsy", field: value}])

    with pytest.raises(ValueError, match="suggestion row 1: ") as error:
        save_batch(engine, rows, None, "demand-model:7", {})

    assert problem in str(error.value)
    assert list_suggestions(engine, status=None) == []


@pytest.mark.parametrize("values, problem", [
    ({"expected_profit_gain_low": 1.0, "expected_profit_gain_high": 0.5},
     "field 'expected_profit_gain_high' must be >= field 'expected_profit_gain_low' (1.0), "
     "got 0.5"),
    ({"elasticity": None, "elasticity_low": 2.0, "elasticity_high": 1.0},
     "field 'elasticity_high' must be >= field 'elasticity_low' (2.0), got 1.0"),
    ({"elasticity": 1.0, "elasticity_low": 1.2},
     "field 'elasticity_low' must be <= field 'elasticity' (1.0), got 1.2"),
    ({"elasticity": 3.0}, "field 'elasticity_high' must be >= field 'elasticity' (3.0), got 2.5"),
    ({"elasticity": -0.5, "elasticity_low": -1.0}, "field 'elasticity' must be >= 0, got -0.5"),
    ({"evidence_share": 1.5}, "field 'evidence_share' must be <= 1, got 1.5"),
    ({"evidence_share": -0.1}, "field 'evidence_share' must be >= 0, got -0.1"),
    ({"expected_profit_gain_high": math.inf},
     "field 'expected_profit_gain_high' must be finite, got inf"),
    ({"elasticity_low": -math.inf}, "field 'elasticity_low' must be finite, got -inf"),
    ({"elasticity": "steep"}, "field 'elasticity' must be a number, got 'steep'"),
])
def test_save_batch_refuses_a_bad_uncertainty_writing_nothing(engine, values, problem):
    rows = pd.DataFrame([{**SUGGESTION, **UNCERTAINTY},
                         {**SUGGESTION, **UNCERTAINTY, "channel": "etsy", **values}])

    with pytest.raises(ValueError, match="suggestion row 1: ") as error:
        save_batch(engine, rows, pd.DataFrame([SKIPPED]), "demand-model:7", {})

    assert problem in str(error.value)
    assert list_suggestions(engine, status=None) == [] and batch_count(engine) == 0


def test_save_batch_stores_the_uncertainty_and_nan_or_none_as_null(engine):
    kept = {"expected_profit_gain_low": 0.0, "expected_profit_gain_high": 0.0,
            "elasticity": 0.0, "elasticity_low": -0.3, "elasticity_high": 0.4,
            "evidence_share": 0.0}  # a kept price; an interval may reach below 0
    rows = pd.DataFrame([
        {**SUGGESTION, **UNCERTAINTY},
        {**SUGGESTION, **kept, "channel": "amazon"},
        {**SUGGESTION, **dict.fromkeys(UNCERTAINTY_FIELDS, math.nan), "channel": "etsy"},
        {**SUGGESTION, **UNCERTAINTY, "channel": "shop", "elasticity": math.nan},
    ])
    rows["evidence_share"] = pd.Series([0.35, 0.0, math.nan, None], dtype=object)  # None kept

    batch_id = save_batch(engine, rows, None, "demand-model:7", {})

    stored = {row["channel"]: row for row in list_suggestions(engine, batch_id=batch_id)}
    assert {channel: {name: row[name] for name in UNCERTAINTY_FIELDS}
            for channel, row in stored.items()} == {
        "amazon": kept, "etsy": NO_UNCERTAINTY, "web": UNCERTAINTY,
        "shop": {**UNCERTAINTY, "elasticity": None, "evidence_share": None}}
    assert all(PriceSuggestion.model_validate(row) for row in stored.values())


def test_save_batch_accepts_missing_rules_and_categories(engine):
    rows = pd.DataFrame([{**SUGGESTION, "bound_by": None},
                         {**SUGGESTION, "channel": "etsy", "bound_by": '["max_change"]'}])

    save_batch(engine, rows, pd.DataFrame([SKIPPED]), "demand-model:7", {},
               {"p1": math.nan})

    stored = list_suggestions(engine)
    assert [(row["channel"], row["bound_by"], row["category"]) for row in stored] == [
        ("etsy", ["max_change"], None), ("web", [], None)]
    # The frame has no uncertainty columns (a model without uncertainty): stored as null.
    assert [{name: row[name] for name in UNCERTAINTY_FIELDS} for row in stored] == [
        NO_UNCERTAINTY] * 2
    assert all(PriceSuggestion.model_validate(row) for row in stored)


def test_save_batch_names_a_bad_skipped_row(engine):
    with pytest.raises(ValueError, match="skipped row 0: field 'reason' must be a non-empty"):
        save_batch(engine, pd.DataFrame([SUGGESTION]), pd.DataFrame([{**SKIPPED, "reason": ""}]),
                   "demand-model:7", {})
