"""Real-time freshness of recommendations: a purchase the stream consumer writes into the
online store (the user's `user_stats` and `user_item_index` rows) shows in the user's next
request, on SQLite and the real Redis; catalog changes reach the item side in the
background. The champion is the one `tests.test_serving` trains on the four-month slice."""

import threading
import time
import uuid
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest
import redis
from fastapi.testclient import TestClient

from features.changes import open_changes
from features.consumer import Consumer
from features.event_log import EventLog
from features.feature_repo.definitions import RECS_RANKER_SERVICE
from features.ingest import read_catalog, upsert_catalog
from features.online import ServiceReader
from features.online_updates import OnlineFeatureWriter
from features.settings import Settings
from features.store import feature_store, materialize
from features.stream import open_stream
from serving.app import create_app
from serving.config import ServingSettings
from serving.recs import Recommender, UserCandidates
from serving.recs.fresh import OnlineHistory, user_candidates
from serving.recs.snapshot import Ranking
from tests import test_serving
from tests.conftest import REDIS_URL, delete_project_keys, key_headers
from tests.test_serving import END, PERSONAL_SOURCES, UNKNOWN_USER, recommend, wait_for

trained = test_serving.trained  # this module's own trained champion (it writes purchases)
AS_OF = END + timedelta(days=1)
"""The service's clock: after the purchases below (the candidate state's cutoff is END)."""


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def settings(request, trained) -> Settings:
    """The trained environment's settings on each online store (Redis: materialized too)."""
    if request.param == "sqlite":
        yield trained.settings
        return
    on_redis = trained.settings.model_copy(update={"redis_url": REDIS_URL})
    materialize(feature_store(on_redis), END)
    yield on_redis
    delete_project_keys(redis.Redis.from_url(REDIS_URL), on_redis.feast_project)


@pytest.fixture(scope="module")
def client(settings):
    app = create_app(settings, ServingSettings(clock=AS_OF))
    with TestClient(app, headers=key_headers(settings, "storefront")) as client:
        yield client


def ranking_of(client: TestClient) -> Ranking:
    ranking = client.app.state.recommender._current().ranking  # type: ignore[attr-defined]
    assert ranking is not None
    return ranking


def candidates_of(ranking: Ranking, user: str) -> dict[str, np.ndarray]:
    """The candidates a request for the user ranks now."""
    history = OnlineHistory.of(ranking.store.user(user))
    assert history is not None
    return user_candidates(ranking, user, history, ranking.item_features.catalog)


def proposed_by(candidates: dict[str, np.ndarray], source: str) -> set[str]:
    return set(candidates["item_id"][~np.isnan(candidates[f"{source}_rank"])])


def buy(settings: Settings, user: str, item: str, when: datetime, units: int = 2,
        notify: bool = True) -> None:
    """Write one purchase (a new order) as the stream consumer does: the user's stats and
    pair index rows updated, dated the purchase, and (`notify`) a change notice naming the
    user published."""
    store = feature_store(settings)
    rows = ServiceReader(store, RECS_RANKER_SERVICE).entity({"user_id": user})
    stats = rows.values("user_stats") or {
        "user_frequency": 0, "user_monetary": 0.0, "user_returns": 0,
        "user_first_purchase_ts": None, "user_category_names": [], "user_category_shares": []}
    index = {name: list(values) for name, values in (rows.values("user_item_stats") or {
        "item_ids": [], "user_item_times_bought": [], "user_item_units_bought": [],
        "user_item_units_returned": [], "user_item_last_purchase_ts": []}).items()}
    if item not in index["item_ids"]:
        for name, empty in (("item_ids", item), ("user_item_times_bought", 0),
                            ("user_item_units_bought", 0), ("user_item_units_returned", 0),
                            ("user_item_last_purchase_ts", float("nan"))):
            index[name].append(empty)
    at = index["item_ids"].index(item)
    index["user_item_times_bought"][at] += 1
    index["user_item_units_bought"][at] += units
    index["user_item_last_purchase_ts"][at] = when.timestamp()
    stamp = pd.Timestamp(when)
    first = stats["user_first_purchase_ts"]
    store.write_to_online_store("user_item_index", pd.DataFrame(
        [{"user_id": user, "event_timestamp": stamp, **index}]))
    store.write_to_online_store("user_stats", pd.DataFrame([{
        "user_id": user, "event_timestamp": stamp,
        "user_frequency": stats["user_frequency"] + 1,
        "user_monetary": stats["user_monetary"] + 2.0 * units,
        "user_distinct_items": len(index["item_ids"]), "user_returns": stats["user_returns"],
        "user_first_purchase_ts": stamp if first is None else pd.Timestamp(first, unit="s",
                                                                           tz="UTC"),
        "user_last_purchase_ts": stamp, "user_category_names": stats["user_category_names"],
        "user_category_shares": stats["user_category_shares"]}]))
    if notify:
        open_changes(settings).publish([user], [])


