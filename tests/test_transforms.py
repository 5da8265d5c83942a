import pandas as pd
import pytest

from features.schemas import validate_events
from features.transforms import item_stats, user_item_index, user_item_stats, user_stats
from tests.conftest import SAMPLE_CATALOG, SAMPLE_EVENTS, event


@pytest.fixture(scope="module")
def events() -> pd.DataFrame:
    return validate_events(pd.DataFrame(SAMPLE_EVENTS))


def as_of(table: pd.DataFrame, when: str, **keys) -> pd.Series:
    """The row a point-in-time join at `when` picks: the newest not after it."""
    rows = table
    for key, value in keys.items():
        rows = rows[rows[key] == value]
    rows = rows[rows["event_timestamp"] <= pd.Timestamp(when, tz="UTC")]
    return rows.sort_values("event_timestamp").iloc[-1]


@pytest.mark.parametrize(
    ("when", "purchases_7d", "buyers_7d", "purchases_30d", "buyers_30d", "price_last"),
    [
        ("2011-01-02", 2, 2, 2, 2, 3.0),
        ("2011-01-04", 3, 2, 3, 2, 4.0),
        ("2011-01-09", 1, 1, 3, 2, 4.0),  # Jan 1 has left the 7-day window
        ("2011-01-11", 0, 0, 3, 2, 4.0),  # so has Jan 3
        ("2011-01-21", 1, 1, 4, 3, 2.0),  # a guest counts as one more buyer
    ],
)
def test_item_stats_counts_purchases_and_distinct_buyers_in_windows(
    events, when, purchases_7d, buyers_7d, purchases_30d, buyers_30d, price_last
):
    row = as_of(item_stats(events), when, item_id="i1")
    assert row["item_purchases_7d"] == purchases_7d
    assert row["item_buyers_7d"] == buyers_7d
    assert row["item_purchases_30d"] == purchases_30d
    assert row["item_buyers_30d"] == buyers_30d
    assert row["item_price_last"] == price_last


def test_item_stats_price_statistics_and_trend(events):
    table = item_stats(events)
    first = as_of(table, "2011-01-02", item_id="i1")
    assert first["item_price_mean_30d"] == pytest.approx(7 / 3)  # (2 x 2.0 + 1 x 3.0) / 3
    assert (first["item_price_min"], first["item_price_max"]) == (2.0, 3.0)
    later = as_of(table, "2011-01-21", item_id="i1")
    assert (later["item_price_min"], later["item_price_max"]) == (2.0, 4.0)
    assert later["item_trend_7d_30d"] == pytest.approx((1 / 7 - 4 / 30) / (4 / 30))


def test_item_rebuy_rate_is_the_share_of_earlier_buyers_who_came_back():
    table = item_stats(validate_events(pd.DataFrame([
        event("1", "2011-01-01", user_id="u1", item_id="x", session_id="o1"),
        event("2", "2011-01-02", user_id="u2", item_id="x", session_id="o2"),
        event("3", "2011-01-05", user_id="u3", item_id="x", session_id="o3"),
        event("4", "2011-02-10", user_id="u1", item_id="x", session_id="o4"),  # comes back
        event("5", "2011-02-11", user_id=None, item_id="x", session_id="o5"),  # a guest
        event("6", "2011-02-12", user_id="u4", item_id="x", session_id="o6"),  # a new buyer
        event("7", "2011-03-20", user_id="u5", item_id="y", session_id="o7"),  # the log goes on
    ])))
    # No buyer from before a 30-day window yet: the prior, 0.5 / 5.
    assert as_of(table, "2011-01-20", item_id="x")["item_rebuy_rate_30d"] == 0.1
    # Window Jan 16 - Feb 14: u1 of the three earlier buyers came back.
    assert as_of(table, "2011-02-15", item_id="x")["item_rebuy_rate_30d"] == (1 + 0.5) / (3 + 5)
    # Window Feb 11 - Mar 12: u1's return has left it; u4 is new, the guest never counts.
    assert as_of(table, "2011-03-13", item_id="x")["item_rebuy_rate_30d"] == 0.5 / (3 + 5)


