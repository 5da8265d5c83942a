"""The recommendations API end to end: the FastAPI app with its lifespan running, a Feast
SQLite online store, MLflow SQLite tracking and a LightGBM ranker trained on four months of
the real Online Retail export."""

import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from features.event_log import EventLog
from features.ingest import read_catalog
from features.settings import Settings
from features.store import feature_store, materialize
from models import registry
from models.recs.artifacts import MODEL_NAME
from models.recs.ranker import RankerParams
from serving.app import create_app
from serving.config import ServingSettings
from serving.recs import Recommender
from tests.conftest import features_ready, key_headers
from training.recs.train import train_recs

CONTRACT = Path(__file__).resolve().parents[1] / "serving" / "openapi.json"
END = datetime(2011, 4, 1, tzinfo=UTC)  # the day after the slice's last event
QUICK = RankerParams(n_estimators=40)  # the full code path with fewer trees
POPULAR_N = 60  # the popular source's list length (CandidateConfig.popular_n)
UNKNOWN_USER = "never-bought-anything"
PERSONAL_SOURCES = {"repurchase", "covisit", "als", "next_order"}


@dataclass(frozen=True)
class Trained:
    settings: Settings
    version: str
    categories: dict[str, str]
    user: str
    """The customer with the most orders."""
    popular: list[str]
    """Catalog items by distinct buyers over the last 30 days (the top 60), then by all-time
    distinct buyers: the popularity fallback, computed here from the events."""


def popularity_order(events: pd.DataFrame, catalog_ids: set[str]) -> list[str]:
    purchases = events[(events["event_type"] == "purchase") & events["user_id"].notna()]
    recent = purchases[purchases["ts"] >= END - timedelta(days=30)]
    head = recent.groupby("item_id")["user_id"].nunique().sort_index()
    head = head.sort_values(ascending=False, kind="stable").head(POPULAR_N)
    tail = purchases.groupby("item_id")["user_id"].nunique().drop(head.index).sort_index()
    tail = tail.sort_values(ascending=False, kind="stable")
    return [item for item in [*head.index, *tail.index] if item in catalog_ids]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, online_retail_four_months) -> Trained:
    """Features built, applied and materialized; one ranker trained and champion."""
    settings = features_ready(online_retail_four_months,
                              tmp_path_factory.mktemp("serving") / "data")
    catalog = read_catalog(settings.catalog_path)
    store = feature_store(settings)
    materialize(store, END)
    registry.configure(settings)
    report = train_recs(settings, params=QUICK, cutoffs=2)
    assert report.promoted
    events = EventLog(settings.events_dir).read()
    orders = events[events["event_type"] == "purchase"].groupby("user_id")["session_id"]
    categories = dict(zip(catalog["item_id"], catalog["category"], strict=True))
    return Trained(settings, report.version, categories, orders.nunique().idxmax(),
                   popularity_order(events, set(categories)))


def serving_app(settings: Settings):
    return create_app(settings, ServingSettings(clock="model"))


@pytest.fixture(scope="module")
def client(trained):
    with TestClient(serving_app(trained.settings),
                    headers=key_headers(trained.settings, "storefront")) as client:
        yield client


def recommend(client: TestClient, user: str, **params):
    response = client.get(f"/v1/users/{user}/recommendations", params=params)
    assert response.status_code == 200, response.text
    return response


def item_ids(response) -> list[str]:
    return [item["item_id"] for item in response.json()["items"]]


def test_serve_schema_equal_to_committed_contract(client):
    served = client.get("/openapi.json").json()
    committed = json.loads(CONTRACT.read_text())
    assert served == committed, (
        "serving/openapi.json differs from the schema the app serves: "
        "run `python scripts/export_openapi.py` and commit the result")


def test_recommend_known_user_ranks_personal_candidates(client, trained):
    response = recommend(client, trained.user, k=10)

    body = response.json()
    assert body["fallback"] is False
    assert body["model_version"] == trained.version
    assert response.headers["X-Request-ID"] == body["request_id"]
    assert uuid.UUID(body["request_id"]).version == 4
    items = item_ids(response)
    assert len(items) == 10 and len(set(items)) == 10
    assert set(items) <= set(trained.categories)
    scores = [item["score"] for item in body["items"]]
    assert scores == sorted(scores, reverse=True)
    assert PERSONAL_SOURCES & {item["source"] for item in body["items"]}


def test_recommend_unknown_user_popular_fallback(client, trained):
    response = recommend(client, UNKNOWN_USER, k=7)

    body = response.json()
    assert body["fallback"] is True
    assert item_ids(response) == trained.popular[:7]
    assert {item["source"] for item in body["items"]} == {"popular"}
    assert response.headers["X-Request-ID"] == body["request_id"]


def test_recommend_excluded_items_left_out_on_both_paths(client, trained):
    first = item_ids(recommend(client, trained.user, k=10))
    excluded = first[:3]
    params = [("k", "10"), ("exclude", f"{excluded[0]},{excluded[1]}"), ("exclude", excluded[2])]

    personal = client.get(f"/v1/users/{trained.user}/recommendations", params=params)
    fallback = client.get(f"/v1/users/{UNKNOWN_USER}/recommendations",
                          params={"k": 5, "exclude": ",".join(trained.popular[:2])})

    assert personal.json()["fallback"] is False
    assert len(item_ids(personal)) == 10
    assert not set(excluded) & set(item_ids(personal))
    assert item_ids(personal)[:7] == first[3:]
    assert item_ids(fallback) == trained.popular[2:7]


