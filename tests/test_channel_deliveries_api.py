"""`/v1/channel-deliveries` on a SQLite file and on the real PostgreSQL: approvals through the
API listed with their price and status, dead letters (made by the outbox's own `claim` and
`settle`, as the delivery worker does) listed with their reason and retried, refusals as 404
and 409, the merchandiser role, filters and paging done by the database."""

import random
from contextlib import ExitStack
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from db.outbox import Outcome, claim, settle
from db.suggestions import list_suggestions
from serving.app import create_app
from serving.config import ServingSettings
from tests.conftest import key_headers
from tests.test_review import OFFERS, database_with_a_batch, store_batch

URL = "/v1/channel-deliveries"
SUGGESTIONS = "/v1/price-suggestions"


@pytest.fixture(params=["sqlite", "postgresql"])
def outbox(request, tmp_path):
    """An app on a service database with one stored batch; yields (client, engine, suggestion
    id by (item, channel), a merchandiser's headers, a storefront key's headers)."""
    with ExitStack() as stack:
        settings, engine, _, ids = database_with_a_batch(
            stack, request.param, tmp_path / "data", "test_channel_deliveries")
        alice = key_headers(settings, "merchandiser", "alice")
        shop = key_headers(settings, "storefront", "shop")
        client = stack.enter_context(TestClient(create_app(settings, ServingSettings())))
        yield client, engine, ids, alice, shop


