"""`apply_events` against batch builds of the same history, on SQLite and the real Redis."""

import pickle
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from features.event_log import EventLog
from features.feature_repo.definitions import RECS_RANKER_SERVICE
from features.ingest import read_catalog
from features.online import ServiceReader, ViewColumns, entity_key, zoned
from features.online_updates import OnlineFeatureWriter, apply_events
from features.schemas import validate_events
from features.settings import Settings
from features.store import apply_definitions, feature_store, materialize
from features.transforms import (
    build_feature_tables,
    item_stats,
    user_item_index,
    user_item_stats,
    user_stats,
)
from tests.conftest import SAMPLE_CATALOG, SAMPLE_EVENTS, event

CATEGORIES = SAMPLE_CATALOG.set_index("item_id")["category"]
USER_FEATURES = [
    "user_frequency", "user_monetary", "user_distinct_items", "user_returns",
    "user_first_purchase_ts", "user_last_purchase_ts", "user_category_names",
    "user_category_shares",
]
PAIR_FEATURES = ["user_item_times_bought", "user_item_units_bought",
                 "user_item_units_returned", "user_item_last_purchase_ts"]
ITEM_PRICES = ["item_price_last", "item_price_min", "item_price_max"]
CUMULATIVE = [*USER_FEATURES, *PAIR_FEATURES, *ITEM_PRICES, "user_recency_days",
              "user_tenure_days", "user_item_days_since_last_purchase"]
"""What serving reads that the stream computes as a batch build does."""
ITEM_WINDOWS = [f"item_{kind}_{days}d" for kind in ("purchases", "buyers")
                for days in (7, 30, 90)]
KEYS = {"user_stats": ["user_id"], "user_item_index": ["user_id"],
        "user_item_stats": ["user_id", "item_id"], "item_stats": ["item_id"]}


def frame(*rows: dict) -> pd.DataFrame:
    """Canonical events of `event()` rows."""
    return validate_events(pd.DataFrame(list(rows)))


def build(settings: Settings, events: pd.DataFrame, catalog: pd.DataFrame, end: datetime):
    """A store on `settings` holding the batch build of `events`, materialized up to `end`."""
    EventLog(settings.events_dir).append(events)
    build_feature_tables(settings.events_dir, catalog, settings.feature_tables_dir)
    store = feature_store(settings)
    apply_definitions(store)
    materialize(store, end)
    return store


def online_rows(store, view_name: str, keys: pd.DataFrame) -> pd.DataFrame:
    """A view's stored rows for `keys` (a column per join key), with their timestamps."""
    view = store.get_feature_view(view_name)
    columns = ViewColumns(view, [field.name for field in view.features])
    protos = [entity_key(row) for row in keys.to_dict("records")]
    found = store._get_provider().online_read(store.config, view, protos, list(columns.names))
    rows = zoned(columns.columns(found), index=keys.set_index([*keys.columns]).index)
    rows["stamp"] = pd.to_datetime([stamp for stamp, _ in found], utc=True)
    return rows