def test_recommend_category_filter_on_both_paths(client, trained):
    # The user's candidates hold few toys: popular toys fill the list up to k.
    personal = recommend(client, trained.user, k=20, category="toys")
    fallback = recommend(client, UNKNOWN_USER, k=20, category="toys")

    assert personal.json()["fallback"] is False
    assert len(item_ids(personal)) == 20
    assert {trained.categories[item] for item in item_ids(personal)} == {"toys"}
    scores = [item["score"] for item in personal.json()["items"]]
    assert scores == sorted(scores, reverse=True)
    toys = [item for item in trained.popular if trained.categories[item] == "toys"]
    assert fallback.json()["fallback"] is True
    assert item_ids(fallback) == toys[:20]


@pytest.mark.parametrize("k", [0, 101, 1000])
def test_recommend_k_out_of_range_rejected(client, trained, k):
    response = client.get(f"/v1/users/{trained.user}/recommendations", params={"k": k})

    assert response.status_code == 422
    assert [error["loc"] for error in response.json()["detail"]] == [["query", "k"]]


def test_report_health_and_readiness_with_champion(client, trained):
    health = client.get("/healthz")
    ready = client.get("/readyz")

    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert uuid.UUID(health.headers["X-Request-ID"]).version == 4
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "model_version": trained.version,
                            "feature_store": "sqlite", "items": len(trained.categories),
                            "item_features_until": END.isoformat().replace("+00:00", "Z")}


def test_report_unready_without_champion_while_recommending(trained, tmp_path):
    empty = trained.settings.model_copy(
        update={"mlflow_tracking_uri": f"sqlite:///{tmp_path / 'empty-mlflow.db'}"})

    with TestClient(serving_app(empty), headers=key_headers(empty, "admin")) as client:
        ready = client.get("/readyz")
        known = recommend(client, trained.user, k=10)
        toys = recommend(client, UNKNOWN_USER, k=5, category="toys")
        reload = client.post("/v1/admin/reload")

    assert ready.status_code == 503
    assert ready.json()["status"] == "unavailable"
    assert "no `champion`" in ready.json()["reason"]
    assert known.json()["fallback"] is True and known.json()["model_version"] is None
    assert item_ids(known) == trained.popular[:10]  # the event log's popularity
    assert [trained.categories[item] for item in item_ids(toys)] == ["toys"] * 5
    assert reload.status_code == 503 and "no `champion`" in reload.json()["detail"]


def wait_for(condition, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_reread_item_features_after_a_materialization_only(trained):
    recommender = Recommender(trained.settings,
                              ServingSettings(clock="model", materialization_poll_seconds=0.05))
    recommender.load()
    ranking = recommender._current().ranking
    assert ranking is not None
    cache = ranking.item_features
    loaded, frame = cache.loaded_version, cache.frame

    time.sleep(0.1)
    recommender.recommend(trained.user, 5)  # due: checks the registry, finds nothing new
    assert wait_for(lambda: not cache._refreshing.locked())
    unchanged = cache.frame is frame
    misses = ranking.results.misses
    recommender.recommend(trained.user, 5)
    cached = ranking.results.misses == misses

    materialize(feature_store(trained.settings), END + timedelta(days=1))
    time.sleep(0.1)
    recommender.recommend(trained.user, 5)

    assert unchanged and cached
    assert wait_for(lambda: cache.loaded_version != loaded)
    assert cache.frame is not frame
    assert cache.loaded_version[-1][1] == END + timedelta(days=1)
    pd.testing.assert_frame_equal(cache.frame, frame)  # the same tables: the same values
    recommender.recommend(trained.user, 5)  # the user's cached list predates the re-read
    assert ranking.results.misses == misses + 1


def test_reload_champion_after_promotion(trained):
    """Kept last: it trains a second version (and moves the alias back afterwards)."""
    with TestClient(serving_app(trained.settings),
                    headers=key_headers(trained.settings, "admin")) as client:
        first = recommend(client, trained.user).json()
        before = first["model_version"]
        registry.configure(trained.settings)
        second = train_recs(trained.settings, params=RankerParams(n_estimators=5), cutoffs=2)
        try:
            registry.promote(MODEL_NAME, second.version)
            still = recommend(client, trained.user).json()["model_version"]
            reload = client.post("/v1/admin/reload")
            after = recommend(client, trained.user).json()
        finally:
            registry.configure(trained.settings)
            registry.promote(MODEL_NAME, trained.version)

    assert before == still == trained.version
    assert second.version != trained.version
    assert reload.status_code == 200
    assert reload.json() == {"previous_version": trained.version,
                             "current_version": second.version, "changed": True}
    assert after["model_version"] == second.version and after["fallback"] is False
    # The first model's cached list went with it: the new one scored the user anew.
    assert [item["score"] for item in after["items"]] != [item["score"] for item in first["items"]]
