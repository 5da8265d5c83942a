"""`ServiceReader` against Feast's own `get_online_features`, on SQLite, the real Redis and a
local Redis Cluster."""

import time
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
import redis
from feast import Field
from feast.infra.online_stores.helpers import _redis_key
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float64

from features.feature_repo.definitions import (
    RECS_RANKER_SERVICE,
    as_of_request,
    recency,
    user_stats_fv,
)
from features.online import OnDemand, ServiceReader, UnsupportedServiceError, entity_key
from features.store import feature_store, materializations, materialize
from tests import redis_cluster as local_cluster
from tests.test_feature_store import prepare

pytest_plugins = ["tests.redis_cluster"]  # one local Redis Cluster for the session
store_settings = local_cluster.store_settings  # conftest's backends and the Redis Cluster

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
    if pd.api.types.is_datetime64_any_dtype(ours):  # read_columns': naive UTC instants
        ours, expected = pd.to_datetime(ours, utc=True), pd.to_datetime(theirs, utc=True)
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
    """A reader that records the table of each `online_read` it makes, the tables of each
    `online_read_tables` and, on Redis, the commands of each pipeline it sends."""

    def __init__(self, store, service):
        super().__init__(store, service)
        self.reads: list[str] = []
        self.batches: list[list[str]] = []
        self.pipelines: list[int] = []
        online = self._provider.online_store
        if hasattr(online, "_read_hash_fields"):  # Redis: spy on its one pipelined read
            send = online._read_hash_fields

            def counted(config, commands):
                self.pipelines.append(len(commands))
                return send(config, commands)

            online._read_hash_fields = counted

    def online_read(self, table, keys, names):
        self.reads.append(table.name)
        return super().online_read(table, keys, names)

    def online_read_tables(self, reads):
        self.batches.append([table.name for table, _, _ in reads])
        return super().online_read_tables(reads)


def test_entity_rows_read_once_and_reused_by_read_columns(store_settings):
    """Serving looks at a user's history before it knows the candidates, then reads their
    features: the user's rows are read once for both, in one store call (on Redis one
    pipelined round trip)."""
    store = prepare(store_settings, end=datetime(2011, 1, 12, tzinfo=UTC))
    reader = CountingReader(store, SERVICE)
    entities = {"user_id": "u1", "item_id": ["i2", "unknown", "i1"]}
    on_redis = store.config.online_store.type == "redis"

    user = reader.entity({"user_id": "u1"})
    stats = user.values("user_stats", ["user_frequency", "user_last_purchase_ts"])
    index = user.values("user_item_stats")
    reused = reader.read_columns(entities, {"as_of": AS_OF}, skip=("item_stats",), entity=user)
    once = list(reader.reads)
    batches, pipelines = list(reader.batches), list(reader.pipelines)
    plain = reader.read_columns(entities, {"as_of": AS_OF}, skip=("item_stats",))

    assert batches == [["user_stats", "user_item_index"]]
    # Redis: one pipeline of both tables' commands; elsewhere one read per table.
    assert (pipelines, once) == (([2], []) if on_redis
                                 else ([], ["user_stats", "user_item_index"]))
    assert reader.reads[len(once):] == ["user_stats", "user_item_index"]  # without the rows
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


@pytest.mark.parametrize("store_settings", ["redis_cluster"], indirect=True)
@pytest.mark.filterwarnings("ignore:.*'cluster_error_retry_attempts':DeprecationWarning")
def test_cluster_read_gives_up_soon_when_a_node_hangs(store_settings, redis_cluster):
    """With the request path's timeout, a read of a user's rows on a hung node of the cluster
    fails in a small multiple of it (left to retry, redis-py's cluster client took about 15
    times it), and the same reader reads again once the node is back."""
    timeout = 0.25
    store = prepare(store_settings, end=datetime(2011, 1, 12, tzinfo=UTC))
    reader = ServiceReader(feature_store(store_settings, timeout), SERVICE)
    user = {"user_id": "u1"}
    assert reader.entity(user).values("user_stats", ["user_frequency"]) == {"user_frequency": 2}
    key = _redis_key(store_settings.feast_project, entity_key(user),
                     entity_key_serialization_version=store.config.entity_key_serialization_version)

    with redis_cluster.hung(key):
        started = time.monotonic()
        with pytest.raises(redis.TimeoutError):
            reader.entity(user).values("user_stats")
        elapsed = time.monotonic() - started

    # Measured: 2-3 timeouts (the pipeline's, then each of its commands on the node alone).
    assert elapsed < 5 * timeout
    assert reader.entity(user).values("user_stats", ["user_frequency"]) == {"user_frequency": 2}


