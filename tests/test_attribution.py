"""Attribution on hand-built served responses and events with known answers."""

from datetime import UTC, datetime, timedelta

import pandas as pd
import pyarrow as pa
import pytest

from features.errors import InputError
from features.schemas import EVENT_ARROW_SCHEMA, validate_events
from features.served_log import SERVED_ARROW_SCHEMA
from tests.conftest import event
from training.recs.attribution import attribution

SINCE = datetime(2024, 3, 1, tzinfo=UTC)
# request id: (time, model version, fallback, [(item, source), ...] best first)
RESPONSES = {
    "r0": ("2024-02-28 10:00", "7", False, [("A", "als")]),
    "r1": ("2024-03-01 10:00", "7", False, [("A", "als"), ("B", "covisit"), ("C", "popular")]),
    "r2": ("2024-03-01 12:00", "7", True, [("A", "popular"), ("D", "popular")]),
    "r3": ("2024-03-02 09:00", "8", False, [("A", "als"), ("E", "repurchase")]),
    "r4": ("2024-03-03 09:00", None, True, [("D", "popular")]),
}


def served_frame(responses: dict = RESPONSES) -> pd.DataFrame:
    """The responses as `ServedLog.read` returns them."""
    rows = [{"request_id": request_id, "ts": pd.Timestamp(ts, tz="UTC"), "user_id": "u1",
             "model_version": version, "fallback": fallback, "position": position,
             "item_id": item, "source": source, "score": 1.0 / position}
            for request_id, (ts, version, fallback, items) in responses.items()
            for position, (item, source) in enumerate(items, start=1)]
    return pa.Table.from_pylist(rows, schema=SERVED_ARROW_SCHEMA).to_pandas()


def follows(event_id: str, ts: str, kind: str, item: str, request_id: str | None,
            quantity: int = 1, price: float = 3.0, currency: str = "GBP") -> dict:
    row = {**event(event_id, ts, kind, item_id=item, quantity=quantity,
                   unit_price=price if kind in ("purchase", "return") else None),
           "currency": currency}
    return {**row, "request_id": request_id} if request_id else row


ATTRIBUTED = [
    follows("v1", "2024-03-01 10:05", "view", "A", "r1"),
    follows("v1b", "2024-03-01 10:06", "view", "A", "r1"),  # the same impression again
    follows("p1", "2024-03-01 11:00", "purchase", "A", "r1", quantity=2),
    follows("p1b", "2024-03-02 11:00", "purchase", "A", "r1", quantity=1),
    follows("v2", "2024-03-01 12:01", "view", "D", "r2"),
    follows("v4", "2024-03-03 09:00", "view", "D", "r4"),  # at the response's very time
]
NOT_ATTRIBUTED = [
    follows("late", "2024-03-08 10:00:01", "purchase", "B", "r1"),  # 7 days + 1 s after
    follows("early", "2024-03-02 08:00", "purchase", "E", "r3"),  # before its response
    follows("other-item", "2024-03-01 10:30", "purchase", "Z", "r1"),  # not served in r1
    follows("no-request", "2024-03-01 10:30", "purchase", "A", None),
    follows("unknown", "2024-03-01 10:30", "view", "A", "r-unknown"),
    follows("before-since", "2024-02-28 10:30", "purchase", "A", "r0"),
    follows("returned", "2024-03-02 12:00", "return", "A", "r1"),
]
COUNTS = ["responses", "impressions", "clicks", "purchases", "units", "revenue"]


def events_frame(rows: list[dict]) -> pd.DataFrame:
    return validate_events(pd.DataFrame(rows))


def table(report: pd.DataFrame) -> list[tuple]:
    return [tuple(row) for row in report[["model_version", "fallback", "source", *COUNTS]]
            .itertuples(index=False, name=None)]


def test_clicks_and_purchases_go_to_the_version_and_source_that_served_them():
    report = attribution(served_frame(), events_frame(ATTRIBUTED + NOT_ATTRIBUTED), SINCE)

    # Personalised groups by version, then fallback ones; sources in candidate order.
    assert table(report) == [
        ("7", False, "covisit", 1, 1, 0, 0, 0, 0.0),
        ("7", False, "als", 1, 1, 1, 1, 3, 9.0),
        ("7", False, "popular", 1, 1, 0, 0, 0, 0.0),
        ("7", False, "total", 1, 3, 1, 1, 3, 9.0),
        ("8", False, "repurchase", 1, 1, 0, 0, 0, 0.0),
        ("8", False, "als", 1, 1, 0, 0, 0, 0.0),
        ("8", False, "total", 1, 2, 0, 0, 0, 0.0),
        (None, True, "popular", 1, 1, 1, 0, 0, 0.0),
        (None, True, "total", 1, 1, 1, 0, 0, 0.0),
        ("7", True, "popular", 1, 2, 1, 0, 0, 0.0),
        ("7", True, "total", 1, 2, 1, 0, 0, 0.0),
    ]
    total = report[(report["model_version"] == "7") & ~report["fallback"]
                   & (report["source"] == "total")].iloc[0]
    assert total["click_rate"] == pytest.approx(1 / 3)
    assert total["purchase_rate"] == pytest.approx(1 / 3)
    assert set(report["currency"]) == {"GBP"}


def test_the_unattributed_events_alone_count_nothing():
    report = attribution(served_frame(), events_frame(NOT_ATTRIBUTED), SINCE)
    assert (report[["clicks", "purchases", "units", "revenue"]] == 0).all().all()
    assert report["currency"].isna().all()


def test_a_longer_window_takes_in_the_late_purchase():
    report = attribution(served_frame(), events_frame(NOT_ATTRIBUTED), SINCE,
                         window=timedelta(days=8))
    covisit = report[report["source"] == "covisit"].iloc[0]
    assert (covisit["purchases"], covisit["units"], covisit["revenue"]) == (1, 1, 3.0)
    assert report["purchases"].sum() == 2  # covisit and its version's total


def test_since_and_until_choose_the_responses_by_their_time():
    events = events_frame(ATTRIBUTED + NOT_ATTRIBUTED)
    until = attribution(served_frame(), events, SINCE, until=datetime(2024, 3, 2, tzinfo=UTC))
    assert set(zip(until["model_version"], until["fallback"], strict=True)) == {
        ("7", False), ("7", True)}

    earlier = attribution(served_frame(), events, datetime(2024, 2, 28, tzinfo=UTC))
    als = earlier[(earlier["model_version"] == "7") & (earlier["source"] == "als")].iloc[0]
    assert (als["responses"], als["impressions"], als["purchases"], als["units"]) == (2, 2, 2, 4)


def test_no_responses_in_the_period_gives_an_empty_report():
    report = attribution(served_frame(), events_frame(ATTRIBUTED), datetime(2024, 4, 1,
                                                                            tzinfo=UTC))
    assert report.empty


def test_purchases_in_several_currencies_are_refused():
    events = events_frame([*ATTRIBUTED, follows("eur", "2024-03-01 10:10", "purchase", "B",
                                                "r1", currency="EUR")])
    with pytest.raises(InputError, match=r"2 currencies \(EUR, GBP\)"):
        attribution(served_frame(), events, SINCE)


def test_a_source_unknown_to_the_candidates_module_is_listed_before_the_total():
    served = served_frame({"r1": ("2024-03-01 10:00", "9", False,
                                  [("A", "trending"), ("B", "als")])})
    no_events = EVENT_ARROW_SCHEMA.empty_table().to_pandas()
    report = attribution(served, no_events, SINCE)
    assert report["source"].tolist() == ["als", "trending", "total"]