def test_item_stats_keeps_only_rows_where_a_value_changes(events):
    rows = item_stats(events).query("item_id == 'i1'")
    stamps = set(rows["event_timestamp"].dt.strftime("%m-%d"))
    assert {"01-02", "01-04", "01-09", "01-11", "01-21"} <= stamps
    assert not stamps & {"01-12", "01-15", "01-19"}  # nothing moves between Jan 11 and Jan 20
    values = rows.drop(columns=["item_id", "event_timestamp"])
    assert not values.eq(values.shift()).all(axis=1).any()


def test_user_stats_accumulates_orders_spend_and_category_shares(events):
    table = user_stats(events, SAMPLE_CATALOG)
    u1 = as_of(table, "2011-01-04", user_id="u1")
    assert u1["user_frequency"] == 2
    assert u1["user_distinct_items"] == 2
    assert u1["user_monetary"] == pytest.approx(2 * 2.0 + 4.0 + 3 * 1.0)
    assert list(u1["user_category_names"]) == ["kitchen", "toys"]
    assert list(u1["user_category_shares"]) == [0.5, 0.5]
    assert u1["user_first_purchase_ts"] == pd.Timestamp("2011-01-01 09:00", tz="UTC")
    assert u1["user_last_purchase_ts"] == pd.Timestamp("2011-01-03 10:00", tz="UTC")
    u2 = as_of(table, "2011-01-06", user_id="u2")
    assert (u2["user_monetary"], u2["user_returns"], u2["user_frequency"]) == (0.0, 1, 1)
    assert set(table["user_id"]) == {"u1", "u2"}  # guests have no user features


def test_user_item_stats_accumulates_each_pair(events):
    table = user_item_stats(events)
    first = as_of(table, "2011-01-02", user_id="u1", item_id="i1")
    assert (first["user_item_times_bought"], first["user_item_units_bought"]) == (1, 2)
    later = as_of(table, "2011-01-04", user_id="u1", item_id="i1")
    assert (later["user_item_times_bought"], later["user_item_units_bought"]) == (2, 3)
    assert later["user_item_last_purchase_ts"] == pd.Timestamp("2011-01-03 10:00", tz="UTC")
    returned = as_of(table, "2011-01-06", user_id="u2", item_id="i1")
    assert returned["user_item_units_returned"] == 1
    assert returned["user_item_last_purchase_ts"] == pd.Timestamp("2011-01-01 15:00", tz="UTC")


def test_user_item_index_holds_each_users_pairs_as_of_each_active_day(events):
    pairs = user_item_stats(events)
    index = user_item_index(pairs)

    early = as_of(index, "2011-01-02", user_id="u1")
    assert early["item_ids"] == ["i1"] and early["user_item_times_bought"] == [1]
    later = as_of(index, "2011-01-04", user_id="u1")
    assert later["item_ids"] == ["i1", "i2"]
    assert later["user_item_units_bought"] == [3, 3]
    assert later["user_item_last_purchase_ts"] == [
        pd.Timestamp("2011-01-03 10:00", tz="UTC").timestamp()] * 2
    # Every (user, day) row equals the pair table as of that day, pair by pair.
    for row in index.itertuples(index=False):
        for position, item in enumerate(row.item_ids):
            expected = as_of(pairs, str(row.event_timestamp), user_id=row.user_id, item_id=item)
            assert row.user_item_units_returned[position] == expected["user_item_units_returned"]
            assert row.user_item_times_bought[position] == expected["user_item_times_bought"]
        known = pairs[(pairs["user_id"] == row.user_id)
                      & (pairs["event_timestamp"] <= row.event_timestamp)]
        assert sorted(row.item_ids) == sorted(known["item_id"].unique())


def test_feature_rows_are_stamped_after_the_day_they_summarise(events):
    for table in (item_stats(events), user_stats(events, SAMPLE_CATALOG), user_item_stats(events)):
        stamps = table["event_timestamp"]
        assert (stamps == stamps.dt.normalize()).all()
        assert stamps.min() == pd.Timestamp("2011-01-02", tz="UTC")
