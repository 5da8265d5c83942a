"""Approved prices reach every sales channel: the outbox, the delivery worker and the three
connectors, against local servers that follow each channel's contract
(`tests.channel_servers`) with injected faults, on a SQLite file and on the real PostgreSQL.
Backoff, rate-limit waits, leases and the circuit breaker run on an injected clock: a sleep
moves it forward at once."""

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from db import migrate
from db.channels import BreakerSettings, load_destinations
from db.outbox import Approval, enqueue, list_deliveries, retry_failed
from db.tables import ChannelDeliveryRow
from serving.channels.breaker import CircuitBreaker
from serving.channels.worker import DeliveryWorker
from tests.channel_servers import (
    BigCommerceServer,
    ChannelServer,
    CommercetoolsServer,
    ShopifyServer,
)
from tests.conftest import write_csv

ITEMS = [f"i{number:03d}" for number in range(60)]
CREDENTIALS = {"TEST_SHOPIFY_TOKEN": "shpat_test", "TEST_BC_TOKEN": "bc_test",
               "TEST_CT_ID": "ct-client", "TEST_CT_SECRET": "ct-secret"}
FAST_RETRY_ATTEMPTS = 4  # the default attempts_per_call
FAST_RETRY = {"backoff_initial_seconds": 0.5, "backoff_max_seconds": 5,
              "redelivery_max_seconds": 30, "max_delivery_attempts": 50}


class FakeClock:
    """Real time plus an offset that `sleep` advances at once (thread-safe)."""

    def __init__(self) -> None:
        self.offset = 0.0
        self.slept: list[float] = []
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        return time.monotonic() + self.offset

    def now(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self.offset)

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.offset += max(seconds, 0.0)
            self.slept.append(seconds)


@dataclass
class Shop:
    """Three channels served locally, their config, and where each item lives on each."""

    servers: dict[str, ChannelServer]
    ids: dict[tuple[str, str], tuple[str, str]]  # (item, channel) -> (product, variant)
    config: Path
    clock: FakeClock

    def price(self, item_id: str, channel: str) -> float | None:
        return self.servers[channel].price(*self.ids[item_id, channel])


