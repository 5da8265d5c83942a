"""`ServiceReader` against Feast's own `get_online_features`, on SQLite and the real Redis."""

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from features.feature_repo.definitions import RECS_RANKER_SERVICE, recency
from features.online import ServiceReader
from features.store import feature_store, materializations, materialize
from tests.test_feature_store import prepare

SERVICE = RECS_RANKER_SERVICE
AS_OF = datetime(2011, 1, 10, tzinfo=UTC)
# Known pairs, a pair never bought, an unknown item, an unknown user; u1 twice on purpose.
USERS = ["u1", "u1", "u1", "u2", "nobody", "u1"]
ITEMS = ["i1", "i2", "unknown", "i2", "i1", "i1"]


def feast_frame(store, users, items) -> pd.DataFrame:
    rows = [{"user_id": u, "item_id": i, "as_of": AS_OF} for u, i in zip(users, items, strict=True)]
    values = store.get_online_features(features=store.get_feature_service(SERVICE),
                                       entity_rows=rows).to_dict()
    return pd.DataFrame(values)


def assert_same_column(ours: pd.Series, theirs: pd.Series, name: str) -> None:
    if pd.api.types.is_datetime64_any_dtype(ours):
        expected = pd.to_datetime(theirs, utc=True)
        assert ours.isna().tolist() == expected.isna().tolist(), name
        assert (ours.dropna() == expected.dropna()).all(), name
    elif ours.dtype == object:
        assert [None if v is None else list(v) for v in ours] == [
            None if v is None else list(v) for v in theirs], name
    else:
        np.testing.assert_allclose(ours.to_numpy(), theirs.astype(float).to_numpy(),
                                   err_msg=name)


@pytest.mark.parametrize("end", [datetime(2011, 1, 2, 12, tzinfo=UTC),
                                 datetime(2011, 1, 12, tzinfo=UTC)])
def test_reader_returns_what_get_online_features_returns(store_settings, end):
    store = prepare(store_settings, end=end)
    theirs = feast_frame(store, USERS, ITEMS)

    reader = ServiceReader(store, SERVICE)
    ours = reader.read({"user_id": USERS, "item_id": ITEMS}, {"as_of": AS_OF})

    assert list(reader.indexes) == ["user_item_stats"]  # pairs come from the per-user index
    assert set(ours.columns) == set(theirs.columns)
    for name in theirs.columns:
        assert_same_column(ours[name], theirs[name], name)
    if end.day == 2:  # only Jan 1 is materialized: u1 bought i1 once, i2 not yet
        assert ours["user_item_times_bought"][0] == 1.0
        assert np.isnan(ours["user_item_times_bought"][1])
        return
    # The fixture's values, not only agreement: u1 x i1 bought twice, unknown rows missing.
    assert ours["user_item_times_bought"].tolist()[:2] == [2.0, 1.0]
    assert ours["user_frequency"].isna().tolist() == [False] * 4 + [True, False]
    assert ours["user_recency_days"][0] == pytest.approx(6 + 14 / 24)


def test_reader_broadcasts_one_user_and_skips_views(store_settings):
    store = prepare(store_settings, end=datetime(2011, 1, 12, tzinfo=UTC))
    reader = ServiceReader(store, SERVICE)

    pairs = reader.read({"user_id": "u1", "item_id": ["i1", "i2"]}, {"as_of": AS_OF},
                        skip=("item_stats",))
    items = reader.read({"item_id": ["i2", "i1"]}, skip=("user_stats", "user_item_stats"))

    assert pairs["user_id"].tolist() == ["u1", "u1"]
    assert "item_purchases_30d" not in pairs and "user_recency_days" in pairs
    assert pairs["user_item_times_bought"].tolist() == [2.0, 1.0]
    # Without the user views the recency view has no inputs: it is left out too.
    assert list(items.columns) == ["item_id", *reader.views["item_stats"].names]
    assert items["item_purchases_30d"].tolist() == [1.0, 3.0]


def test_materializations_seen_by_another_store_object(store_settings):
    """The serving process watches the registry for new materializations of item features."""
    store = prepare(store_settings, end=datetime(2011, 1, 2, tzinfo=UTC))
    watcher = feature_store(store_settings)
    before = materializations(watcher, "item_stats")

    materialize(store, datetime(2011, 2, 1, tzinfo=UTC))

    after = materializations(watcher, "item_stats")
    assert len(after) == len(before) + 1
    assert after[-1][1] == datetime(2011, 2, 1, tzinfo=UTC)


