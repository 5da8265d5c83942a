from datetime import UTC, datetime

import pandas as pd
import pytest
from feast.infra.online_stores.redis import RedisOnlineStore

from features.errors import InputError
from features.event_log import EventLog
from features.ingest import upsert_catalog
from features.schemas import validate_events
from features.settings import Settings
from features.store import (
    apply_definitions,
    feature_store,
    materialize,
    online_features,
    online_store_kind,
    redis_connection_string,
    repo_config,
)
from features.transforms import build_feature_tables
from tests import redis_cluster as local_cluster
from tests.conftest import SAMPLE_CATALOG, SAMPLE_EVENTS

pytest_plugins = ["tests.redis_cluster"]  # one local Redis Cluster for the session
store_settings = local_cluster.store_settings  # conftest's backends and the Redis Cluster


def prepare(settings: Settings, end: datetime | None = None):
    """Load the sample events, build the feature tables, apply and (optionally) materialize."""
    EventLog(settings.events_dir).append(validate_events(pd.DataFrame(SAMPLE_EVENTS)))
    upsert_catalog(settings.catalog_path, SAMPLE_CATALOG)
    build_feature_tables(settings.events_dir, SAMPLE_CATALOG, settings.feature_tables_dir)
    store = feature_store(settings)
    apply_definitions(store)
    if end is not None:
        materialize(store, end)
    return store


def test_online_features_after_materialize_match_the_events(store_settings):
    store = prepare(store_settings, end=datetime(2011, 1, 12, tzinfo=UTC))
    online = store.config.online_store
    assert (online.type == "redis") == (online_store_kind(store_settings) != "sqlite")
    if nodes := store_settings.redis_cluster_nodes:  # 2 users, 2 items, 3 pairs: on its nodes
        assert online.redis_type == "redis_cluster"
        assert sum(local_cluster.keys_per_node(nodes, store_settings.feast_project)) == 7

    values = online_features(store, "u1", ["i1", "i2", "unknown"],
                             as_of=datetime(2011, 1, 10, tzinfo=UTC))

    assert values["user_frequency"] == [2, 2, 2]
    assert values["user_monetary"] == [pytest.approx(11.0)] * 3
    assert values["user_category_names"][0] == ["kitchen", "toys"]
    assert values["user_category_shares"][0] == [0.5, 0.5]
    # i1 as of the end of Jan 11: both January purchases are out of the 7-day window.
    assert values["item_purchases_7d"] == [0, 0, None]
    assert values["item_purchases_30d"] == [3, 1, None]
    assert values["item_buyers_30d"] == [2, 1, None]
    assert values["item_price_last"] == [4.0, 1.0, None]
    assert values["user_item_times_bought"] == [2, 1, None]
    assert values["user_item_units_bought"] == [3, 3, None]
    # Jan 3 10:00 to Jan 10 00:00 is 6 days and 14 hours.
    assert values["user_recency_days"][0] == pytest.approx(6 + 14 / 24)
    assert values["user_item_days_since_last_purchase"][1] == pytest.approx(6 + 14 / 24)
    assert values["user_item_days_since_last_purchase"][2] is None or pd.isna(
        values["user_item_days_since_last_purchase"][2]
    )


def test_materialize_end_bounds_what_the_online_store_sees(store_settings):
    store = prepare(store_settings, end=datetime(2011, 1, 2, 12, tzinfo=UTC))
    early = online_features(store, "u1", ["i1"], as_of=datetime(2011, 1, 2, 12, tzinfo=UTC))
    assert early["user_item_times_bought"] == [1]

    materialize(store, datetime(2011, 2, 1, tzinfo=UTC))
    late = online_features(store, "u1", ["i1"], as_of=datetime(2011, 2, 1, tzinfo=UTC))
    assert late["user_item_times_bought"] == [2]


def test_unknown_user_reads_as_missing_values(store_settings):
    store = prepare(store_settings, end=datetime(2011, 2, 1, tzinfo=UTC))
    values = online_features(store, "nobody", ["i1"], as_of=datetime(2011, 2, 1, tzinfo=UTC))
    assert values["user_frequency"] == [None]
    assert values["item_purchases_30d"] == [4]


