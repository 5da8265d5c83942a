"""The transactional outbox of approved prices: every approval (one, bulk, edit, the
approval policy's) writes its price change in the approval's transaction, a newer approval
supersedes the undelivered older one, an in-flight older one holds the newer back, and an
approval the channels config cannot deliver is refused with nothing written. Also the
channels config and item mapping files' errors. On a SQLite file and on the real PostgreSQL
(`empty_database`)."""

import random
from datetime import UTC, datetime, timedelta

import pytest
import yaml
from sqlalchemy.orm import Session

from db import migrate
from db.channels import ChannelsConfigError, UndeliverableError, load_destinations
from db.outbox import Approval, Outcome, claim, enqueue, list_deliveries, renew, settle
from db.reviews import decide, decide_many
from db.suggestions import list_suggestions, save_batch
from models.pricing.guardrails import Guardrails
from tests.conftest import REPO_ROOT, write_csv
from tests.test_approval_policy import POLICY, store, suggestions_frame
from tests.test_review import OFFERS, store_batch

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)


@pytest.fixture
def database(empty_database):
    migrate(empty_database)
    return empty_database


@pytest.fixture
def destinations(tmp_path, monkeypatch):
    """`web` a price feed, `etsy` a Shopify store knowing items p1 and p2; `amazon` not
    configured."""
    monkeypatch.setenv("TEST_SHOPIFY_TOKEN", "shpat_test")
    write_csv(tmp_path / "items.csv", [
        {"item_id": "p1", "channel": "etsy", "product_id": "1", "variant_id": "11"},
        {"item_id": "p2", "channel": "etsy", "product_id": "2", "variant_id": "21"}])
    (tmp_path / "channels.yaml").write_text(yaml.safe_dump({
        "item_mapping": "items.csv",
        "channels": {"web": {"connector": "price_feed", "path": "web.json"},
                     "etsy": {"connector": "shopify", "base_url": "http://127.0.0.1:9",
                              "access_token_env": "TEST_SHOPIFY_TOKEN"}}}))
    return load_destinations(tmp_path / "channels.yaml")


def suggestion_ids(engine, batch_id: str) -> dict[tuple[str, str], dict]:
    return {(row["item_id"], row["channel"]): row
            for row in list_suggestions(engine, batch_id=batch_id)}


def test_each_kind_of_approval_queues_its_price_and_a_rejection_none(database):
    batch = suggestion_ids(database, store_batch(database, OFFERS, "demand-model:1"))
    decide(database, batch["p1", "web"]["id"], "approve", "alice")
    decide(database, batch["p1", "etsy"]["id"], "edit", "bob", price=6.49)
    decide(database, batch["p2", "web"]["id"], "reject", "carol", reason="too low")
    decide_many(database, "approve", "dave", [batch["p2", "amazon"]["id"],
                                              batch["p3", "etsy"]["id"]])

    rows = {(row["item_id"], row["channel"]): row for row in list_deliveries(database)}
    assert set(rows) == {("p1", "web"), ("p1", "etsy"), ("p2", "amazon"), ("p3", "etsy")}
    assert rows["p1", "web"]["price"] == batch["p1", "web"]["suggested_price"]
    assert rows["p1", "etsy"]["price"] == 6.49 and rows["p1", "etsy"]["approved_by"] == "bob"
    assert rows["p3", "etsy"]["suggestion_id"] == batch["p3", "etsy"]["id"]
    assert {row["status"] for row in rows.values()} == {"pending"}


def test_the_policy_queues_what_it_approves(database):
    stored = store(database, POLICY)

    rows = list_deliveries(database)
    approved = {case for case, row in stored.items() if row["status"] == "approved"}
    assert {row["item_id"] for row in rows} == {stored[case]["item_id"] for case in approved}
    assert {row["approved_by"] for row in rows} == {"policy"}


def test_a_newer_approval_supersedes_the_undelivered_one(database):
    with Session(database) as session, session.begin():
        enqueue(session, [Approval(1, "p1", "web", 9.99), Approval(2, "p2", "web", 5.0)],
                "alice", NOW)
    with Session(database) as session, session.begin():
        enqueue(session, [Approval(3, "p1", "web", 8.99)], "bob", NOW + timedelta(minutes=1))

    rows = {row["suggestion_id"]: row for row in list_deliveries(database)}
    assert rows[1]["status"] == "superseded"
    assert rows[2]["status"] == rows[3]["status"] == "pending"
    claimed = claim(database, "web", "worker-a", NOW + timedelta(minutes=2), 60, 10)
    assert sorted(change.price for change in claimed) == [5.0, 8.99]


def test_an_older_price_in_flight_holds_the_newer_back_until_it_is_acknowledged(database):
    with Session(database) as session, session.begin():
        enqueue(session, [Approval(1, "p1", "web", 9.99)], "alice", NOW)
    [older] = claim(database, "web", "worker-a", NOW, 60, 10)
    with Session(database) as session, session.begin():  # approved while the older is sent
        enqueue(session, [Approval(2, "p1", "web", 8.99)], "bob", NOW)

    assert claim(database, "web", "worker-b", NOW + timedelta(seconds=1), 60, 10) == []
    settle(database, [Outcome(older.id)], "worker-a", NOW + timedelta(seconds=2),
           max_attempts=3, initial_seconds=1, max_seconds=10, rng=random.Random(0))
    [newer] = claim(database, "web", "worker-b", NOW + timedelta(seconds=3), 60, 10)
    assert newer.price == 8.99
    statuses = {row["suggestion_id"]: row["status"] for row in list_deliveries(database)}
    assert statuses[1] == "superseded"  # acknowledged, but a newer price was approved