def snapshot(store, pairs: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Every view's stored rows for the users, items and pairs of `pairs`."""
    return {view: online_rows(store, view, pairs[keys].drop_duplicates())
            for view, keys in KEYS.items()}


def served(store, pairs: pd.DataFrame, as_of: datetime) -> pd.DataFrame:
    """What serving reads for the (user, item) rows of `pairs`."""
    reader = ServiceReader(store, RECS_RANKER_SERVICE)
    return reader.read({"user_id": pairs["user_id"].tolist(),
                        "item_id": pairs["item_id"].tolist()}, {"as_of": as_of})


def comparable(values) -> list | None:
    """A stored array as a list that compares NaN equal to NaN (as None)."""
    if values is None:
        return None
    return [None if isinstance(v, float) and np.isnan(v) else v for v in values]


def assert_same(ours: pd.DataFrame, theirs: pd.DataFrame, names=None) -> None:
    for name in names or [c for c in theirs.columns if c != "stamp"]:
        mine, expected = ours[name], theirs[name]
        if mine.dtype == object:
            assert list(map(comparable, mine)) == list(map(comparable, expected)), name
        elif pd.api.types.is_datetime64_any_dtype(mine):
            assert mine.isna().tolist() == expected.isna().tolist(), name
            assert (mine.dropna() == expected.dropna()).all(), name
        else:
            np.testing.assert_allclose(mine.to_numpy(float), expected.to_numpy(float),
                                       err_msg=name)


def all_pairs(events: pd.DataFrame) -> pd.DataFrame:
    """Every (user, item) pair of the events (guests' items with an unknown user), plus an
    unknown user and an unknown item."""
    pairs = events[["user_id", "item_id"]].fillna({"user_id": "nobody"}).drop_duplicates()
    extra = pd.DataFrame({"user_id": ["nobody", pairs["user_id"].iloc[0]],
                          "item_id": [pairs["item_id"].iloc[0], "no-such-item"]})
    return pd.concat([pairs, extra], ignore_index=True).drop_duplicates(ignore_index=True)


def latest(table: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The newest row of each entity of a batch table: what materialization loads."""
    rows = table.sort_values("event_timestamp").drop_duplicates(keys, keep="last")
    return rows.set_index(keys)


def stream_then_rebuild(settings: Settings, events: pd.DataFrame, catalog: pd.DataFrame,
                        split: str, end: datetime):
    """Build and materialize the events before `split`, stream the rest a day per batch and
    snapshot what serving reads of the streamed events' users and items; then build the whole
    history, materialize it into the same store and snapshot again. Returns both snapshots
    and the latest rows of the whole build's item table."""
    day = pd.Timestamp(split, tz="UTC")
    before, after = events[events["ts"] < day], events[events["ts"] >= day]
    store = build(settings, before, catalog, day.to_pydatetime())
    categories = catalog.set_index("item_id")["category"]
    for _, batch in after.groupby(after["ts"].dt.floor("D")):
        apply_events(store, batch, categories)
    pairs = all_pairs(after)
    streamed = served(store, pairs, end), snapshot(store, pairs)

    EventLog(settings.events_dir).append(after)
    build_feature_tables(settings.events_dir, catalog, settings.feature_tables_dir)
    materialize(store, end)
    rebuilt = served(store, pairs, end), snapshot(store, pairs)
    items = latest(pd.read_parquet(settings.feature_tables_dir / "item_stats.parquet"),
                   ["item_id"])
    return streamed, rebuilt, items


def assert_streamed_equals_rebuilt(streamed, rebuilt, items: pd.DataFrame) -> None:
    (ours, our_rows), (theirs, their_rows) = streamed, rebuilt
    assert_same(ours, theirs, CUMULATIVE)
    for view in ("user_stats", "user_item_index", "user_item_stats"):
        assert_same(our_rows[view], their_rows[view])
    assert_same(our_rows["item_stats"], their_rows["item_stats"], ITEM_PRICES)
    # The whole build's rows replaced every streamed item row: its decayed windows show.
    stored = their_rows["item_stats"].dropna(subset=["item_price_last"])
    assert_same(stored, items.loc[stored.index.get_level_values("item_id")], ITEM_WINDOWS)
    assert (our_rows["item_stats"].loc[stored.index, "item_purchases_7d"]
            > stored["item_purchases_7d"]).any()


@pytest.fixture
def sample() -> pd.DataFrame:
    return validate_events(pd.DataFrame(SAMPLE_EVENTS))


def test_streamed_sample_equals_a_batch_build_of_the_whole_history(store_settings, sample):
    """Jan 1 built; Jan 3 (u1's second order), the Jan 4 view, u2's Jan 5 return and the
    guest's Jan 20 purchase streamed."""
    end = datetime(2011, 2, 1, tzinfo=UTC)
    streamed, rebuilt, items = stream_then_rebuild(store_settings, sample, SAMPLE_CATALOG,
                                                   "2011-01-03", end)

    assert_streamed_equals_rebuilt(streamed, rebuilt, items)
    ours = streamed[0].set_index(["user_id", "item_id"])
    assert ours.loc[("u1", "i1"), "user_item_times_bought"] == 2
    assert ours.loc[("u1", "i2"), "user_item_units_bought"] == 3
    assert ours.loc[("u1", "i1"), "user_frequency"] == 2
    assert ours.loc[("u1", "i1"), "user_category_shares"] == [0.5, 0.5]
    assert ours.loc[("u2", "i1"), "user_item_units_returned"] == 1
    assert ours.loc[("u2", "i1"), "user_monetary"] == 0.0
    assert ours.loc[("nobody", "i1"), "item_price_last"] == 2.0  # the guest's, Jan 20


def test_streamed_online_retail_equals_a_batch_build(store_settings, online_retail_four_months):
    """The real export's first ten days, the last two (~5,600 events) streamed a day a
    batch."""
    data = Settings(data_dir=online_retail_four_months)
    end = datetime(2010, 12, 11, tzinfo=UTC)
    events = EventLog(data.events_dir).read(end=pd.Timestamp(end))

    streamed, rebuilt, items = stream_then_rebuild(
        store_settings, events, read_catalog(data.catalog_path), "2010-12-09", end)

    assert_streamed_equals_rebuilt(streamed, rebuilt, items)
    users = streamed[1]["user_stats"]
    assert (users["user_frequency"] > 1).sum() > 20  # users with orders on both sides
    assert (users["user_returns"] > 0).sum() > 10


def sample_store(settings: Settings, end: str):
    """The sample events before `end`, built and materialized up to `end`."""
    events = validate_events(pd.DataFrame(SAMPLE_EVENTS))
    day = pd.Timestamp(end, tz="UTC")
    return build(settings, events[events["ts"] < day], SAMPLE_CATALOG, day.to_pydatetime())


def test_rematerializing_older_batch_rows_keeps_streamed_rows_on_redis(store_settings, sample):
    store = sample_store(store_settings, "2011-01-03")
    apply_events(store, sample[sample["ts"] >= pd.Timestamp("2011-01-03", tz="UTC")],
                 CATEGORIES)
    pairs = all_pairs(sample)
    streamed = snapshot(store, pairs)

    materialize(store, datetime(2011, 1, 3, tzinfo=UTC))  # the Jan 1 rows again

    again = snapshot(store, pairs)
    u1 = again["user_stats"].loc["u1"]
    if store_settings.redis_url:  # Redis skips rows older than the stored ones
        for view in KEYS:
            assert_same(again[view], streamed[view], [*again[view].columns])
        assert u1["user_frequency"] == 2
    else:  # SQLite takes the rows written last: the stream's are lost until rebuilt
        assert u1["user_frequency"] == 1


def test_a_late_event_is_applied_after_the_stored_rows(store_settings, sample):
    """An event older than its entities' stored rows: Redis would skip a row dated by it."""
    store = sample_store(store_settings, "2011-01-12")
    late = event("late", "2011-01-02 08:00", user_id="u1", item_id="i2", quantity=2,
                 unit_price=5.0, session_id="s-late")
    later = event("later", "2011-01-12 10:00", user_id="u2", item_id="i2", unit_price=0.5)

    written = apply_events(store, frame(late, later), CATEGORIES)

    assert (written.users, written.items, written.pairs) == (2, 1, 2)

    rows = snapshot(store, pd.DataFrame({"user_id": ["u1", "u2"], "item_id": ["i2", "i2"]}))
    users, pairs, items = rows["user_stats"], rows["user_item_stats"], rows["item_stats"]
    assert pairs.loc[("u1", "i2"), "user_item_times_bought"] == 2
    assert users.loc["u1", "user_monetary"] == 21.0  # 11 + 2 x 5
    assert users.loc["u1", "user_last_purchase_ts"] == pd.Timestamp("2011-01-03 10:00",
                                                                     tz="UTC")
    assert items.loc["i2", "item_price_last"] == 0.5
    assert items.loc["i2", "item_price_max"] == 5.0
    # u1's stored rows are dated Jan 4 (the end of Jan 3): 1 us later (SQLite keeps whole
    # seconds). u2's: its event.
    after_stored = pd.Timestamp("2011-01-04 00:00:00.000001", tz="UTC")
    if not store_settings.redis_url:
        after_stored = after_stored.floor("s")
    assert users.loc["u1", "stamp"] == after_stored
    assert rows["user_item_index"].loc["u1", "stamp"] == users.loc["u1", "stamp"]
    assert users.loc["u2", "stamp"] == pd.Timestamp("2011-01-12 10:00", tz="UTC")
    assert items.loc["i2", "stamp"] == pd.Timestamp("2011-01-12 10:00", tz="UTC")


def test_item_windows_grow_as_the_batch_counts_them_until_a_purchase_leaves(store_settings):
    """u1 bought i1 on Jan 1, u2 on Jan 20; on Jan 21 u1 is back (new to the 7-day window
    only), a guest buys twice in one session and new user u3 once: no purchase leaves a
    window, the streamed counts equal the batch's. On Jan 27 u2 buys again, 7 days after
    the last time, as Jan 20 leaves the 7-day window: u2 stays one of its buyers, but its
    purchases keep Jan 20 until the next build."""
    history = frame(event("a", "2011-01-01 09:00", user_id="u1"),
                    event("b", "2011-01-20 09:00", user_id="u2"))
    jan_21 = frame(event("c", "2011-01-21 09:00", user_id="u1"),
                   event("d", "2011-01-21 10:00", user_id=None, session_id="g"),
                   event("e", "2011-01-21 10:05", user_id=None, session_id="g"),
                   event("f", "2011-01-21 11:00", user_id="u3"))
    jan_27 = frame(event("g", "2011-01-27 09:00", user_id="u2"))
    store = build(store_settings, history, SAMPLE_CATALOG, datetime(2011, 1, 21, tzinfo=UTC))
    windows = ["item_purchases_7d", "item_buyers_7d", "item_purchases_30d", "item_buyers_30d",
               "item_buyers_90d", "item_trend_7d_30d"]
    i1 = pd.DataFrame({"item_id": ["i1"]})

    apply_events(store, jan_21, CATEGORIES)

    streamed = online_rows(store, "item_stats", i1)
    batch = latest(item_stats(pd.concat([history, jan_21], ignore_index=True)), ["item_id"])
    assert streamed[windows].iloc[0].tolist() == pytest.approx([5, 4, 6, 4, 4, 18 / 7])
    assert_same(streamed, batch, windows)

    apply_events(store, jan_27, CATEGORIES)

    streamed = online_rows(store, "item_stats", i1)
    batch = latest(item_stats(pd.concat([history, jan_21, jan_27], ignore_index=True)),
                   ["item_id"])
    assert streamed[windows[:2]].iloc[0].tolist() == [6, 4]
    assert batch[windows[:2]].iloc[0].tolist() == [5, 4]


def test_user_frequency_counts_a_session_new_to_the_batch_after_the_last_purchase(
        store_settings):
    """u1's order s1 was built on Jan 1 09:00. Batches: s1 again later (counted again: an
    order continuing across batches is over-counted), order s2 at the very instant of the
    stored last purchase (not counted), then two orders of one batch (counted once each)."""
    first = event("a", "2011-01-01 09:00", session_id="s1")
    batches = [
        [event("b", "2011-01-02 10:00", session_id="s1", item_id="i2")],
        [event("c", "2011-01-02 10:00", session_id="s2")],
        [event("d", "2011-01-03 09:00", session_id="s3"),
         event("e", "2011-01-03 09:00", session_id="s3", item_id="i2"),
         event("f", "2011-01-03 12:00", session_id="s4")],
    ]
    store = build(store_settings, frame(first), SAMPLE_CATALOG,
                  datetime(2011, 1, 2, tzinfo=UTC))
    seen = [first]
    streamed, batch = [], []
    for rows in batches:
        apply_events(store, frame(*rows), CATEGORIES)
        seen += rows
        u1 = online_rows(store, "user_stats", pd.DataFrame({"user_id": ["u1"]}))
        streamed.append(u1["user_frequency"].iloc[0])
        built = latest(user_stats(frame(*seen), SAMPLE_CATALOG), ["user_id"])
        batch.append(built["user_frequency"].iloc[0])

    assert streamed == [2, 2, 4]
    assert batch == [1, 2, 4]


def test_guest_events_change_item_features_only(store_settings, sample):
    store = sample_store(store_settings, "2011-01-12")
    pairs = all_pairs(sample)
    before = snapshot(store, pairs)
    guests = frame(event("g1", "2011-01-12 10:00", user_id=None, unit_price=9.0),
                   event("g2", "2011-01-12 11:00", "return", user_id=None, item_id="i2"))

    written = apply_events(store, guests, CATEGORIES)

    assert (written.users, written.items, written.pairs) == (0, 1, 0)
    after = snapshot(store, pairs)
    for view in ("user_stats", "user_item_index", "user_item_stats"):
        assert_same(after[view], before[view], [*before[view].columns])
    assert_same(after["item_stats"].loc[["i2"]], before["item_stats"].loc[["i2"]],
                [*before["item_stats"].columns])
    i1 = after["item_stats"].loc["i1"]
    assert (i1["item_purchases_30d"], i1["item_buyers_30d"]) == (4, 3)
    assert (i1["item_price_last"], i1["item_price_max"]) == (9.0, 9.0)


def test_a_user_new_to_the_store_gets_the_rows_a_batch_build_gives(store_settings, sample):
    """u9 buys i1 and i3 (not in the catalog: category "unknown") and returns i2 (bought
    before the stream); the batch build of everything gives the same rows."""
    store = sample_store(store_settings, "2011-01-12")
    new = frame(event("n1", "2011-01-12 10:00", user_id="u9", item_id="i1", quantity=3),
                event("n2", "2011-01-12 10:00", user_id="u9", item_id="i3", unit_price=7.5),
                event("n3", "2011-01-13 09:00", "return", user_id="u9", item_id="i2"))

    written = apply_events(store, new, CATEGORIES)

    assert (written.users, written.items, written.pairs) == (1, 2, 3)
    everything = pd.concat([sample, new], ignore_index=True)
    u9 = pd.DataFrame({"user_id": ["u9"]})
    users = online_rows(store, "user_stats", u9)
    assert users["user_category_names"].iloc[0] == ["kitchen", "unknown"]
    assert users["user_category_shares"].iloc[0] == [0.75, 0.25]
    assert_same(users, latest(user_stats(everything, SAMPLE_CATALOG), ["user_id"]).loc[["u9"]],
                USER_FEATURES)
    index = online_rows(store, "user_item_index", u9)
    assert index["item_ids"].iloc[0] == ["i1", "i2", "i3"]
    built = latest(user_item_index(user_item_stats(everything)), ["user_id"]).loc[["u9"]]
    assert_same(index, built, ["item_ids", *PAIR_FEATURES])
    i3 = online_rows(store, "item_stats", pd.DataFrame({"item_id": ["i3"]})).iloc[0]
    assert (i3["item_purchases_90d"], i3["item_buyers_90d"], i3["item_price_min"]) == (1, 1, 7.5)
    assert np.isnan(i3["item_rebuy_rate_30d"]) and np.isnan(i3["item_price_mean_30d"])


def test_events_that_touch_no_feature_and_an_empty_batch_change_nothing(store_settings,
                                                                         sample):
    store = sample_store(store_settings, "2011-01-12")
    pairs = all_pairs(sample)
    before = snapshot(store, pairs)
    others = pd.DataFrame([
        event("v", "2011-01-12 10:00", "view", unit_price=None),
        event("c", "2011-01-12 10:01", "add_to_cart", unit_price=None),
        {**event("s", "2011-01-12 10:02", user_id=None, unit_price=None, session_id="x"),
         "event_type": "inventory", "session_id": None, "currency": None,
         "stock_on_hand": 4},
    ])

    assert apply_events(store, validate_events(others), CATEGORIES).views == {}
    assert apply_events(store, validate_events(others).iloc[:0], CATEGORIES).views == {}

    after = snapshot(store, pairs)
    for view in KEYS:
        assert_same(after[view], before[view], [*before[view].columns])


def test_a_plan_writes_nothing_until_written_and_writing_it_again_changes_nothing(
        store_settings, sample):
    """What the stream consumer relies on: it journals the plan (pickled), and a consumer
    finishing a stopped one's batch writes the plan again."""
    store = sample_store(store_settings, "2011-01-03")
    writer = OnlineFeatureWriter(store, CATEGORIES)
    pairs = all_pairs(sample)
    before = snapshot(store, pairs)

    rows = writer.plan(sample[sample["ts"] >= pd.Timestamp("2011-01-03", tz="UTC")])

    unwritten = snapshot(store, pairs)
    for view in KEYS:
        assert_same(unwritten[view], before[view], [*before[view].columns])
    writer.write(rows)
    once = snapshot(store, pairs)
    writer.write(pickle.loads(pickle.dumps(rows)))
    twice = snapshot(store, pairs)
    for view in KEYS:
        assert_same(twice[view], once[view], [*once[view].columns])
    assert once["user_stats"].loc["u1", "user_frequency"] == 2
    assert (rows.users, rows.items, rows.pairs) == (2, 2, 3)