def test_historical_features_never_see_values_dated_after_the_label_time(tmp_path):
    store = prepare(Settings(data_dir=tmp_path / "data"))
    label_times = pd.to_datetime(
        ["2011-01-01 12:00", "2011-01-02 00:00", "2011-01-03 23:00", "2011-01-04 00:00"], utc=True
    )
    entities = pd.DataFrame({"user_id": "u1", "item_id": "i1", "event_timestamp": label_times,
                             "as_of": label_times})

    frame = store.get_historical_features(
        entity_df=entities, features=store.get_feature_service("recs_ranker_v1")
    ).to_df().sort_values("event_timestamp").reset_index(drop=True)

    # Jan 1 12:00: the morning's purchase is not summarised until the day is over.
    assert frame["user_item_times_bought"].isna()[0]
    assert frame["item_purchases_7d"].isna()[0]
    # Jan 2 and Jan 3 23:00 see Jan 1 only; the Jan 3 purchase shows from Jan 4 on.
    assert frame["user_item_times_bought"].tolist()[1:] == [1, 1, 2]
    assert frame["item_purchases_7d"].tolist()[1:] == [2, 2, 3]
    assert frame["user_frequency"].tolist()[1:] == [1, 1, 2]
    recency = frame["user_recency_days"].tolist()
    assert recency[2] == pytest.approx(2 + 14 / 24)  # Jan 1 09:00 to Jan 3 23:00
    assert recency[3] == pytest.approx(14 / 24)  # Jan 3 10:00 to Jan 4 00:00


def test_cluster_nodes_make_the_online_store_a_redis_cluster(monkeypatch, tmp_path):
    """`TAILOR_REDIS_CLUSTER_NODES` wins over `TAILOR_REDIS_URL` for the online store; its
    password, TLS and the request path's timeouts reach Feast's Redis client as given."""
    monkeypatch.setenv("TAILOR_REDIS_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("TAILOR_REDIS_CLUSTER_NODES", "10.0.0.1:7000, redis-b:7001")
    monkeypatch.setenv("TAILOR_REDIS_CLUSTER_PASSWORD", "123")
    monkeypatch.setenv("TAILOR_REDIS_CLUSTER_TLS", "true")
    settings = Settings(data_dir=tmp_path)
    assert online_store_kind(settings) == "redis_cluster"

    batch = repo_config(settings).online_store
    online = repo_config(settings, timeout_seconds=0.25).online_store

    assert (batch.type, batch.redis_type) == ("redis", "redis_cluster")
    nodes, options = RedisOnlineStore._parse_connection_string(batch.connection_string)
    assert nodes == [{"host": "10.0.0.1", "port": "7000"}, {"host": "redis-b", "port": "7001"}]
    assert options == {"password": "123", "ssl": True}  # Feast's parser keeps it a string
    _, options = RedisOnlineStore._parse_connection_string(online.connection_string)
    # No `retry`: redis-py's cluster client refuses it; it has its own retries instead.
    assert options == {"password": "123", "ssl": True, "socket_timeout": 0.25,
                       "socket_connect_timeout": 0.25, "cluster_error_retry_attempts": 0}


def test_redis_url_password_reaches_feast_decoded():
    _, options = RedisOnlineStore._parse_connection_string(
        redis_connection_string("rediss://:p%40ss@redis:6380/1", timeout_seconds=0.5))
    assert options == {"db": 1, "password": "p@ss", "ssl": True, "socket_timeout": 0.5,
                       "socket_connect_timeout": 0.5, "retry": None}


@pytest.mark.parametrize("nodes", ["redis-a", "redis-a:", "redis-a:7000,", "redis://a:7000",
                                   "a:7000;b:7001", "[::1]:7000", "a:70000", "a:0"])
def test_bad_cluster_nodes_are_refused_naming_the_setting(tmp_path, nodes):
    with pytest.raises(InputError, match="TAILOR_REDIS_CLUSTER_NODES must look like host:port"):
        repo_config(Settings(data_dir=tmp_path, redis_cluster_nodes=nodes))


def test_cluster_password_with_a_comma_is_refused(tmp_path):
    settings = Settings(data_dir=tmp_path, redis_cluster_nodes="a:7000",
                        redis_cluster_password="se,cret")
    with pytest.raises(InputError, match="TAILOR_REDIS_CLUSTER_PASSWORD"):
        repo_config(settings)