def answer_within_a_second(client: TestClient, user: str, done) -> dict:
    """The user's recommendations once `done` holds for them; fails after a second."""
    start = time.monotonic()
    while not done(answer := recommend(client, user, k=10).json()):
        assert time.monotonic() - start < 1.0, "the answer did not change within a second"
        time.sleep(0.01)
    return answer


def purchase_with_new_neighbour(ranking: Ranking) -> tuple[str, str, str]:
    """A known user with five items, a popular item they never bought, and its strongest
    co-purchase neighbour, which is none of the user's candidates yet."""
    pairs = ranking.model.sources["repurchase"].scores
    sizes = pairs.groupby("user_id").size()
    user = sizes[sizes == 5].index[0]
    covisit = ranking.model.sources["covisit"]
    items = covisit.matrix.items
    catalog = ranking.item_features.catalog
    bought = set(pairs.loc[pairs["user_id"] == user, "item_id"])
    current = set(candidates_of(ranking, user)["item_id"])
    for item in ranking.model.sources["popular"].ranking.index:
        if item in bought:
            continue
        neighbour = items[covisit.cooccurrence[items.get_loc(item)].toarray().argmax()]
        if neighbour not in current and neighbour in catalog.ids:
            return user, item, neighbour
    raise AssertionError("no popular item with a new neighbour")


def test_purchase_reflected_in_the_next_request(client, settings):
    ranking = ranking_of(client)
    user, bought, neighbour = purchase_with_new_neighbour(ranking)
    before = recommend(client, user, k=10).json()
    table = candidates_of(ranking, user)

    hits = ranking.results.hits
    buy(settings, user, bought, END + timedelta(hours=1), notify=False)
    assert recommend(client, user, k=10).json()["items"] == before["items"]
    assert ranking.results.hits == hits + 1  # kept: nothing said the user's rows changed

    open_changes(settings).publish([user], [])
    after = answer_within_a_second(client, user, lambda answer: answer["items"] != before["items"])
    fresh = candidates_of(ranking, user)

    assert neighbour not in set(table["item_id"])
    assert neighbour in proposed_by(fresh, "covisit")
    assert bought in proposed_by(fresh, "repurchase")
    assert before["fallback"] is False and after["fallback"] is False
    assert after["items"] != before["items"]
    # Kept for the next request; the user's next purchase invalidates it.
    assert candidates_of(ranking, user)["item_id"] is fresh["item_id"]
    buy(settings, user, neighbour, END + timedelta(hours=2))
    again = candidates_of(ranking, user)
    assert again["item_id"] is not fresh["item_id"]
    assert neighbour in proposed_by(again, "repurchase")


def test_first_purchase_personalises_an_unknown_user(client, settings):
    ranking = ranking_of(client)
    user = "newcomer"
    _, bought, neighbour = purchase_with_new_neighbour(ranking)
    before = recommend(client, user, k=10).json()

    buy(settings, user, bought, END + timedelta(hours=3))
    after = answer_within_a_second(client, user, lambda answer: not answer["fallback"])
    candidates = candidates_of(ranking, user)

    assert before["fallback"] is True
    assert after["fallback"] is False and after["model_version"] == before["model_version"]
    assert PERSONAL_SOURCES & {item["source"] for item in after["items"]}
    assert neighbour in proposed_by(candidates, "covisit")
    assert proposed_by(candidates, "als")
    assert user not in ranking.candidates  # the table is as loaded: this came from the store
    assert recommend(client, "still-unknown", k=5).json()["fallback"] is True


def test_user_candidates_bounded_and_kept_per_marker():
    kept = UserCandidates(capacity=2)
    made: list[str] = []

    def generate(name: str):
        return lambda: made.append(name) or {"item_id": np.array([name], dtype=object)}

    first = kept.get("u1", ("t1",), generate("u1 at t1"))
    assert kept.get("u1", ("t1",), generate("unused")) is first
    kept.get("u1", ("t2",), generate("u1 at t2"))  # a new purchase: a new marker
    kept.get("u2", ("t1",), generate("u2"))
    kept.get("u1", ("t2",), generate("unused"))  # u1 used last: u2 goes first
    kept.get("u3", ("t1",), generate("u3"))
    kept.get("u2", ("t1",), generate("u2 again"))

    # Two users at most: u3 pushed u2 out, u2 coming back pushed u1; u3 is still kept.
    assert kept.get("u3", ("t1",), generate("unused"))["item_id"][0] == "u3"
    assert made == ["u1 at t1", "u1 at t2", "u2", "u3", "u2 again"]


