"""The review workflow over the API, on a SQLite file and on the real PostgreSQL: approve,
reject with a reason, edit checked against the guardrails, bulk by ids or by filter, the
first of concurrent decisions winning, the audit log, and newer batches superseding pending
suggestions. Batches are real optimizer results stored by `save_batch`."""

import threading
from contextlib import ExitStack
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from db import engine_for, migrate
from db.reviews import BULK_LIMIT, DecisionConflict, decide
from db.suggestions import list_suggestions, save_batch
from db.tables import SuggestionDecisionRow
from features.settings import Settings
from models.pricing.guardrails import Guardrails
from serving.app import create_app
from serving.config import ServingSettings
from tests.conftest import key_headers, service_settings
from tests.test_serving_prices import CATEGORIES, offer, optimized

URL = "/v1/price-suggestions"
GUARDRAILS = Guardrails().model_dump(mode="json")
OFFERS = [("p1", "web", 6.49), ("p1", "etsy", 6.99), ("p2", "web", 12.99),
          ("p2", "amazon", 13.49), ("p3", "etsy", 4.49)]


@pytest.fixture(params=["sqlite", "postgresql"])
def review(request, tmp_path):
    """An app on an empty service database with one stored batch; yields (client, engine,
    batch id, suggestion id by (item, channel), alice's and bob's merchandiser headers)."""
    with ExitStack() as stack:
        settings, engine, batch_id, ids = database_with_a_batch(
            stack, request.param, tmp_path / "data", "test_review")
        alice, bob = (key_headers(settings, "merchandiser", name) for name in ("alice", "bob"))
        client = stack.enter_context(TestClient(create_app(settings, ServingSettings())))
        yield client, engine, batch_id, ids, alice, bob


def database_with_a_batch(stack: ExitStack, kind: str, data_dir: Path, prefix: str
                          ) -> tuple[Settings, Engine, str, dict[tuple[str, str], int]]:
    """A migrated service database of `kind` (`service_settings`; its engine disposed when
    `stack` closes) holding one stored batch of `OFFERS`: its settings, engine, the batch id
    and the suggestion id by (item, channel)."""
    settings = service_settings(stack, kind, data_dir, prefix)
    engine = engine_for(settings.database)
    stack.callback(engine.dispose)
    migrate(engine)
    batch_id = store_batch(engine, OFFERS, "demand-model:7")
    ids = {(row["item_id"], row["channel"]): row["id"]
           for row in list_suggestions(engine, batch_id=batch_id)}
    return settings, engine, batch_id, ids


def store_batch(engine: Engine, offers, model_version: str) -> str:
    result = optimized([offer(*row) for row in offers], model_version)
    return save_batch(engine, result.suggestions, result.skipped, model_version, GUARDRAILS,
                      CATEGORIES)