class CountingReader(ServiceReader):
    """A reader that records the table of each `online_read` it makes."""

    def __init__(self, store, service):
        super().__init__(store, service)
        self.reads: list[str] = []

    def online_read(self, table, keys, names):
        self.reads.append(table.name)
        return super().online_read(table, keys, names)


def test_entity_rows_read_once_and_reused_by_read_columns(store_settings):
    """Serving looks at a user's history before it knows the candidates, then reads their
    features: the user's rows are read once for both."""
    store = prepare(store_settings, end=datetime(2011, 1, 12, tzinfo=UTC))
    reader = CountingReader(store, SERVICE)
    entities = {"user_id": "u1", "item_id": ["i2", "unknown", "i1"]}

    user = reader.entity({"user_id": "u1"})
    stats = user.values("user_stats", ["user_frequency", "user_last_purchase_ts"])
    index = user.values("user_item_stats")
    reused = reader.read_columns(entities, {"as_of": AS_OF}, skip=("item_stats",), entity=user)
    once = list(reader.reads)
    plain = reader.read_columns(entities, {"as_of": AS_OF}, skip=("item_stats",))

    assert once == ["user_stats", "user_item_index"]
    assert reader.reads[2:] == once  # without the rows: read again
    assert stats == {"user_frequency": 2,
                     "user_last_purchase_ts": int(datetime(2011, 1, 3, 10, tzinfo=UTC).timestamp())}
    assert index is not None and index["item_ids"] == ["i1", "i2"]
    assert index["user_item_times_bought"] == [2, 1]
    assert reused["user_item_times_bought"].tolist()[::2] == [1.0, 2.0]
    for name in plain:
        assert_same_column(pd.Series(reused[name]), pd.Series(plain[name]), name)
    assert reader.entity({"user_id": "nobody"}).values("user_stats") is None


@pytest.mark.parametrize("user", ["u1", "nobody"])
def test_one_user_given_once_reads_what_get_online_features_returns(store_settings, user):
    """Serving's shape: one user (read once, the same values on every row), many items."""
    store = prepare(store_settings, end=datetime(2011, 1, 12, tzinfo=UTC))
    items = ["i2", "unknown", "i1", "i2"]
    theirs = feast_frame(store, [user] * len(items), items)

    columns = ServiceReader(store, SERVICE).read_columns({"user_id": user, "item_id": items},
                                                         {"as_of": AS_OF})

    assert set(columns) == set(theirs.columns)
    for name in theirs.columns:
        assert_same_column(pd.Series(columns[name]), theirs[name], name)
    days = columns["user_item_days_since_last_purchase"]
    assert days.dtype == np.float64 and columns["user_tenure_days"].dtype == np.float64
    if user == "nobody":
        assert np.isnan(days).all() and pd.isna(columns["user_last_purchase_ts"]).all()
        assert columns["user_category_names"].tolist() == [None] * len(items)
        return
    assert days.tolist()[1:3] == [pytest.approx(np.nan, nan_ok=True), 6 + 14 / 24]
    assert columns["user_category_names"][0] == ["kitchen", "toys"]


def test_recency_gives_the_same_days_for_any_datetime_column():
    """Online it gets zone-aware columns; offline Feast may hand it other datetime types
    (naive UTC, another zone, strings): the same instants give the same days."""
    stamps = ["2011-01-03 10:00", None, "2011-01-01 09:00"]
    aware = pd.DataFrame({
        "as_of": pd.DatetimeIndex([AS_OF] * 3),
        "user_last_purchase_ts": pd.DatetimeIndex(stamps, tz="UTC").as_unit("s"),
        "user_first_purchase_ts": pd.DatetimeIndex(stamps, tz="UTC").tz_convert("Asia/Tokyo"),
        "user_item_last_purchase_ts": pd.DatetimeIndex(stamps, tz="UTC"),
    })
    others = pd.DataFrame({
        "as_of": pd.Series([AS_OF] * 3, dtype=object),
        "user_last_purchase_ts": pd.DatetimeIndex(stamps),  # naive: UTC
        "user_first_purchase_ts": [s and f"{s}:00+00:00" for s in stamps],
        "user_item_last_purchase_ts": pd.DatetimeIndex(stamps).astype("datetime64[us]"),
    })
    udf = recency.feature_transformation.udf

    days, expected = udf(aware), udf(others)

    assert [dtype.kind for dtype in others.dtypes] == ["O", "M", "O", "M"]

    pd.testing.assert_frame_equal(days, expected)
    for name in days.columns:
        assert days[name].tolist()[::2] == [pytest.approx(6 + 14 / 24), pytest.approx(9 - 9 / 24)]
        assert np.isnan(days[name][1])
