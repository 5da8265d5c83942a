from datetime import UTC, datetime

import pandas as pd
import pytest

from features.event_log import EventLog
from features.ingest import upsert_catalog
from features.schemas import validate_events
from features.settings import Settings
from features.store import apply_definitions, feature_store, materialize, online_features
from features.transforms import build_feature_tables
from tests.conftest import SAMPLE_CATALOG, SAMPLE_EVENTS


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
    assert (store.config.online_store.type == "redis") == bool(store_settings.redis_url)

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