def approve(client: TestClient, headers: dict, suggestion_id: int) -> dict:
    response = client.post(f"{SUGGESTIONS}/{suggestion_id}/approve", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def listed(client: TestClient, headers: dict, **params) -> dict:
    response = client.get(URL, params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def attempt(engine: Engine, channel: str, refusal: str | None = None) -> int:
    """One attempt at `channel`'s due delivery, claimed and settled as the delivery worker
    does: delivered, or refused by the channel with `refusal` (a dead letter). Returns its
    id."""
    now = datetime.now(UTC)
    [claimed] = claim(engine, channel, "test-worker", now, lease_seconds=60, limit=1)
    settle(engine, [Outcome(claimed.id, error=refusal, permanent=refusal is not None)],
           "test-worker", now, max_attempts=5, initial_seconds=1, max_seconds=60,
           rng=random.Random(0))
    return claimed.id


def test_an_approval_is_listed_pending_with_its_price_until_delivered(outbox):
    client, engine, ids, alice, _ = outbox
    approved = approve(client, alice, ids[("p1", "web")])

    page = listed(client, alice)

    assert page["total"] == 1 and page["limit"] == 100 and page["offset"] == 0
    [delivery] = page["items"]
    assert delivery["suggestion_id"] == approved["id"]
    assert (delivery["item_id"], delivery["channel"]) == ("p1", "web")
    assert delivery["price"] == pytest.approx(approved["approved_price"])
    assert delivery["status"] == "pending" and delivery["approved_by"] == "alice"
    assert delivery["attempts"] == 0 and delivery["last_error"] is None
    assert listed(client, alice, status="failed")["total"] == 0

    attempt(engine, "web")
    [done] = listed(client, alice, status="delivered")["items"]
    assert done["id"] == delivery["id"] and done["delivered_at"] is not None
    assert done["attempts"] == 1 and listed(client, alice, status="pending")["total"] == 0


def test_a_dead_letter_is_listed_with_its_reason_and_retried_once(outbox):
    client, engine, ids, alice, _ = outbox
    approve(client, alice, ids[("p2", "amazon")])
    approve(client, alice, ids[("p1", "web")])
    dead = attempt(engine, "amazon", "HTTP 400: SKU p2 is not listed")

    failed = listed(client, alice, status="failed")
    [letter] = failed["items"]
    assert failed["total"] == 1 and letter["id"] == dead
    assert letter["last_error"] == "HTTP 400: SKU p2 is not listed"
    assert letter["attempts"] == 1 and letter["item_id"] == "p2"

    retried = client.post(f"{URL}/{dead}/retry", headers=alice)
    again = client.post(f"{URL}/{dead}/retry", headers=alice)
    missing = client.post(f"{URL}/999999/retry", headers=alice)

    assert retried.status_code == 200, retried.text
    assert retried.json()["status"] == "pending" and retried.json()["attempts"] == 0
    assert retried.json()["retried_by"] == "alice"
    assert again.status_code == 409 and "only failed" in again.json()["detail"]
    assert missing.status_code == 404 and "999999" in missing.json()["detail"]
    assert listed(client, alice, status="failed")["total"] == 0
    assert {row["item_id"] for row in listed(client, alice, status="pending")["items"]} == {
        "p1", "p2"}


def test_a_dead_letter_with_a_newer_approval_is_not_retried(outbox):
    client, engine, ids, alice, _ = outbox
    approve(client, alice, ids[("p3", "etsy")])
    dead = attempt(engine, "etsy", "HTTP 422: price below the listing minimum")
    newer_batch = store_batch(engine, [("p3", "etsy", 4.99)], "demand-model:8")
    [newer] = list_suggestions(engine, batch_id=newer_batch)
    approve(client, alice, newer["id"])

    stale = client.post(f"{URL}/{dead}/retry", headers=alice)

    assert stale.status_code == 409 and "out of date" in stale.json()["detail"]
    by_suggestion = {row["suggestion_id"]: row["status"]
                     for row in listed(client, alice, item_id="p3")["items"]}
    assert by_suggestion == {ids[("p3", "etsy")]: "failed", newer["id"]: "pending"}


def test_filters_and_pages_come_from_the_database(outbox):
    client, _, ids, alice, _ = outbox
    for suggestion_id in ids.values():
        approve(client, alice, suggestion_id)

    first = listed(client, alice, limit=2)
    second = listed(client, alice, limit=2, offset=2)
    etsy = listed(client, alice, channel="etsy")
    blank = listed(client, alice, channel=" ", item_id="")
    one = listed(client, alice, suggestion_id=ids[("p2", "web")])

    every = [row["id"] for row in listed(client, alice)["items"]]
    assert every == sorted(every, reverse=True) and len(every) == len(OFFERS)  # newest first
    assert [row["id"] for row in first["items"] + second["items"]] == every[:4]
    assert first["total"] == second["total"] == len(OFFERS)
    assert {row["item_id"] for row in etsy["items"]} == {"p1", "p3"} and etsy["total"] == 2
    assert blank["total"] == len(OFFERS)  # a blank filter is no filter
    assert [(row["item_id"], row["channel"]) for row in one["items"]] == [("p2", "web")]


def test_bad_input_and_other_roles_are_refused(outbox):
    client, _, _, alice, shop = outbox

    storefront = client.get(URL, headers=shop)
    storefront_retry = client.post(f"{URL}/1/retry", headers=shop)
    nobody = client.get(URL)
    bad_status = client.get(URL, params={"status": "lost"}, headers=alice)
    empty_status = client.get(URL, params={"status": ""}, headers=alice)
    too_many = client.get(URL, params={"limit": 501}, headers=alice)
    twice = client.get(URL, params=[("channel", "web"), ("channel", "etsy")], headers=alice)
    not_an_id = client.post(f"{URL}/0/retry", headers=alice)
    beyond = client.post(f"{URL}/{2**63}/retry", headers=alice)  # no id that large

    assert storefront.status_code == storefront_retry.status_code == 403
    assert "'merchandiser'" in storefront.json()["detail"]
    assert nobody.status_code == 401
    for refused, field in [(bad_status, "status"), (empty_status, "status"),
                           (too_many, "limit"), (twice, "channel"),
                           (not_an_id, "delivery_id"), (beyond, "delivery_id")]:
        assert refused.status_code == 422, refused.text
        assert refused.json()["detail"][0]["loc"][-1] == field