def test_recency_gives_the_same_days_for_any_datetime_column():
    """The reader and training give it datetime64 arrays of UTC instants; Feast gives it
    lists of datetimes (zone-aware or naive UTC) and None, or strings: the same instants
    give the same days."""
    stamps = ["2011-01-03 10:00", None, "2011-01-01 09:00"]
    instants = pd.DatetimeIndex(stamps, tz="UTC")
    arrays = {
        "as_of": np.full(3, np.datetime64(AS_OF.replace(tzinfo=None), "ns")),
        "user_last_purchase_ts": instants.tz_localize(None).to_numpy().astype("datetime64[s]"),
        "user_first_purchase_ts": instants.tz_localize(None).to_numpy(),
        "user_item_last_purchase_ts": instants.tz_localize(None).to_numpy(),
    }
    lists = {
        "as_of": [AS_OF] * 3,
        "user_last_purchase_ts": [None if s is pd.NaT else s.to_pydatetime()
                                  for s in instants.tz_convert("Asia/Tokyo")],
        "user_first_purchase_ts": [s and f"{s}:00+00:00" for s in stamps],
        "user_item_last_purchase_ts": [None if s is pd.NaT else s.to_pydatetime()
                                       for s in instants.tz_localize(None)],  # naive: UTC
    }
    udf = recency.feature_transformation.udf

    days, expected = udf(arrays), udf(lists)

    assert days.keys() == expected.keys()
    for name, values in days.items():
        assert values == pytest.approx(expected[name], nan_ok=True), name
        assert isinstance(values, list)
        assert values[::2] == [pytest.approx(6 + 14 / 24), pytest.approx(9 - 9 / 24)], name
        assert np.isnan(values[1])


def test_on_demand_frame_holds_the_inputs_its_function_names():
    """Every input costs (a pandas frame's column much more): recency gets the three
    timestamps it reads, not the nine other features of its sources."""
    transform = OnDemand.of(recency)

    assert transform.inputs == ("user_first_purchase_ts", "user_last_purchase_ts",
                                "user_item_last_purchase_ts")
    assert len(transform.every_input) == 12


def test_on_demand_function_that_builds_a_name_gets_every_input():
    """A function reading a column whose name it builds fails on the narrower frame; the
    reader gives it every input from then on, and its answer is the right one."""

    @on_demand_feature_view(sources=[user_stats_fv, as_of_request],
                            schema=[Field(name="spend_per_order", dtype=Float64)], mode="pandas")
    def spend_per_order(inputs: pd.DataFrame) -> pd.DataFrame:
        import pandas as pd

        prefix = "user_"
        return pd.DataFrame({"spend_per_order": inputs[prefix + "monetary"]
                             / inputs[prefix + "frequency"]}, index=inputs.index)

    transform = OnDemand.of(spend_per_order)
    columns = {name: np.ones(2) for name in transform.every_input}
    columns |= {"user_monetary": np.array([10.0, 9.0]), "user_frequency": np.array([2.0, 3.0])}

    assert "user_monetary" not in transform.inputs
    first = transform.run(columns, {"as_of": AS_OF}, 2)
    again = transform.run(columns, {"as_of": AS_OF}, 2)

    assert transform.inputs == transform.every_input
    assert first["spend_per_order"].tolist() == again["spend_per_order"].tolist() == [5.0, 3.0]


def test_on_demand_function_of_one_row_at_a_time_is_refused():
    """A singleton python function takes one row's values: the reader, which runs functions
    on columns, names the view instead of giving it columns."""

    @on_demand_feature_view(sources=[user_stats_fv, as_of_request],
                            schema=[Field(name="spend_per_order", dtype=Float64)],
                            mode="python", singleton=True)
    def spend_per_order(inputs: dict) -> dict:
        return {"spend_per_order": inputs["user_monetary"] / inputs["user_frequency"]}

    with pytest.raises(UnsupportedServiceError, match="spend_per_order"):
        OnDemand.of(spend_per_order)