def test_a_lease_that_ran_out_lets_another_worker_take_the_change(database):
    with Session(database) as session, session.begin():
        enqueue(session, [Approval(1, "p1", "web", 9.99)], "alice", NOW)
    [first] = claim(database, "web", "worker-a", NOW, 30, 10)

    assert claim(database, "web", "worker-b", NOW + timedelta(seconds=29), 30, 10) == []
    [again] = claim(database, "web", "worker-b", NOW + timedelta(seconds=31), 30, 10)
    assert again.id == first.id and again.attempts == 2
    # the first worker's late acknowledgement no longer counts
    counts = settle(database, [Outcome(first.id)], "worker-a", NOW + timedelta(seconds=32),
                    max_attempts=3, initial_seconds=1, max_seconds=10,
                    rng=random.Random(0))
    assert counts["delivered"] == 0


def test_an_undeliverable_approval_is_refused_with_nothing_written(database, destinations):
    batch = suggestion_ids(database, store_batch(database, OFFERS, "demand-model:1"))

    with pytest.raises(UndeliverableError, match="channel 'amazon' is not in the channels"):
        decide(database, batch["p2", "amazon"]["id"], "approve", "alice",
               destinations=destinations)
    with pytest.raises(UndeliverableError, match="item 'p3' has no product and variant on "
                                                 "channel 'etsy'"):
        decide_many(database, "approve", "alice",
                    [batch["p1", "etsy"]["id"], batch["p3", "etsy"]["id"]],
                    destinations=destinations)

    assert list_deliveries(database) == []
    assert {row["status"] for row in suggestion_ids(database, batch["p1", "web"]["batch_id"])
            .values()} == {"pending"}
    decide(database, batch["p1", "etsy"]["id"], "approve", "alice", destinations=destinations)
    decide(database, batch["p2", "amazon"]["id"], "reject", "alice", reason="not sold there",
           destinations=destinations)  # rejections need no channel
    assert [row["item_id"] for row in list_deliveries(database)] == ["p1"]


def test_the_policy_leaves_undeliverable_suggestions_to_a_person(database, destinations):
    frame = suggestions_frame()
    categories = dict(zip(frame["item_id"], frame.pop("category"), strict=True))
    batch_id = save_batch(database, frame, None, "demand-model:1",
                          Guardrails().model_dump(mode="json"), categories, POLICY,
                          destinations)
    statuses = {row["item_id"]: row["status"]
                for row in list_suggestions(database, batch_id=batch_id)}
    # a and b are inside the envelope, on `web` (a feed: no mapping needed)
    assert statuses["a"] == statuses["b"] == "approved"
    assert len(list_deliveries(database)) == 2


def test_the_example_channels_config_loads():
    destinations = load_destinations(REPO_ROOT / "channels.example.yaml")
    assert set(destinations.channels) == {"web", "shopify", "bigcommerce", "marketplace"}
    assert destinations.problem("85123A", "shopify") is None
    assert destinations.target("85123A", "bigcommerce").variant_id == "377"


@pytest.mark.parametrize(("config", "mapping", "message"), [
    ({"channels": {"x": {"connector": "shopify", "base_url": "http://h",
                         "access_token_env": "T"}}}, None, "need an item_mapping file"),
    ({"channels": {"x": {"connector": "etsy"}}}, None, "field 'channels[x]'"),
    ({"channels": {"x": {"connector": "bigcommerce", "base_url": "http://h",
                         "access_token_env": "T", "batch_size": 51}}}, None,
     "field 'channels[x][bigcommerce][batch_size]'"),
    ({"item_mapping": "items.csv", "channels": {"x": {"connector": "price_feed", "path": "f"}}},
     "item_id,channel,product_id,variant_id\np1,y,1,2\n", "line 2: field 'channel' names 'y'"),
    ({"item_mapping": "items.csv", "channels": {"x": {"connector": "price_feed", "path": "f"}}},
     "item_id,channel,product_id,variant_id\np1,x,1,2\np1,x,1,3\n", "line 3: item 'p1' is "
                                                                    "mapped twice"),
    ({"item_mapping": "items.csv", "channels": {"x": {"connector": "price_feed", "path": "f"}}},
     "item_id,channel,product_id\np1,x,1\n", "missing column(s) variant_id"),
    ({"item_mapping": "items.csv", "channels": {"x": {"connector": "price_feed", "path": "f"}}},
     "item_id,channel,product_id,variant_id\np1,x,,2\n", "line 2: field 'product_id' is empty"),
    ({"item_mapping": "gone.csv", "channels": {"x": {"connector": "price_feed", "path": "f"}}},
     None, "gone.csv: item mapping file not found"),
])
def test_a_bad_channels_config_names_the_problem(tmp_path, config, mapping, message):
    if mapping is not None:
        (tmp_path / "items.csv").write_text(mapping)
    (tmp_path / "channels.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(ChannelsConfigError) as error:
        load_destinations(tmp_path / "channels.yaml")
    assert message in str(error.value)


def test_a_renewed_lease_keeps_the_change_and_a_lost_one_is_not_renewed(database):
    with Session(database) as session, session.begin():
        enqueue(session, [Approval(1, "p1", "web", 9.99)], "alice", NOW)
    [held] = claim(database, "web", "worker-a", NOW, 30, 10)

    assert renew(database, [held.id], "worker-a", NOW + timedelta(seconds=20), 30) == {held.id}
    assert claim(database, "web", "worker-b", NOW + timedelta(seconds=35), 30, 10) == []
    assert renew(database, [held.id], "worker-b", NOW + timedelta(seconds=36), 30) == set()
    [taken] = claim(database, "web", "worker-b", NOW + timedelta(seconds=51), 30, 10)
    assert renew(database, [taken.id], "worker-a", NOW + timedelta(seconds=52), 30) == set()
