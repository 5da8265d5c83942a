"""Delivery of approved prices to the sales channels (#16): changes per second per channel with
batching, with and without faults, and the time a channel that comes back needs to drain a
backlog of 10,000 changes; SQLite (a temporary file) and PostgreSQL (a fresh schema).

The delivery worker (`serving.channels.worker.DeliveryWorker`, one thread per channel) runs on
the real clock (real sleeps for backoff, the breaker and polling) against the local servers of
`tests.channel_servers`, which follow each channel's documented contract: Shopify
(`productVariantsBulkUpdate`, one product of five variants per call), BigCommerce (batch
variant update, 50 variants per call) and commercetools (update actions, one product of two
variants per call, after a read of the product). Every change is an outbox row written as an
approval writes it (`db.outbox.enqueue`) on a fresh database, whose planner statistics are
those of a table just filled (no ANALYZE: a burst of approvals).

1. Clean throughput: 2,000 changes per channel, the three channels draining at once in one
   worker; a channel's rate is its changes over the wall time of its lane, start to last
   acknowledgement (median of 3 repeats). Baseline in the same run: batch size 1 (one change
   per claim, per call and per acknowledgement) on 120 changes per channel, also the median
   of 3. The servers' rate limits are set out of the way (Shopify's bucket and restore rate,
   BigCommerce's quota: 10^9), so this measures the worker, the database and the HTTP round
   trips, not the channels' quotas. Real channels cap lower: Shopify's GraphQL Admin API
   restores 100 points/s on Standard plans (50 in older documentation), 200 on Advanced,
   1,000 on Plus, and a call costs 10 points; BigCommerce allows 150 requests per 30 s
   (Standard, Plus), 450 on Pro; commercetools publishes no request rate limit for its HTTP
   API. The caps these put on each channel with our batching (Shopify: restore rate / 10
   calls/s x 5 variants per call; BigCommerce: quota / 30 s x 50) are printed beside the
   measurements.
2. With faults: on every server 30% of the requests get a 5xx (half after the change was
   applied) and 2% are answered 1.0 s late, beyond a 0.5 s client timeout; commercetools
   also bumps the product's version before 20% of the updates (409 conflicts). Retries with
   short backoff (0.05 s first, 0.5 s at most within a call, redeliveries after at most 1 s,
   100 attempts before a dead letter), a breaker open for 1 s. 1,000 changes on Shopify and
   BigCommerce, 250 on commercetools (its breaker keeps opening under this fault rate: see
   the results). Checked afterwards, failing loudly otherwise: every channel holds the
   approved price of every item, and every change is delivered (no dead letter).
3. Drain after an outage: 10,000 changes of one channel (BigCommerce, then Shopify) queued
   while its server answers 503 and the worker runs (its calls fail, the breaker opens);
   then the server comes back: the time from "up" until the last change is acknowledged
   (the worker loop with `until_idle=False`, stopped once the lane has delivered them all).
   The breaker's `open_seconds` (1 s here, 30 s by default) can delay the first call after
   "up" by up to that much, as can the lane's 1 s poll: the time to the first delivered
   change is reported apart.

Targets (ours, the issue names none): a clean lane at least as fast as its channel's
documented limits allow on a Standard plan (so the channel's quota, not the worker, bounds
real delivery); faults lose nothing; a 10,000-change backlog drained in under 60 s with the
limits out of the way.

Caveats: the servers (the load) run in this process, sharing the machine's 2 cores and the
GIL with the worker and its database driver; HTTP is over loopback. Each lane's wall time is
split into claims (`outbox.claim`), calls (`connector.send`: HTTP and the server's work),
acknowledgements (`outbox.settle`) and the rest (backoff, throttle, breaker and poll waits).

Writes `benchmarks/results/delivery.json` and `.md`.
Run from the repository root: python -m benchmarks.delivery [--quick] [--repeats 3]
[--changes 2000] [--baseline-changes 120] [--fault-changes 1000]
[--fault-changes-commercetools 250] [--backlog 10000] [--stores sqlite,postgresql]
"""