def suggestion(client: TestClient, headers: dict, suggestion_id: int) -> dict:
    response = client.get(f"{URL}/{suggestion_id}", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def log(client: TestClient, headers: dict, **params) -> list[dict]:
    response = client.get("/v1/price-decisions", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["items"]


def audit_rows(engine: Engine) -> int:
    with engine.connect() as connection:
        return connection.scalar(select(func.count()).select_from(SuggestionDecisionRow))


def test_approve_then_a_second_decision_gets_409(review):
    client, _, batch_id, ids, alice, bob = review
    target = ids[("p1", "web")]
    before = suggestion(client, alice, target)

    approved = client.post(f"{URL}/{target}/approve", json={"reason": "looks right"},
                           headers=alice)
    second = client.post(f"{URL}/{target}/reject", json={"reason": "too high"}, headers=bob)

    assert approved.status_code == 200, approved.text
    body = approved.json()
    assert body["status"] == "approved" and body["reviewed_by"] == "alice"
    assert body["approved_price"] == pytest.approx(before["suggested_price"])
    assert second.status_code == 409
    assert "approved by alice" in second.json()["detail"]
    entries = log(client, alice, item_id="p1", channel="web")
    assert [(e["action"], e["actor"], e["reason"]) for e in entries] == [
        ("approved", "alice", "looks right")]
    assert entries[0]["price_after"] == pytest.approx(before["suggested_price"])
    assert entries[0]["batch_id"] == batch_id and entries[0]["suggestion_id"] == target


def test_reject_needs_a_reason_and_unknown_ids_404(review):
    client, engine, _, ids, alice, _ = review
    target = ids[("p2", "web")]

    blank = client.post(f"{URL}/{target}/reject", json={"reason": "  "}, headers=alice)
    missing = client.post(f"{URL}/{target}/reject", json={}, headers=alice)
    unknown = client.post(f"{URL}/999999/approve", headers=alice)
    rejected = client.post(f"{URL}/{target}/reject", json={"reason": "competitor is lower"},
                           headers=alice)

    assert blank.status_code == 422 and missing.status_code == 422
    assert unknown.status_code == 404 and "999999" in unknown.json()["detail"]
    assert rejected.status_code == 200
    assert rejected.json()["status"] == "rejected" and rejected.json()["approved_price"] is None
    assert audit_rows(engine) == 1
    assert log(client, alice, suggestion_id=target)[0]["reason"] == "competitor is lower"


def test_edit_is_checked_against_every_guardrail(review):
    client, engine, _, ids, alice, _ = review
    target = ids[("p2", "amazon")]
    row = suggestion(client, alice, target)
    floor, ceiling = row["price_floor"], row["price_ceiling"]
    assert floor < row["suggested_price"] <= ceiling
    assert row["price_floor_rule"] and row["price_ceiling_rule"]

    def edit(price: float):
        return client.post(f"{URL}/{target}/edit", json={"price": price}, headers=alice)

    below = edit(int(floor) - 1 + 0.99 if floor > 1 else 0.49)
    above = edit(int(ceiling) + 1.99)
    off_grid = edit(int(row["suggested_price"]) + 0.50)
    assert below.status_code == 422 and below.json()["rule"] == row["price_floor_rule"]
    assert above.status_code == 422 and above.json()["rule"] == row["price_ceiling_rule"]
    assert off_grid.status_code == 422 and off_grid.json()["rule"] == "price_endings"
    assert "below" in below.json()["detail"] and "above" in above.json()["detail"]
    assert audit_rows(engine) == 0  # nothing written by refused edits

    # p2 on the web is priced too: a channel spread beyond 20% is refused.
    web = suggestion(client, alice, ids[("p2", "web")])["suggested_price"]
    grid = [whole + ending for whole in range(int(floor), int(ceiling) + 1)
            for ending in (0.49, 0.99) if floor <= whole + ending <= ceiling]
    spreads = [price for price in grid if max(price, web) / min(price, web) > 1.2]
    assert spreads, "the fixture's prices must leave room to break the spread"
    spread = edit(spreads[0])
    assert spread.status_code == 422 and spread.json()["rule"] == "channel_spread"

    allowed = next(price for price in grid if price not in spreads
                   and abs(price - row["suggested_price"]) > 0.01)
    edited = edit(allowed)
    assert edited.status_code == 200, edited.text
    assert edited.json()["status"] == "edited"
    assert edited.json()["approved_price"] == pytest.approx(allowed)
    [entry] = log(client, alice, suggestion_id=target)
    assert entry["action"] == "edited" and entry["price_after"] == pytest.approx(allowed)
    assert entry["price_before"] == pytest.approx(row["suggested_price"])


def test_bulk_by_ids_is_all_or_nothing(review):
    client, engine, _, ids, alice, _ = review
    first, second = ids[("p1", "web")], ids[("p1", "etsy")]
    assert client.post(f"{URL}/{first}/approve", headers=alice).status_code == 200

    conflict = client.post(f"{URL}/bulk", json={"action": "approve", "ids": [first, second]},
                           headers=alice)
    unknown = client.post(f"{URL}/bulk", json={"action": "approve", "ids": [second, 999999]},
                          headers=alice)
    oversized = client.post(f"{URL}/bulk", json={
        "action": "approve", "ids": list(range(1, BULK_LIMIT + 2))}, headers=alice)
    neither = client.post(f"{URL}/bulk", json={"action": "approve"}, headers=alice)

    assert conflict.status_code == 409 and unknown.status_code == 404
    assert oversized.status_code == 413 and neither.status_code == 422
    assert suggestion(client, alice, second)["status"] == "pending"  # nothing half-applied
    assert audit_rows(engine) == 1

    done = client.post(f"{URL}/bulk", json={"action": "approve", "ids": [second]},
                       headers=alice)
    assert done.status_code == 200 and done.json() == {"action": "approve", "decided": 1,
                                                       "ids": [second]}


def test_bulk_reject_by_filter_takes_only_pending_matches(review):
    client, _, batch_id, ids, alice, _ = review
    assert client.post(f"{URL}/{ids[('p1', 'etsy')]}/approve", headers=alice).status_code == 200

    no_reason = client.post(f"{URL}/bulk", json={"action": "reject", "channel": "etsy"},
                            headers=alice)
    rejected = client.post(f"{URL}/bulk", json={"action": "reject", "channel": "etsy",
                                                "batch_id": batch_id,
                                                "reason": "etsy prices frozen"},
                           headers=alice)

    assert no_reason.status_code == 422
    assert rejected.status_code == 200
    assert rejected.json()["ids"] == [ids[("p3", "etsy")]]  # p1 on etsy was approved already
    entries = log(client, alice, batch_id=batch_id)
    assert [(e["action"], e["channel"]) for e in entries] == [("rejected", "etsy"),
                                                              ("approved", "etsy")]


def test_concurrent_decisions_on_one_suggestion_the_first_wins(review):
    _, engine, _, ids, _, _ = review
    target = ids[("p2", "web")]
    barrier = threading.Barrier(4)
    outcomes: list[str] = []

    def attempt(actor: str) -> None:
        barrier.wait()
        try:
            decide(engine, target, "approve", actor)
            outcomes.append("won")
        except DecisionConflict:
            outcomes.append("conflict")

    threads = [threading.Thread(target=attempt, args=(f"reviewer-{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes) == ["conflict"] * 3 + ["won"]
    assert audit_rows(engine) == 1


def test_a_newer_batch_supersedes_pending_suggestions_of_its_offers(review):
    client, _, older_id, ids, alice, _ = review
    assert client.post(f"{URL}/{ids[('p1', 'web')]}/approve", headers=alice).status_code == 200

    newer_id = store_batch(review[1], [("p1", "web", 6.99), ("p2", "web", 12.49)],
                           "demand-model:8")

    older = {(row["item_id"], row["channel"]): row["status"]
             for row in list_suggestions(review[1], batch_id=older_id)}
    assert older == {("p1", "web"): "approved",  # decided: kept as decided
                     ("p1", "etsy"): "pending", ("p2", "web"): "superseded",
                     ("p2", "amazon"): "pending", ("p3", "etsy"): "pending"}
    [entry] = log(client, alice, item_id="p2", channel="web")
    assert entry["action"] == "superseded" and entry["actor"] == "system"
    assert newer_id in entry["reason"]
    stale = client.post(f"{URL}/{ids[('p2', 'web')]}/approve", headers=alice)
    assert stale.status_code == 409 and "superseded" in stale.json()["detail"]