def _layout() -> dict[tuple[str, str], tuple[str, str]]:
    """Shopify: three variants per product; BigCommerce: one per product; commercetools:
    two per product (master variant 1, variant 2)."""
    ids = {}
    for number, item in enumerate(ITEMS):
        ids[item, "shopify"] = (str(7000 + number // 3), str(41000 + number))
        ids[item, "bigcommerce"] = (str(100 + number), str(300 + number))
        ids[item, "marketplace"] = (f"prod-{number // 2}", str(number % 2 + 1))
    return ids


@pytest.fixture
def shop(tmp_path, monkeypatch) -> Iterator[Shop]:
    clock = FakeClock()
    ids = _layout()
    catalogs = {channel: [(*ids[item, channel], 10.0) for item in ITEMS]
                for channel in ("shopify", "bigcommerce", "marketplace")}
    servers: dict[str, ChannelServer] = {
        "shopify": ShopifyServer(catalogs["shopify"], clock=clock.monotonic, seed=1),
        "bigcommerce": BigCommerceServer(catalogs["bigcommerce"], clock=clock.monotonic,
                                         seed=2),
        "marketplace": CommercetoolsServer(catalogs["marketplace"], clock=clock.monotonic,
                                           seed=3)}
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    for server in servers.values():
        server.start()
    try:
        write_csv(tmp_path / "items.csv", [
            {"item_id": item, "channel": channel, "product_id": product, "variant_id": variant}
            for (item, channel), (product, variant) in ids.items()])
        common = {"timeout_seconds": 2, "retry": FAST_RETRY}
        config = {"item_mapping": "items.csv", "channels": {
            "shopify": {"connector": "shopify", "base_url": servers["shopify"].url,
                        "access_token_env": "TEST_SHOPIFY_TOKEN", **common},
            "bigcommerce": {"connector": "bigcommerce", "base_url": servers["bigcommerce"].url,
                            "access_token_env": "TEST_BC_TOKEN", "batch_size": 20, **common},
            "marketplace": {"connector": "commercetools",
                            "base_url": servers["marketplace"].url,
                            "auth_url": servers["marketplace"].url,  # type: ignore[attr-defined]
                            "project_key": "pattern-shop", "client_id_env": "TEST_CT_ID",
                            "client_secret_env": "TEST_CT_SECRET", **common},
            "web": {"connector": "price_feed", "path": "feeds/web.json"}}}
        (tmp_path / "channels.yaml").write_text(yaml.safe_dump(config))
        yield Shop(servers, ids, tmp_path / "channels.yaml", clock)
    finally:
        for server in servers.values():
            server.close()


@pytest.fixture
def database(empty_database) -> Engine:
    migrate(empty_database)
    return empty_database


def approve(engine: Engine, prices: dict[tuple[str, str], float], at: datetime,
            actor: str = "alice") -> None:
    """Approvals of `prices` by item x channel, written as the review writes them."""
    with Session(engine) as session, session.begin():
        enqueue(session, [Approval(number, item, channel, price)
                          for number, ((item, channel), price) in enumerate(prices.items())],
                actor, at)


def deliver_all(worker: DeliveryWorker, engine: Engine, clock: FakeClock,
                rounds: int = 300) -> None:
    """Run the worker until no change is pending, letting time pass between rounds."""
    for _ in range(rounds):
        worker.run(lambda: False, until_idle=True)
        if not list_deliveries(engine, status="pending", limit=1):
            return
        clock.sleep(5.0)
    raise AssertionError(f"changes still pending after {rounds} rounds: "
                         f"{list_deliveries(engine, status='pending', limit=5)}")


def statuses(engine: Engine) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in list_deliveries(engine):
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    return counts


SAAS = ("shopify", "bigcommerce", "marketplace")


def test_every_connector_sets_every_approved_price(shop, database):
    prices = {(item, channel): 11.0 + number / 100 for number, item in enumerate(ITEMS)
              for channel in (*SAAS, "web")}
    approve(database, prices, shop.clock.now())

    with DeliveryWorker(database, load_destinations(shop.config), shop.clock) as worker:
        deliver_all(worker, database, shop.clock)

    for (item, channel), price in prices.items():
        if channel != "web":
            assert shop.price(item, channel) == pytest.approx(price), (item, channel)
    feed = (shop.config.parent / "feeds/web.json").read_text()
    assert '"i059": 11.59' in feed
    assert statuses(database) == {"delivered": len(prices)}
    calls = {name: server.requests for name, server in shop.servers.items()}
    assert calls["shopify"] == len(ITEMS) // 3  # one call per product of three variants
    assert calls["bigcommerce"] == len(ITEMS) // 20  # batches of 20
    assert calls["marketplace"] <= 1 + 2 * len(ITEMS) // 2  # token, then read + update


def test_faults_lose_nothing_and_the_latest_approval_wins(shop, database):
    """30% server errors (half after applying), slow answers beyond the timeout, tight rate
    limits, one channel down for a while, commercetools conflicts; approvals arriving while
    older ones are in flight."""
    for server in shop.servers.values():
        server.error_rate, server.error_after_apply_share = 0.3, 0.5
        server.timeout_rate, server.timeout_seconds = 0.03, 2.5
    shopify, bigcommerce, marketplace = (shop.servers[name] for name in SAAS)
    shopify.max_available, shopify.restore_rate = 40.0, 5.0  # type: ignore[attr-defined]
    bigcommerce.quota, bigcommerce.window_ms = 3, 2000  # type: ignore[attr-defined]
    marketplace.conflict_rate = 0.3  # type: ignore[attr-defined]
    marketplace.down = True
    first = {(item, channel): 20.0 for item in ITEMS for channel in SAAS}
    approve(database, first, shop.clock.now())
    destinations = load_destinations(shop.config)

    with DeliveryWorker(database, destinations, shop.clock, seed=7) as worker:
        worker.lanes["shopify"].step()
        worker.lanes["bigcommerce"].step()
        second = {(item, channel): 25.0 + ITEMS.index(item) / 100
                  for item in ITEMS[::2] for channel in SAAS}
        approve(database, second, shop.clock.now(), actor="bob")
        worker.run(lambda: False, until_idle=True)
        marketplace.down = False
        deliver_all(worker, database, shop.clock)

    latest = first | second
    for (item, channel), price in latest.items():
        assert shop.price(item, channel) == pytest.approx(price), (item, channel)
    for server in shop.servers.values():  # once the newest price landed, nothing older did
        last_seen: dict[tuple[str, str], list[float]] = {}
        for product, variant, price in server.history:
            last_seen.setdefault((product, variant), []).append(price)
        for writes in last_seen.values():
            newest = writes[-1]
            assert all(price == newest for price in writes[writes.index(newest):])
    counts = statuses(database)  # first-round changes delivered before the second came stay so
    assert set(counts) == {"delivered", "superseded"}
    assert counts["delivered"] + counts["superseded"] == len(first) + len(second)
    assert counts["delivered"] >= len(latest)
    assert worker.lanes["marketplace"].breaker.openings >= 1
    assert sum(shop.clock.slept) > 0  # waits ran on the injected clock


def test_a_channel_down_does_not_delay_the_others(shop, database):
    shop.servers["shopify"].down = True
    approve(database, {(item, channel): 12.0 for item in ITEMS for channel in SAAS},
            shop.clock.now())

    with DeliveryWorker(database, load_destinations(shop.config), shop.clock) as worker:
        reports = worker.run(lambda: False, until_idle=True)

    assert reports["bigcommerce"].delivered == reports["marketplace"].delivered == len(ITEMS)
    assert reports["shopify"].delivered == 0
    breaker = worker.lanes["shopify"].breaker
    assert breaker.state == "open"
    tries = breaker.settings.failure_threshold * FAST_RETRY_ATTEMPTS  # calls x retries each
    assert shop.servers["shopify"].requests == tries  # then it stopped calling


def test_the_breaker_lets_one_trial_through_after_open_seconds(shop, database):
    shopify = shop.servers["shopify"]
    shopify.down = True
    approve(database, {(item, "shopify"): 12.0 for item in ITEMS}, shop.clock.now())
    with DeliveryWorker(database, load_destinations(shop.config), shop.clock,
                        channels=["shopify"]) as worker:
        lane = worker.lanes["shopify"]
        worker.run(lambda: False, until_idle=True)
        opened = shopify.requests
        assert lane.breaker.state == "open" and lane.step() == 0
        assert shopify.requests == opened  # open: no call

        shop.clock.sleep(lane.breaker.settings.open_seconds)
        assert lane.step() == 1  # half-open: a trial call of one change, which fails
        assert shopify.requests == opened + FAST_RETRY_ATTEMPTS
        assert lane.breaker.state == "open"

        shopify.down = False
        shop.clock.sleep(lane.breaker.settings.open_seconds)
        assert lane.step() == 1 and lane.breaker.state == "closed"
        deliver_all(worker, database, shop.clock)
    assert all(shop.price(item, "shopify") == 12.0 for item in ITEMS)


def test_retries_back_off_exponentially_with_jitter_on_the_injected_clock(shop, database):
    bigcommerce = shop.servers["bigcommerce"]
    bigcommerce.error_rate, bigcommerce.error_after_apply_share = 1.0, 0.0
    approve(database, {("i000", "bigcommerce"): 9.0}, shop.clock.now())
    started = time.monotonic()
    with DeliveryWorker(database, load_destinations(shop.config), shop.clock,
                        channels=["bigcommerce"]) as worker:
        worker.run(lambda: False, until_idle=True)

    waits = shop.clock.slept
    assert len(waits) == 3  # between the 4 attempts of one call
    for number, wait in enumerate(waits):  # full jitter: up to 0.5 * 2**n seconds
        assert 0 <= wait <= min(5.0, 0.5 * 2 ** (number + 1))
    assert time.monotonic() - started < 5  # nothing slept for real
    [row] = list_deliveries(database)
    assert row["status"] == "pending" and row["attempts"] == 1
    assert "HTTP 5" in row["last_error"] and row["next_attempt_at"] > shop.clock.now()


def test_rate_limits_are_waited_out_not_failed(shop, database):
    shopify, bigcommerce = shop.servers["shopify"], shop.servers["bigcommerce"]
    shopify.drain_bucket()  # type: ignore[attr-defined]
    bigcommerce.quota = 1  # type: ignore[attr-defined]
    approve(database, {(item, channel): 13.0 for item in ITEMS[:45]
                       for channel in ("shopify", "bigcommerce")}, shop.clock.now())
    with DeliveryWorker(database, load_destinations(shop.config), shop.clock,
                        channels=["shopify", "bigcommerce"]) as worker:
        reports = worker.run(lambda: False, until_idle=True)

    assert reports["shopify"].delivered == reports["bigcommerce"].delivered == 45
    assert reports["shopify"].throttled_seconds > 0  # waited for the bucket to refill
    assert reports["bigcommerce"].throttled_seconds >= 2 * 25  # 3 calls, one per 30 s window
    assert statuses(database) == {"delivered": 90}


def test_a_refused_change_is_a_dead_letter_and_its_product_siblings_still_land(shop, database,
                                                                                 tmp_path):
    mapping = tmp_path / "items.csv"
    text = mapping.read_text().replace("i001,shopify,7000,41001", "i001,shopify,7000,49999")
    mapping.write_text(text)
    approve(database, {(item, "shopify"): 14.0 for item in ITEMS[:3]}, shop.clock.now())

    with DeliveryWorker(database, load_destinations(shop.config), shop.clock,
                        channels=["shopify"]) as worker:
        worker.run(lambda: False, until_idle=True)

    rows = {row["item_id"]: row for row in list_deliveries(database)}
    assert rows["i001"]["status"] == "failed"
    assert "PRODUCT_VARIANT_DOES_NOT_EXIST" in rows["i001"]["last_error"]
    assert rows["i000"]["status"] == rows["i002"]["status"] == "delivered"
    assert shop.price("i000", "shopify") == shop.price("i002", "shopify") == 14.0


def test_a_dead_letter_retried_by_hand_is_delivered(shop, database):
    marketplace = shop.servers["marketplace"]
    marketplace.down = True
    approve(database, {("i004", "marketplace"): 15.5}, shop.clock.now())
    with DeliveryWorker(database, load_destinations(shop.config), shop.clock,
                        channels=["marketplace"]) as worker:
        deliver_all(worker, database, shop.clock)  # until the retry budget is spent
        [dead] = list_deliveries(database, status="failed")
        assert "HTTP 503" in dead["last_error"] and dead["attempts"] == 50

        marketplace.down = False
        retried = retry_failed(database, dead["id"], "alice", shop.clock.now())
        assert retried["status"] == "pending" and retried["attempts"] == 0
        assert retried["retried_by"] == "alice"
        deliver_all(worker, database, shop.clock)
    assert shop.price("i004", "marketplace") == 15.5
    assert list_deliveries(database)[0]["status"] == "delivered"


def test_two_workers_at_once_never_send_one_change_twice(shop, database):
    approve(database, {(item, channel): 16.0 for item in ITEMS for channel in SAAS},
            shop.clock.now())
    destinations = load_destinations(shop.config)
    workers = [DeliveryWorker(database, destinations, shop.clock) for _ in range(2)]
    threads = [threading.Thread(target=worker.run, args=(lambda: False, True))
               for worker in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for worker in workers:
        worker.close()

    assert statuses(database) == {"delivered": 3 * len(ITEMS)}
    for channel in SAAS:
        assert shop.servers[channel].applied == len(ITEMS), channel  # each change sent once
    with Session(database) as session:
        assert not session.scalars(select(ChannelDeliveryRow.id).where(
            ChannelDeliveryRow.lease_until.is_not(None))).all()


def _push(shop: Shop, engine: Engine, *options: str) -> subprocess.Popen:
    """`tailor channels push` in its own process, on the shop's config and `engine`'s
    database, claims lasting 2 s."""
    env = {**os.environ, **CREDENTIALS,
           "TAILOR_DATABASE_URL": engine.url.render_as_string(hide_password=False),
           "TAILOR_DATA_DIR": str(shop.config.parent / "data")}
    command = [str(Path(sys.executable).parent / "tailor"), "channels", "push", "--config",
               str(shop.config), "--channel", "shopify", "--lease-seconds", "2", *options]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def test_a_worker_killed_mid_batch_and_restarted_delivers_everything_once_right(shop,
                                                                                database):
    shopify = shop.servers["shopify"]
    shopify.clock = time.monotonic  # a real process: the real clock
    shopify.timeout_rate, shopify.timeout_seconds = 1.0, 0.15  # every call takes a while
    shopify.error_after_apply_share = 0.5  # half of them applied before the delay
    prices = {(item, "shopify"): 17.0 + ITEMS.index(item) / 100 for item in ITEMS}
    approve(database, prices, datetime.now(UTC))

    worker = _push(shop, database, "--loop")
    deadline = time.monotonic() + 60
    while shopify.applied < len(ITEMS) // 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    worker.send_signal(signal.SIGKILL)  # in the middle of its batch of 20 product calls
    worker.wait()
    assert 0 < shopify.applied < len(ITEMS), "the kill came too early or too late"
    pending = list_deliveries(database, status="pending")
    assert pending and any(row["lease_until"] is not None for row in pending)

    time.sleep(2.2)  # the dead worker's claims run out
    restarted = _push(shop, database)
    output, _ = restarted.communicate(timeout=120)
    assert restarted.returncode == 0, output

    assert statuses(database) == {"delivered": len(ITEMS)}
    for (item, channel), price in prices.items():
        assert shop.price(item, channel) == pytest.approx(price)
    writes = [(product, variant) for product, variant, _ in shopify.history]
    assert len(writes) - len(set(writes)) <= len(pending)  # only unacknowledged ones re-sent


def test_slow_calls_open_the_breaker_and_a_good_trial_closes_it():
    clock = FakeClock()
    breaker = CircuitBreaker(BreakerSettings(failure_threshold=3, slow_call_seconds=2.0,
                                             open_seconds=30.0), clock)
    for _ in range(2):
        breaker.record(ok=True, seconds=2.5)  # succeeded, but too slowly
    assert breaker.state == "closed" and breaker.allow()
    breaker.record(ok=True, seconds=0.1)  # a fast success resets the count
    for _ in range(3):
        breaker.record(ok=True, seconds=2.5)
    assert breaker.state == "open" and not breaker.allow()
    assert breaker.retry_in() == pytest.approx(30.0, abs=0.5)

    clock.sleep(30.0)
    assert breaker.allow() and breaker.state == "half_open"
    breaker.record(ok=True, seconds=0.1)
    assert breaker.state == "closed" and breaker.openings == 1
