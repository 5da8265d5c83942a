import uuid

import numpy as np
import pandas as pd
import pytest

from features.event_log import EventLog
from features.feature_repo.definitions import RECS_RANKER_SERVICE
from features.ingest import read_catalog, upsert_catalog
from features.settings import Settings
from features.store import apply_definitions, feature_store
from features.transforms import build_feature_tables
from models.recs.candidates import fit_sources, generate_candidates, purchases_before
from models.recs.ranker import FEATURE_COLUMNS
from training.recs.examples import features_at
from training.recs.point_in_time import historical_features

CUTOFF = pd.Timestamp("2011-03-01", tz="UTC")


def assert_same_values(ours: pd.Series, feasts: pd.Series) -> None:
    """Equal values, missing in the same rows (lists compared as lists)."""
    if ours.dtype == object:
        assert [None if v is None else list(v) for v in ours] == [
            None if v is None else list(v) for v in feasts], ours.name
    else:
        pd.testing.assert_series_equal(ours, feasts, check_dtype=False, check_names=False,
                                       check_index=False)


def test_historical_features_equal_feasts_point_in_time_join(feature_ready_settings):
    store = feature_store(feature_ready_settings)
    events = EventLog(feature_ready_settings.events_dir).read()
    rng = np.random.default_rng(0)
    bought = events[events["user_id"].notna()].drop_duplicates(["user_id", "item_id"])
    pairs = bought.sample(400, random_state=0)[["user_id", "item_id"]]
    # Midnights (rows are dated at midnights: the boundary is inclusive), instants within a
    # day, and an instant before any data; pairs never bought, and users with several rows.
    stamps = pd.to_datetime(["2010-11-01 00:00", "2011-01-01 00:00", "2011-02-14 13:30",
                             "2011-03-01 00:00", "2011-03-20 08:00"], utc=True)
    entities = pd.concat([
        pairs.assign(event_timestamp=stamps[rng.integers(0, len(stamps), len(pairs))]),
        pairs.assign(item_id=pairs["item_id"].sample(frac=1, random_state=1).to_numpy(),
                     event_timestamp=stamps[2]),
    ]).drop_duplicates(["user_id", "item_id", "event_timestamp"], ignore_index=True)
    entities["as_of"] = entities["event_timestamp"]

    ours = historical_features(store, entities, RECS_RANKER_SERVICE)
    feasts = store.get_historical_features(
        entity_df=entities, features=store.get_feature_service(RECS_RANKER_SERVICE)).to_df()

    keys = ["user_id", "item_id", "event_timestamp"]
    feasts = entities[keys].merge(feasts, on=keys, how="left")  # Feast reorders the rows
    assert list(ours.index) == list(entities.index)
    assert len(ours.columns) == 27
    for column in ours.columns:
        assert_same_values(ours[column], feasts[column])
    assert ours["user_frequency"].notna().any() and ours["user_frequency"].isna().any()


def features_ready(data_dir, events: pd.DataFrame, catalog: pd.DataFrame) -> Settings:
    settings = Settings(data_dir=data_dir, feast_project=f"t{uuid.uuid4().hex[:8]}")
    EventLog(settings.events_dir).append(events)
    upsert_catalog(settings.catalog_path, catalog)
    build_feature_tables(settings.events_dir, catalog, settings.feature_tables_dir)
    apply_definitions(feature_store(settings))
    return settings


def test_training_features_at_a_cutoff_use_nothing_from_after_it(tmp_path,
                                                                 online_retail_four_months):
    log = EventLog(online_retail_four_months / "events").read()
    catalog = read_catalog(online_retail_four_months / "catalog.parquet")
    full = features_ready(tmp_path / "full", log, catalog)
    before = features_ready(tmp_path / "before", log[log["ts"] < CUTOFF], catalog)
    history = purchases_before(log, CUTOFF)
    users = sorted(history["user_id"].unique())[:300]
    candidates = generate_candidates(fit_sources(history, CUTOFF), users)

    seen = features_at(feature_store(full), candidates, CUTOFF, catalog)
    truncated = features_at(feature_store(before), candidates, CUTOFF, catalog)

    # The whole log (a month past the cutoff) gives the features a log cut at the cutoff
    # gives: nothing dated after the cutoff reaches a training example.
    pd.testing.assert_frame_equal(seen, truncated)
    assert list(seen.columns) == list(FEATURE_COLUMNS)
    assert seen["user_frequency"].notna().all()
    later = features_at(feature_store(full), candidates, CUTOFF + pd.Timedelta(days=14),
                        catalog)
    assert (later["item_purchases_30d"] != seen["item_purchases_30d"]).any()
    np.testing.assert_allclose(later["user_tenure_days"], seen["user_tenure_days"] + 14)


def test_historical_features_refuse_a_view_with_a_ttl(feature_ready_settings):
    store = feature_store(feature_ready_settings)
    view = store.get_feature_view("item_stats")
    view.ttl = pd.Timedelta(days=30).to_pytimedelta()
    store.apply([view])
    entities = pd.DataFrame({"user_id": ["12347"], "item_id": ["85123A"],
                             "event_timestamp": [CUTOFF], "as_of": [CUTOFF]})
    with pytest.raises(ValueError, match="item_stats: only file sources without a ttl"):
        historical_features(store, entities, RECS_RANKER_SERVICE)