def test_catalog_change_reread_in_the_background(trained):
    """Kept last: it rewrites the module's catalog (an item added, another moved to a new
    category, a price changed)."""
    recommender = Recommender(trained.settings, ServingSettings(
        clock=AS_OF, materialization_poll_seconds=0.05))
    recommender.load()
    cache = recommender._current().item_features
    assert cache is not None
    loaded, frame = cache.catalog, cache.frame
    moved = trained.popular[0]
    items_before = recommender.status().items
    assert recommender.recommend(trained.user, 5, category="novelties").items == []

    catalog = read_catalog(trained.settings.catalog_path).set_index("item_id")
    changed = catalog.loc[[moved, trained.popular[1]]].copy()
    changed.loc[moved, "category"] = "novelties"
    changed.loc[trained.popular[1], "current_price"] *= 1.1
    added = changed.iloc[:1].rename(index={moved: "NEW-ITEM"})
    upsert_catalog(trained.settings.catalog_path,
                   pd.concat([changed, added]).reset_index())
    time.sleep(0.1)
    recommender.recommend(trained.user, 5)  # due: the check finds the catalog file changed

    assert wait_for(lambda: cache.catalog is not loaded)
    assert cache.frame is not frame and "NEW-ITEM" in cache.frame.index
    assert recommender.status().items == items_before + 1
    fallback = recommender.recommend(UNKNOWN_USER, 5, category="novelties")
    personal = recommender.recommend(trained.user, 5, category="novelties")
    assert [item.item_id for item in fallback.items] == [moved]
    assert personal.fallback is False and moved in [item.item_id for item in personal.items]
    old_category = recommender.recommend(trained.user, 20, category=trained.categories[moved])
    assert moved not in [item.item_id for item in old_category.items]


def test_a_purchase_posted_to_the_api_personalises_within_a_second(client, settings):
    """The whole path: POST /v1/events, the stream, a running consumer, the online store and
    the next recommendations request of a user nobody knew."""
    user = f"new-{uuid.uuid4().hex[:8]}"
    assert recommend(client, user, k=5).json()["fallback"] is True
    catalog = read_catalog(settings.catalog_path)
    worker = Consumer(open_stream(settings, 1.0), EventLog(settings.events_dir),
                      OnlineFeatureWriter(feature_store(settings),
                                          catalog.set_index("item_id")["category"]),
                      changes=open_changes(settings))
    stop = threading.Event()
    consuming = threading.Thread(target=worker.run, args=(stop, 0.05))
    consuming.start()
    try:
        item = ranking_of(client).model.sources["popular"].ranking.index[0]
        item_features = ranking_of(client).item_features
        purchases = item_features.lookup([item])["item_purchases_30d"][0]
        purchase = {"event_id": f"e-{user}", "event_type": "purchase", "user_id": user,
                    "session_id": f"s-{user}", "item_id": item,
                    "ts": (END + timedelta(hours=3)).isoformat(), "quantity": 1,
                    "unit_price": 2.5, "currency": "GBP", "channel": "web"}
        assert client.post("/v1/events", json=purchase).status_code == 202
        accepted = time.monotonic()
        while recommend(client, user, k=5).json()["fallback"]:
            assert time.monotonic() - accepted < 1.0, "not personalised within a second"
            time.sleep(0.01)
    finally:
        stop.set()
        consuming.join()
    answer = recommend(client, user, k=5).json()
    assert {entry["source"] for entry in answer["items"]} & set(PERSONAL_SOURCES)
    # The item's counters the consumer wrote reach the worker's item cache too.
    assert wait_for(lambda: item_features.lookup([item])["item_purchases_30d"][0]
                    == purchases + 1)


def test_workers_share_ranked_lists_until_the_users_notice(settings):
    """Two workers (two recommenders): on Redis the second answers from the list the first
    scored, until the user's change notice, after which neither trusts it; on SQLite each
    scores for itself. Either way they answer alike."""
    options = ServingSettings(clock=AS_OF, changes_poll_seconds=0.01)
    first, second = Recommender(settings, options), Recommender(settings, options)
    first.load()
    second.load()
    ranking = second._current().ranking
    assert ranking is not None
    user, bought, _ = purchase_with_new_neighbour(ranking)
    scored = first.recommend(user, 10)
    shared = second.recommend(user, 10)
    on_redis = settings.redis_url is not None
    assert shared.items == scored.items
    assert (second._shared.hits if second._shared else 0) == (1 if on_redis else 0)
    assert ranking.results.misses == 1

    buy(settings, user, bought, END + timedelta(hours=5))
    time.sleep(0.05)
    after = second.recommend(user, 10)  # the notice: the first worker's list is out of date
    assert after.items != shared.items
    assert (second._shared.hits if second._shared else 0) == (1 if on_redis else 0)
    time.sleep(0.05)
    assert first.recommend(user, 10).items == after.items
    assert (first._shared.hits if first._shared else 0) == (1 if on_redis else 0)