import argparse
import csv
import json
import logging
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from benchmarks.common import RESULTS_DIR, postgres_schema, provenance
from db import engine_for, migrate
from db.channels import load_destinations
from db.outbox import Approval, enqueue, status_counts
from serving.channels.worker import ChannelLane, DeliveryWorker
from tests.channel_servers import (
    BigCommerceServer,
    ChannelServer,
    CommercetoolsServer,
    ShopifyServer,
)

RESULTS = RESULTS_DIR / "delivery.json"
MARKDOWN = RESULTS_DIR / "delivery.md"
CHANNELS = ("shopify", "bigcommerce", "commercetools")
SHOPIFY_VARIANTS = 5  # variants per Shopify product (sizes of a pattern): changes per call
CT_VARIANTS = 2  # variants per commercetools product
BATCH = {"shopify": 250, "bigcommerce": 50, "commercetools": 100}  # claim sizes (per call:
# Shopify and commercetools send one product per call, BigCommerce up to 50 variants)
CREDENTIALS = {"BENCH_SHOPIFY_TOKEN": "shpat_test", "BENCH_BC_TOKEN": "bc_test",
               "BENCH_CT_ID": "ct-client", "BENCH_CT_SECRET": "ct-secret"}
RETRY = {"backoff_initial_seconds": 0.05, "backoff_max_seconds": 0.5,
         "redelivery_max_seconds": 1, "max_delivery_attempts": 100}
BREAKER = {"open_seconds": 1}
FAULTS = {"error_rate": 0.3, "error_after_apply_share": 0.5, "timeout_rate": 0.02,
          "timeout_seconds": 1.0}
CLIENT_TIMEOUT_FAULTS = 0.5
CONFLICT_RATE = 0.2
UNLIMITED = 10 ** 9
OUTAGE_SECONDS = 2.0  # how long the channel is down while the worker runs, before "up"
LIMIT_SECONDS = 600.0  # a run taking longer than this fails
TARGET_DRAIN_SECONDS = 60.0

# The channels' documented rate limits (see the module docstring).
SHOPIFY_CALL_POINTS = 10
SHOPIFY_RESTORE = {"Standard (older docs)": 50, "Standard": 100, "Advanced": 200, "Plus": 1000}
BIGCOMMERCE_QUOTA = {"Standard, Plus": (150, 30), "Pro": (450, 30)}
STANDARD_PLAN = {"shopify": "Standard", "bigcommerce": "Standard, Plus"}

console = Console(width=int(os.environ.get("COLUMNS", "200")))


@dataclass
class Shop:
    """The channels served locally, their config, and where each item lives on each."""

    servers: dict[str, ChannelServer]
    ids: dict[tuple[str, str], tuple[str, str]]  # (item, channel) -> (product, variant)
    config: Path


def items(count: int) -> list[str]:
    return [f"i{number:06d}" for number in range(count)]


