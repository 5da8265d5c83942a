"""The service database's entities: one pydantic model per entity, matching its table, and
the errors a bad row gets when a batch is saved (naming the row and the field)."""

import math

import pandas as pd
import pytest

from db import engine_for, migrate
from db.schemas import (
    ASSIGNED_ON_WRITE,
    NewSuggestion,
    PriceSuggestion,
    SkippedOffer,
)
from db.suggestions import list_suggestions, save_batch
from db.tables import PriceSuggestionRow, SkippedOfferRow
from models.pricing.optimizer import SKIPPED_COLUMNS, SUGGESTION_COLUMNS
from tests.test_db_migrations import SKIPPED, SUGGESTION


@pytest.fixture
def engine(tmp_path):
    engine = engine_for(f"sqlite:///{tmp_path / 'tailor.db'}")
    migrate(engine)
    yield engine
    engine.dispose()


def test_entities_match_their_tables_and_the_optimizer_columns():
    assert set(PriceSuggestion.model_fields) == set(PriceSuggestionRow.__table__.columns.keys())
    assert set(NewSuggestion.model_fields) == set(SUGGESTION_COLUMNS) | {"category"}
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


def test_save_batch_accepts_missing_rules_and_categories(engine):
    rows = pd.DataFrame([{**SUGGESTION, "bound_by": None},
                         {**SUGGESTION, "channel": "etsy", "bound_by": '["max_change"]'}])

    save_batch(engine, rows, pd.DataFrame([SKIPPED]), "demand-model:7", {},
               {"p1": math.nan})

    stored = list_suggestions(engine)
    assert [(row["channel"], row["bound_by"], row["category"]) for row in stored] == [
        ("etsy", ["max_change"], None), ("web", [], None)]
    assert all(PriceSuggestion.model_validate(row) for row in stored)


def test_save_batch_names_a_bad_skipped_row(engine):
    with pytest.raises(ValueError, match="skipped row 0: field 'reason' must be a non-empty"):
        save_batch(engine, pd.DataFrame([SUGGESTION]), pd.DataFrame([{**SKIPPED, "reason": ""}]),
                   "demand-model:7", {})
