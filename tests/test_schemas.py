import re

import pandas as pd
import pytest
from pydantic import TypeAdapter, ValidationError

from features.schemas import (
    Event,
    Id,
    InvalidRecordsError,
    validate_catalog,
    validate_events,
)
from tests.conftest import catalog_row, event


def test_validate_events_names_the_row_and_field_of_each_problem():
    rows = [event("e1", "2011-01-01"), event("e2", "2011-01-01", quantity=0),
            event("e3", "2011-01-01", event_type="click")]
    with pytest.raises(InvalidRecordsError) as caught:
        validate_events(pd.DataFrame(rows))
    message = str(caught.value)
    assert "row 1, field 'quantity'" in message
    assert "row 2, field 'event_type'" in message
    assert caught.value.total == 2


def test_validate_events_requires_a_price_on_purchases_and_returns():
    with pytest.raises(InvalidRecordsError, match="unit_price is required for return"):
        validate_events(pd.DataFrame([event("e1", "2011-01-01", "return", unit_price=None)]))
    views = validate_events(pd.DataFrame([event("e1", "2011-01-01", "view", unit_price=None)]))
    assert views["unit_price"].isna().all()


def test_validate_events_reports_missing_and_unknown_columns():
    frame = pd.DataFrame([event("e1", "2011-01-01")]).drop(columns=["channel"]).assign(sku="x")
    with pytest.raises(InvalidRecordsError, match="missing column 'channel'") as caught:
        validate_events(frame)
    assert "unknown column 'sku'" in str(caught.value)


def test_validate_events_reads_text_fields_as_a_csv_export_gives_them():
    frame = pd.DataFrame([{
        "event_id": "e1", "event_type": "purchase", "user_id": "", "session_id": "s1",
        "item_id": "i1", "ts": "2011-06-01T10:00:00+01:00", "quantity": "3",
        "unit_price": "2.50", "currency": "GBP", "channel": "web",
    }])
    events = validate_events(frame)
    assert events["user_id"].tolist() == [None]
    assert events["quantity"].tolist() == [3]
    assert events["ts"].tolist() == [pd.Timestamp("2011-06-01 09:00", tz="UTC")]


def test_event_takes_naive_timestamps_as_utc():
    record = event("e1", "2011-01-01 10:00")
    record["ts"] = record["ts"].tz_localize(None).to_pydatetime()
    assert Event(**record).ts.isoformat() == "2011-01-01T10:00:00+00:00"


def test_event_refuses_a_timestamp_whose_utc_instant_is_out_of_range():
    """Year 1 at +01:00 is in year 0 in UTC: a validation error naming `ts`, not a crash."""
    with pytest.raises(ValidationError, match="ts"):
        Event(**(event("e1", "2011-01-01") | {"ts": "0001-01-01T00:00:00+01:00"}))


def test_event_rejects_a_lowercase_currency():
    with pytest.raises(ValidationError, match="currency"):
        Event(**(event("e1", "2011-01-01") | {"currency": "gbp"}))


def test_validate_catalog_checks_price_bounds_and_unique_ids():
    below = catalog_row("a", "kitchen", price=0.4)  # min_price is 0.5
    with pytest.raises(InvalidRecordsError, match=r"row 0, field 'record'.*below min_price"):
        validate_catalog(pd.DataFrame([below]))
    with pytest.raises(InvalidRecordsError, match="row 1, field 'item_id': duplicate"):
        validate_catalog(pd.DataFrame([catalog_row("a", "x"), catalog_row("a", "y")]))
    capped = catalog_row("a", "kitchen", price=3.0) | {"max_price": 2.5}
    with pytest.raises(InvalidRecordsError, match="above max_price"):
        validate_catalog(pd.DataFrame([capped]))


def test_inventory_events_need_a_stock_and_no_shopper_fields():
    stock = {"event_id": "s1", "event_type": "inventory", "item_id": "i1",
             "ts": "2011-01-01", "channel": "web", "stock_on_hand": 4}
    assert Event(**stock).session_id is None
    with pytest.raises(ValidationError, match="stock_on_hand is required for inventory"):
        Event(**(stock | {"stock_on_hand": None}))
    with pytest.raises(ValidationError, match="stock_on_hand"):
        Event(**(stock | {"stock_on_hand": -1}))
    with pytest.raises(ValidationError, match="stock_on_hand is only for inventory events"):
        Event(**(event("e1", "2011-01-01") | {"stock_on_hand": 3}))
    with pytest.raises(ValidationError, match="session_id is required for view events"):
        Event(**(event("e1", "2011-01-01", "view") | {"session_id": None}))


def test_events_keep_the_request_id_of_the_recommendations_they_follow():
    rows = [event("e1", "2011-01-01", "view") | {"request_id": "r-1"},
            event("e2", "2011-01-01")]
    events = validate_events(pd.DataFrame(rows))
    assert events["request_id"].tolist() == ["r-1", None]


@pytest.mark.parametrize("blank_or_not", ["\x1d", "\x85", "\u3000", "\x0b", "\ufeff", " \t",
                                          "\u200b", "a"])
def test_published_id_pattern_refuses_exactly_what_the_app_strips_to_nothing(blank_or_not):
    """The schema's pattern for ids matches the stripping pydantic does (Unicode's
    White_Space), so a client checking the schema and the app agree on blank ids."""
    pattern = re.compile(TypeAdapter(Id).json_schema()["pattern"])
    try:
        TypeAdapter(Id).validate_python(blank_or_not)
        accepted = True
    except ValidationError:
        accepted = False

    assert bool(pattern.search(blank_or_not)) == accepted