def layout(item_ids: Sequence[str], channels: Sequence[str]
           ) -> dict[tuple[str, str], tuple[str, str]]:
    """Shopify: five variants per product; BigCommerce: one; commercetools: two (variant ids
    1 and 2, the first the master variant)."""
    ids = {}
    for number, item in enumerate(item_ids):
        places = {"shopify": (str(7_000_000 + number // SHOPIFY_VARIANTS),
                              str(41_000_000 + number)),
                  "bigcommerce": (str(100_000 + number), str(300_000 + number)),
                  "commercetools": (f"prod-{number // CT_VARIANTS}",
                                    str(number % CT_VARIANTS + 1))}
        for channel in channels:
            ids[item, channel] = places[channel]
    return ids


def make_server(channel: str, catalog: list[tuple[str, str, float]], seed: int,
                faults: bool) -> ChannelServer:
    server: ChannelServer
    if channel == "shopify":
        server = ShopifyServer(catalog, max_available=UNLIMITED, restore_rate=UNLIMITED,
                               seed=seed)
    elif channel == "bigcommerce":
        server = BigCommerceServer(catalog, quota=UNLIMITED, seed=seed)
    else:
        server = CommercetoolsServer(catalog, conflict_rate=CONFLICT_RATE if faults else 0.0,
                                     seed=seed)
    if faults:
        for name, value in FAULTS.items():
            setattr(server, name, value)
    return server


def connection(channel: str, server: ChannelServer) -> dict[str, str]:
    """The channels config fields pointing a connector at its local server."""
    if channel == "shopify":
        return {"connector": "shopify", "base_url": server.url,
                "access_token_env": "BENCH_SHOPIFY_TOKEN"}
    if channel == "bigcommerce":
        return {"connector": "bigcommerce", "base_url": server.url,
                "access_token_env": "BENCH_BC_TOKEN"}
    return {"connector": "commercetools", "base_url": server.url, "auth_url": server.origin,
            "project_key": "pattern-shop", "client_id_env": "BENCH_CT_ID",
            "client_secret_env": "BENCH_CT_SECRET"}


@contextmanager
def shop(folder: Path, item_ids: Sequence[str], channels: Sequence[str], *, batch_one: bool,
         faults: bool, seed: int) -> Iterator[Shop]:
    """Servers of `channels` holding every item at 10.00, with the config and item mapping
    that point the worker at them."""
    folder.mkdir(parents=True, exist_ok=True)
    ids = layout(item_ids, channels)
    servers = {channel: make_server(channel, [(*ids[item, channel], 10.0)
                                              for item in item_ids], seed + number, faults)
               for number, channel in enumerate(channels)}
    for server in servers.values():
        server.start()
    try:
        with open(folder / "items.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["item_id", "channel", "product_id", "variant_id"])
            writer.writerows((item, channel, product, variant)
                             for (item, channel), (product, variant) in ids.items())
        common = {"timeout_seconds": CLIENT_TIMEOUT_FAULTS if faults else 10.0,
                  "retry": RETRY, "breaker": BREAKER}
        config = {"item_mapping": "items.csv", "channels": {
            channel: {**connection(channel, servers[channel]), **common,
                      "batch_size": 1 if batch_one else BATCH[channel]}
            for channel in channels}}
        (folder / "channels.yaml").write_text(yaml.safe_dump(config))
        yield Shop(servers, ids, folder / "channels.yaml")
    finally:
        for server in servers.values():
            server.close()


@contextmanager
def database(kind: str, folder: Path) -> Iterator[Engine]:
    """A fresh, migrated service database: a SQLite file, or a PostgreSQL schema (dropped
    afterwards)."""
    if kind == "sqlite":
        folder.mkdir(parents=True, exist_ok=True)
        engine = engine_for(f"sqlite:///{folder / 'tailor.db'}")
        try:
            migrate(engine)
            yield engine
        finally:
            engine.dispose()
        return
    with postgres_schema("bench_delivery") as url:
        engine = engine_for(url)
        try:
            migrate(engine)
            yield engine
        finally:
            engine.dispose()


def approved_prices(item_ids: Sequence[str], channels: Sequence[str]
                    ) -> dict[tuple[str, str], float]:
    return {(item, channel): round(11.0 + (number * 7 + offset) % 900 / 100, 2)
            for number, item in enumerate(item_ids)
            for offset, channel in enumerate(channels)}


def approve(engine: Engine, prices: dict[tuple[str, str], float]) -> None:
    """The approvals of `prices`, written to the outbox as the review writes them."""
    with Session(engine) as session, session.begin():
        enqueue(session, [Approval(number, item, channel, price)
                          for number, ((item, channel), price) in enumerate(prices.items())],
                "bench", datetime.now(UTC))


def verify(engine: Engine, shop: Shop, prices: dict[tuple[str, str], float]) -> None:
    """Fail loudly unless every channel holds every approved price and the outbox holds
    only delivered changes."""
    wrong = [(item, channel, price, shop.servers[channel].price(*shop.ids[item, channel]))
             for (item, channel), price in prices.items()
             if shop.servers[channel].price(*shop.ids[item, channel]) != price]
    if wrong:
        raise SystemExit(f"{len(wrong)} prices differ from the approved ones, e.g. "
                         f"(item, channel, approved, on the channel): {wrong[:5]}")
    counts = status_counts(engine)
    expected: dict[tuple[str, str], int] = {}
    for _, channel in prices:
        expected[channel, "delivered"] = expected.get((channel, "delivered"), 0) + 1
    if counts != expected:
        raise SystemExit(f"outbox statuses {counts}, expected {expected} (dead letters or "
                         "changes left pending)")


@dataclass
class LaneTimes:
    """Where a lane's time went, seconds, and how often."""

    steps: float = 0.0  # lane.step: claim + deliver
    deliver: float = 0.0  # lane.deliver: calls, acknowledgements, backoff and throttle waits
    send: float = 0.0  # connector.send: HTTP (the server's work included)
    settle: float = 0.0  # outbox.settle
    claims: int = 0  # steps that claimed something
    empty_claims: int = 0
    settles: int = 0
    sends: int = 0
    failed_sends: int = 0  # attempts that raised (5xx, timeouts, throttled, ...)

    def minus(self, other: "LaneTimes") -> "LaneTimes":
        return LaneTimes(**{name: value - getattr(other, name)
                            for name, value in asdict(self).items()})


def instrument(lane: ChannelLane, after_step: Callable[[], None]) -> LaneTimes:
    """Time the lane's steps, deliveries, calls and acknowledgements (wrappers set on the
    lane and connector objects of this process; the worker's code is unchanged), calling
    `after_step` in the lane's thread after each step."""
    times = LaneTimes()
    step, deliver, settle, send = (lane.step, lane.deliver, lane._settle,
                                   lane.connector.send)
    sending = [0]  # a connector's send may call itself (a split batch): time the outer one

    def timed_step() -> int:
        started = time.perf_counter()
        claimed = step()
        times.steps += time.perf_counter() - started
        if claimed:
            times.claims += 1
        else:
            times.empty_claims += 1
        after_step()
        return claimed

    def timed_deliver(*args: Any) -> None:
        started = time.perf_counter()
        try:
            deliver(*args)
        finally:
            times.deliver += time.perf_counter() - started

    def timed_settle(*args: Any) -> None:
        started = time.perf_counter()
        try:
            settle(*args)
        finally:
            times.settle += time.perf_counter() - started
            times.settles += 1

    def timed_send(*args: Any) -> Any:
        sending[0] += 1
        started = time.perf_counter()
        try:
            return send(*args)
        except Exception:
            if sending[0] == 1:
                times.failed_sends += 1
            raise
        finally:
            sending[0] -= 1
            if not sending[0]:
                times.send += time.perf_counter() - started
                times.sends += 1

    setattr(lane, "step", timed_step)  # noqa: B010 - instance attributes, not methods
    setattr(lane, "deliver", timed_deliver)  # noqa: B010
    setattr(lane, "_settle", timed_settle)  # noqa: B010
    setattr(lane.connector, "send", timed_send)  # noqa: B010
    return times


def lane_row(lane: ChannelLane, times: LaneTimes, wall: float, changes: int,
             requests: int) -> dict[str, Any]:
    """A lane's rate, calls and where its wall time went."""
    report = lane.report
    claim = times.steps - times.deliver
    rest = wall - claim - times.send - times.settle
    return {
        "changes": changes, "delivered": report.delivered, "seconds": wall,
        "per_second": report.delivered / wall if wall else 0.0,
        "calls": times.sends, "failed_calls": times.failed_sends, "http_requests": requests,
        "changes_per_call": report.delivered / max(times.sends, 1),
        "retried_changes": report.retrying, "dead_letters": report.failed,
        "released": report.released, "breaker_openings": lane.breaker.openings,
        "throttled_seconds": report.throttled_seconds, "claims": times.claims,
        "empty_claims": times.empty_claims, "settles": times.settles,
        "time_split_seconds": {"claim": claim, "http": times.send, "settle": times.settle,
                               "waits_and_rest": rest},
        "ms_per_call": 1000 * times.send / max(times.sends, 1),
        "ms_per_claim": 1000 * claim / max(times.claims + times.empty_claims, 1),
        "ms_per_settle": 1000 * times.settle / max(times.settles, 1),
    }


def deliver(engine: Engine, shop: Shop, expected: dict[str, int], seed: int
            ) -> dict[str, dict[str, Any]]:
    """Run one worker over the channels of `shop` until each lane has delivered its
    `expected` changes; a lane's figures are taken when its last change is acknowledged
    (its wall time runs from the start to then)."""
    destinations = load_destinations(shop.config)
    rows: dict[str, dict[str, Any]] = {}
    with DeliveryWorker(engine, destinations, seed=seed) as worker:
        times: dict[str, LaneTimes] = {}

        def finisher(name: str, lane: ChannelLane) -> Callable[[], None]:
            def after_step() -> None:  # in the lane's thread
                if name not in rows and lane.report.delivered >= expected[name]:
                    rows[name] = lane_row(lane, times[name], time.perf_counter() - started,
                                          expected[name], shop.servers[name].requests)
            return after_step

        for name, lane in worker.lanes.items():
            times[name] = instrument(lane, finisher(name, lane))
        started = time.perf_counter()

        def stop() -> bool:  # called by every lane between its steps
            return (len(rows) == len(worker.lanes)
                    or time.perf_counter() - started > LIMIT_SECONDS)

        worker.run(stop, until_idle=False)
        if len(rows) < len(worker.lanes):
            raise SystemExit(f"not delivered within {LIMIT_SECONDS:g} s: "
                             f"{ {n: lane.report for n, lane in worker.lanes.items()} }")
    return rows


def throughput(kind: str, work: Path, counts: dict[str, int], *, batch_one: bool,
               faults: bool, seed: int) -> dict[str, dict[str, Any]]:
    """`counts[channel]` changes per channel, the three channels at once."""
    item_ids = items(max(counts.values()))
    label = f"{'faults' if faults else 'clean'}-{'b1' if batch_one else 'batched'}-{seed}"
    with database(kind, work / kind / label) as engine, \
            shop(work / kind / label, item_ids, CHANNELS, batch_one=batch_one, faults=faults,
                 seed=seed) as channels:
        prices = {(item, channel): price
                  for (item, channel), price in approved_prices(item_ids, CHANNELS).items()
                  if int(item[1:]) < counts[channel]}
        approve(engine, prices)
        rows = deliver(engine, channels, counts, seed)
        verify(engine, channels, prices)
    return rows


def drain(kind: str, work: Path, channel: str, backlog: int, seed: int) -> dict[str, Any]:
    """`backlog` changes of `channel` queued while it is down (the worker running); the time
    from its coming back to the last change acknowledged."""
    item_ids = items(backlog)
    with database(kind, work / kind / f"drain-{channel}") as engine, \
            shop(work / kind / f"drain-{channel}", item_ids, [channel], batch_one=False,
                 faults=False, seed=seed) as channels:
        server = channels.servers[channel]
        server.down = True
        prices = approved_prices(item_ids, [channel])
        approve(engine, prices)
        destinations = load_destinations(channels.config)
        marks: dict[str, float] = {}
        rows: list[dict[str, Any]] = []
        with DeliveryWorker(engine, destinations, seed=seed) as worker:
            lane = worker.lanes[channel]

            def after_step() -> None:  # in the lane's thread
                if "up" not in marks or rows:
                    return
                elapsed = time.perf_counter() - marks["up"]
                if "first" not in marks and lane.report.delivered:
                    marks["first"] = elapsed
                if lane.report.delivered >= backlog:
                    rows.append(lane_row(lane, times.minus(before), elapsed, backlog,
                                         server.requests - requests_down))

            times = instrument(lane, after_step)
            before = LaneTimes()
            requests_down = 0

            def stop() -> bool:
                return bool(rows) or ("up" in marks and time.perf_counter() - marks["up"]
                                      > LIMIT_SECONDS)

            thread = threading.Thread(target=worker.run, args=(stop, False), daemon=True)
            thread.start()
            time.sleep(OUTAGE_SECONDS)
            requests_down = server.requests
            down = {"calls": times.sends, "http_requests": requests_down,
                    "breaker": lane.breaker.state, "breaker_openings": lane.breaker.openings,
                    "retried_changes": lane.report.retrying,
                    "released": lane.report.released}
            before = LaneTimes(**asdict(times))
            marks["up"] = time.perf_counter()
            server.down = False
            thread.join()
            if not rows:
                raise SystemExit(f"{channel}: backlog not drained in {LIMIT_SECONDS:g} s")
            row = rows[0]
        verify(engine, channels, prices)
    first, wall = marks["first"], row["seconds"]
    return {**row, "while_down": down, "first_delivery_after_up_seconds": first,
            "after_first_per_second": backlog / (wall - first) if wall > first else 0.0,
            "breaker_open_seconds": BREAKER["open_seconds"]}


def median_row(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median rate, with the rates of every run."""
    rates = [run["per_second"] for run in runs]
    middle = sorted(runs, key=lambda run: run["per_second"])[len(runs) // 2]
    return {**middle, "per_second_median": statistics.median(rates),
            "per_second_runs": rates}


def documented_caps() -> dict[str, dict[str, float]]:
    """Changes per second each channel's documented rate limits allow with our batching
    (sustained: the bucket's or window's first burst left out)."""
    return {"shopify": {plan: rate / SHOPIFY_CALL_POINTS * SHOPIFY_VARIANTS
                        for plan, rate in SHOPIFY_RESTORE.items()},
            "bigcommerce": {plan: requests / seconds * BATCH["bigcommerce"]
                            for plan, (requests, seconds) in BIGCOMMERCE_QUOTA.items()},
            "commercetools": {}}


def split_cell(row: dict[str, Any]) -> str:
    """Claim / HTTP / acknowledgement / the rest, % of the lane's wall time."""
    split = row["time_split_seconds"]
    total = row["seconds"] or 1.0
    return " / ".join(f"{100 * split[key] / total:.0f}"
                      for key in ("claim", "http", "settle", "waits_and_rest"))


class Report:
    """Rows printed as rich tables and kept as Markdown lines."""

    def __init__(self) -> None:
        self.tables: list[Table] = []
        self.markdown: list[str] = []

    def table(self, title: str, headers: list[str], rows: list[list[str]],
              labels: int = 2) -> None:
        table = Table(title=title)
        for number, header in enumerate(headers):
            table.add_column(header, justify="left" if number < labels else "right")
        for row in rows:
            table.add_row(*row)
        self.tables.append(table)
        self.markdown += [f"## {title}", "", "| " + " | ".join(headers) + " |",
                          "|" + "---|" * labels + "---:|" * (len(headers) - labels),
                          *["| " + " | ".join(row) + " |" for row in rows], ""]


def report(results: dict[str, Any], caps: dict[str, dict[str, float]]) -> Report:
    out = Report()
    rows = []
    for kind, lanes in results["clean"].items():
        for channel, row in lanes.items():
            base = results["baseline"][kind][channel]
            rows.append([
                kind, channel, f"{row['per_second_median']:,.0f}",
                " ".join(f"{rate:,.0f}" for rate in row["per_second_runs"]),
                f"{base['per_second_median']:,.0f}",
                f"{row['per_second_median'] / base['per_second_median']:.1f}x",
                f"{row['calls']:,}", f"{row['http_requests']:,}",
                f"{row['changes_per_call']:.1f}", f"{row['ms_per_claim']:.0f}",
                f"{row['ms_per_call']:.1f}",
                f"{row['ms_per_settle']:.1f}", split_cell(row),
                f"{base['ms_per_claim']:.0f} / {base['ms_per_call']:.1f} / "
                f"{base['ms_per_settle']:.1f}"])
    out.table("Clean throughput, three channels at once (changes/s of each lane)",
              ["store", "channel", "batched /s", "runs /s", "batch 1 /s", "gain", "calls",
               "HTTP requests", "changes/call", "ms/claim", "ms/call", "ms/ack",
               "claim/http/ack/rest %",
               "batch 1: ms claim/call/ack"], rows)

    rows = []
    for channel, plans in caps.items():
        for plan, cap in plans.items():
            measured = {kind: lanes[channel]["per_second_median"]
                        for kind, lanes in results["clean"].items()}
            rows.append([channel, plan, f"{cap:,.0f}", *[
                f"{rate / cap:.1f}x" for rate in measured.values()]])
        if not plans:
            rows.append([channel, "no request rate limit published", "-",
                         *["-" for _ in results["clean"]]])
    out.table("What the channels' documented rate limits allow (changes/s, our batching)",
              ["channel", "plan", "cap /s", *[f"{kind} measured / cap"
                                               for kind in results["clean"]]], rows)

    rows = []
    for kind, lanes in results["faults"].items():
        for channel, row in lanes.items():
            rows.append([kind, channel, f"{row['changes']:,}", f"{row['per_second']:,.0f}",
                         f"{row['seconds']:.1f}", f"{row['calls']:,}",
                         f"{row['failed_calls']:,}", f"{row['http_requests']:,}",
                         f"{row['retried_changes']:,}", str(row["breaker_openings"]),
                         split_cell(row), str(row["dead_letters"])])
    out.table("With faults: 30% 5xx, 2% timeouts, 20% commercetools conflicts",
              ["store", "channel", "changes", "/s", "seconds", "calls", "failed calls",
               "HTTP requests", "changes retried later", "breaker openings",
               "claim/http/ack/rest %", "dead letters"], rows)

    rows = []
    for kind, lanes in results["drain"].items():
        for channel, row in lanes.items():
            limited = " ".join(f"{row['changes'] / cap:,.0f}"
                               for cap in caps[channel].values())
            rows.append([kind, channel, f"{row['changes']:,}", f"{row['seconds']:.1f}",
                         f"{row['first_delivery_after_up_seconds']:.2f}",
                         f"{row['per_second']:,.0f}", f"{row['after_first_per_second']:,.0f}",
                         f"{row['calls']:,}", f"{row['ms_per_claim']:.0f}",
                         f"{row['ms_per_settle']:.1f}", split_cell(row), limited])
    out.table("Drain of a backlog once the channel is back (seconds from up)",
              ["store", "channel", "backlog", "seconds", "first delivery s", "/s",
               "/s after first", "calls", "ms/claim", "ms/ack", "claim/http/ack/rest %",
               "s at the caps (plans in order)"],
              rows)
    return out


def checks(results: dict[str, Any], caps: dict[str, dict[str, float]]) -> dict[str, Any]:
    """The targets: a clean lane at least as fast as its channel's limits allow on its
    standard plan; a backlog drained within TARGET_DRAIN_SECONDS."""
    found: dict[str, Any] = {}
    for kind, lanes in results["clean"].items():
        for channel, row in lanes.items():
            if caps[channel]:
                plan = STANDARD_PLAN[channel]
                found[f"{kind}, {channel}: clean /s over the {plan} cap"] = {
                    "value": row["per_second_median"] / caps[channel][plan],
                    "met": row["per_second_median"] >= caps[channel][plan]}
    for kind, lanes in results["drain"].items():
        for channel, row in lanes.items():
            found[f"{kind}, {channel}: drain seconds"] = {
                "value": row["seconds"], "met": row["seconds"] <= TARGET_DRAIN_SECONDS}
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 1 repeat, 300 changes per channel (60 at batch "
                             "size 1), 200 with faults (50 on commercetools), a backlog of "
                             "1,000")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--changes", type=int, default=2000)
    parser.add_argument("--baseline-changes", type=int, default=120)
    parser.add_argument("--fault-changes", type=int, default=1000)
    parser.add_argument("--fault-changes-commercetools", type=int, default=250)
    parser.add_argument("--backlog", type=int, default=10_000)
    parser.add_argument("--stores", default="sqlite,postgresql")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.changes, args.baseline_changes = 1, 300, 60
        args.fault_changes, args.fault_changes_commercetools, args.backlog = 200, 50, 1000
    stores = [kind.strip() for kind in args.stores.split(",") if kind.strip()]
    for name, value in CREDENTIALS.items():
        os.environ.setdefault(name, value)
    logging.getLogger("serving.channels").setLevel(logging.ERROR)  # retried failures: quiet
    fault_counts = {"shopify": args.fault_changes, "bigcommerce": args.fault_changes,
                    "commercetools": args.fault_changes_commercetools}
    began = time.perf_counter()
    results: dict[str, Any] = {"clean": {}, "baseline": {}, "faults": {}, "drain": {}}
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        for kind in stores:
            runs: dict[str, list[dict[str, Any]]] = {}
            base: dict[str, list[dict[str, Any]]] = {}
            for repeat in range(args.repeats):
                console.print(f"[bold]{kind}[/], clean, repeat {repeat + 1}: "
                              f"{args.changes:,} changes per channel, batched; "
                              f"{args.baseline_changes:,} at batch size 1")
                for channel, row in throughput(kind, work, dict.fromkeys(CHANNELS, args.changes),
                                               batch_one=False, faults=False,
                                               seed=repeat).items():
                    runs.setdefault(channel, []).append(row)
                for channel, row in throughput(kind, work,
                                               dict.fromkeys(CHANNELS, args.baseline_changes),
                                               batch_one=True, faults=False,
                                               seed=100 + repeat).items():
                    base.setdefault(channel, []).append(row)
            results["clean"][kind] = {name: median_row(runs[name]) for name in CHANNELS}
            results["baseline"][kind] = {name: median_row(base[name]) for name in CHANNELS}
            console.print(f"[bold]{kind}[/], faults: {fault_counts}")
            faulty = throughput(kind, work, fault_counts, batch_one=False, faults=True, seed=7)
            results["faults"][kind] = {name: faulty[name] for name in CHANNELS}
            results["drain"][kind] = {}
            for channel in ("bigcommerce", "shopify"):
                console.print(f"[bold]{kind}[/], drain: {args.backlog:,} {channel} changes "
                              f"queued during a {OUTAGE_SECONDS:g} s outage")
                results["drain"][kind][channel] = drain(kind, work, channel, args.backlog,
                                                        seed=11)
    runtime = time.perf_counter() - began
    caps = documented_caps()
    out = report(results, caps)
    for table in out.tables:
        console.print(table)
    found = checks(results, caps)
    for name, check in found.items():
        console.print(f"{name}: {check['value']:.2f} -> {'met' if check['met'] else 'MISSED'}")
    console.print(f"total runtime {runtime:.0f} s (imports and start-up not counted)")
    settings = {"repeats": args.repeats, "changes": args.changes,
                "baseline_changes": args.baseline_changes, "fault_changes": fault_counts,
                "backlog": args.backlog, "quick": args.quick, "stores": stores,
                "shopify_variants_per_product": SHOPIFY_VARIANTS,
                "commercetools_variants_per_product": CT_VARIANTS, "batch_sizes": BATCH,
                "retry": RETRY, "breaker": BREAKER, "server_faults": FAULTS,
                "client_timeout_seconds_with_faults": CLIENT_TIMEOUT_FAULTS,
                "commercetools_conflict_rate": CONFLICT_RATE,
                "outage_seconds": OUTAGE_SECONDS, "server_rate_limits": UNLIMITED}
    RESULTS.write_text(json.dumps({
        **provenance(), "runtime_seconds": runtime, "settings": settings,
        "documented_caps_per_second": caps,
        "documented_limits": {"shopify_restore_points_per_second": SHOPIFY_RESTORE,
                              "shopify_points_per_call": SHOPIFY_CALL_POINTS,
                              "bigcommerce_requests_per_window": BIGCOMMERCE_QUOTA},
        "targets": {"clean_at_least_the_standard_plan_cap": STANDARD_PLAN,
                    "drain_seconds": TARGET_DRAIN_SECONDS},
        "results": results, "checks": found}, indent=2) + "\n")
    MARKDOWN.write_text("\n".join([
        "# Delivery of approved prices to the channels", "",
        "Real clock; local servers following each channel's contract run in the benchmark's "
        f"process (sharing its {os.cpu_count()} cores and its GIL with the worker). Clean: "
        f"{args.changes:,} changes per channel, the three channels at once, median of "
        f"{args.repeats}; baseline batch size 1 on {args.baseline_changes:,}, also median of "
        f"{args.repeats}. The servers' rate limits are out of the way; the caps of the "
        "documented limits are computed. Faults: 30% 5xx (half after applying), 2% answers "
        f"1.0 s late against a {CLIENT_TIMEOUT_FAULTS:g} s client timeout, 20% commercetools "
        f"conflicts, on {fault_counts['shopify']:,} changes per channel "
        f"({fault_counts['commercetools']:,} on commercetools); every price checked "
        f"afterwards, no dead letter. Drain: {args.backlog:,} changes queued during a "
        f"{OUTAGE_SECONDS:g} s outage, timed from the server coming back (breaker "
        f"open_seconds {BREAKER['open_seconds']}). claim/http/ack/rest: % of the lane's wall "
        "time in claims, calls, acknowledgements and the rest (backoff, breaker and polling "
        f"waits). Total runtime {runtime:.0f} s.", "",
        *out.markdown,
        "| check | value | met |", "|---|---:|---|",
        *[f"| {name} | {check['value']:.2f} | {'yes' if check['met'] else 'no'} |"
          for name, check in found.items()], ""]))
    console.print(f"wrote {RESULTS} and {MARKDOWN}")


if __name__ == "__main__":
    main()
