"""The delivery worker: approved prices from the outbox to every sales channel.

One lane per channel, each in its own thread with its own connector and circuit breaker, so
one channel's outage or rate limit never delays another's deliveries. A lane claims a batch
of due changes (a lease in the database: several workers may run at once without sending
one change twice concurrently), resolves their product and variant ids in the item mapping,
lets the connector group them into calls, and sends each call:

- through the channel's circuit breaker, which counts each call once, after its retries
  (open: the rest of the batch is given back untried; half-open: a trial batch of one
  change);
- with retries (tenacity): transient failures wait with exponential backoff and full jitter,
  up to `attempts_per_call`; the channel's rate limit waits as long as it asks, up to
  `max_throttle_waits`;
- acknowledged every `ACK_EVERY` changes or `ACK_SECONDS` (`db.outbox.settle`):
  delivered, refused by the channel (a dead letter with its reason), or failed, retried later
  with backoff until the retry budget (`max_delivery_attempts`) makes it a dead letter.

A worker killed between a send and its acknowledgement leaves the lease to run out; the
change is then claimed again and re-sent, which is safe: a price update is idempotent.
"""

import logging
import os
import random
import socket
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import httpx
from sqlalchemy import Engine
from tenacity import RetryCallState, Retrying, retry_if_exception_type, wait_random_exponential

from db import outbox
from db.channels import (
    BigCommerceChannel,
    ChannelSettings,
    CommercetoolsChannel,
    Destinations,
    PriceFeedChannel,
    ShopifyChannel,
)
from db.outbox import Claimed, Outcome
from features.errors import InputError
from serving.channels.bigcommerce import BigCommerceConnector
from serving.channels.breaker import CircuitBreaker
from serving.channels.clock import Clock, SystemClock
from serving.channels.commercetools import CommercetoolsConnector
from serving.channels.connectors import (
    ChannelRefused,
    Connector,
    PriceChange,
    PriceFeedConnector,
    Throttled,
    TransientError,
)
from serving.channels.shopify import ShopifyConnector

logger = logging.getLogger(__name__)

LEASE_SECONDS = 120.0
POLL_SECONDS = 1.0
ACK_EVERY = 50
ACK_SECONDS = 1.0
"""Outcomes are acknowledged in the database every `ACK_EVERY` changes or `ACK_SECONDS`
(and at the end of a batch): a killed worker re-sends at most that much."""
ERROR_PAUSE_SECONDS = 5.0


def make_connector(settings: ChannelSettings, clock: Clock,
                   transport: httpx.BaseTransport | None = None) -> Connector:
    """The connector of a channel's settings (InputError when its credentials are unset)."""
    if isinstance(settings, ShopifyChannel):
        return ShopifyConnector(settings, clock, transport)
    if isinstance(settings, BigCommerceChannel):
        return BigCommerceConnector(settings, clock, transport)
    if isinstance(settings, CommercetoolsChannel):
        return CommercetoolsConnector(settings, clock, transport)
    assert isinstance(settings, PriceFeedChannel)
    return PriceFeedConnector(settings)


class CircuitOpen(Exception):
    """The channel's breaker is open: the call was not sent."""


@dataclass
class LaneReport:
    """What a lane did: changes delivered, refused (dead letters), failed and retrying."""

    delivered: int = 0
    failed: int = 0
    retrying: int = 0
    released: int = 0
    calls: int = 0
    throttled_seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    def add(self, counts: dict[str, int]) -> None:
        self.delivered += counts["delivered"]
        self.failed += counts["failed"]
        self.retrying += counts["retrying"]


class ChannelLane:
    """Delivers one channel's changes."""

    def __init__(self, engine: Engine, channel: str, destinations: Destinations,
                 connector: Connector, clock: Clock, worker_id: str,
                 lease_seconds: float = LEASE_SECONDS, rng: random.Random | None = None):
        self.engine = engine
        self.channel = channel
        self.settings = destinations.channels[channel]
        self.destinations = destinations
        self.connector = connector
        self.clock = clock
        self.worker_id = worker_id
        self.lease_seconds = lease_seconds
        self.rng = rng or random.Random()
        self.breaker = CircuitBreaker(self.settings.breaker, clock)
        self.report = LaneReport()

    def step(self) -> int:
        """Claim one batch of due changes and deliver it; returns how many were claimed (0:
        nothing due, or the breaker is open)."""
        if not self.breaker.allow():
            return 0
        size = 1 if self.breaker.state == "half_open" else self.settings.batch_size
        claimed = outbox.claim(self.engine, self.channel, self.worker_id, self.clock.now(),
                               self.lease_seconds, size)
        if claimed:
            self.deliver(claimed)
        return len(claimed)

    def deliver(self, claimed: Sequence[Claimed]) -> None:
        """Send claimed changes call by call, acknowledging outcomes every `ACK_EVERY`
        changes or `ACK_SECONDS`, and at the end."""
        changes, done = [], []
        for change in claimed:
            if problem := self.destinations.problem(change.item_id, self.channel):
                done.append(Outcome(change.id, error=problem, permanent=True))
            else:
                changes.append(PriceChange(change.id, change.item_id, change.price,
                                           self.destinations.target(change.item_id,
                                                                    self.channel)))
        calls = self.connector.plan(changes)
        held = {change.id for change in claimed}
        renewed_at = acked_at = self.clock.monotonic()
        for number, call in enumerate(calls):
            if self.clock.monotonic() - renewed_at > self.lease_seconds / 3:
                rest = [change.delivery_id for later in calls[number:] for change in later]
                held = outbox.renew(self.engine, rest, self.worker_id, self.clock.now(),
                                    self.lease_seconds)
                renewed_at = self.clock.monotonic()
            call = [change for change in call if change.delivery_id in held]
            if not call:  # its lease ran out: another worker may hold it now
                continue
            try:
                done += self._send(call)
            except CircuitOpen:
                rest = [change.delivery_id for later in calls[number:] for change in later]
                outbox.release(self.engine, rest, self.worker_id, self.clock.now())
                self.report.released += len(rest)
                break
            if len(done) >= ACK_EVERY or self.clock.monotonic() - acked_at > ACK_SECONDS:
                self._settle(done)
                done, acked_at = [], self.clock.monotonic()
        if done:
            self._settle(done)

    def _settle(self, outcomes: list[Outcome]) -> None:
        retry = self.settings.retry
        self.report.add(outbox.settle(
            self.engine, outcomes, self.worker_id, self.clock.now(),
            max_attempts=retry.max_delivery_attempts,
            initial_seconds=retry.backoff_initial_seconds,
            max_seconds=retry.redelivery_max_seconds, rng=self.rng))

    def _send(self, call: Sequence[PriceChange]) -> list[Outcome]:
        """One call through the breaker, with retries; the outcomes (failures included), or
        CircuitOpen when the breaker is open. The breaker counts the call once: failed when
        its retries ran out, slow when its successful attempt was."""
        if not self.breaker.allow():
            raise CircuitOpen(self.channel)
        retry = self.settings.retry
        failures = throttles = 0
        jitter = wait_random_exponential(multiplier=retry.backoff_initial_seconds,
                                         max=retry.backoff_max_seconds)

        def wait(state: RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome else None
            if isinstance(error, Throttled):
                self.report.throttled_seconds += error.seconds
                return error.seconds
            return float(jitter(state))

        def stop(_state: RetryCallState) -> bool:
            return failures >= retry.attempts_per_call or throttles >= retry.max_throttle_waits

        attempts = Retrying(sleep=self.clock.sleep, wait=wait, stop=stop, reraise=True,
                            retry=retry_if_exception_type((TransientError, Throttled)))
        try:
            for attempt in attempts:
                with attempt:
                    self.report.throttled_seconds += self.connector.pace()
                    started = self.clock.monotonic()
                    self.report.calls += 1
                    try:
                        outcomes = self.connector.send(call)
                    except Throttled:
                        throttles += 1
                        raise
                    except TransientError:
                        failures += 1
                        raise
                    self.breaker.record(ok=True, seconds=self.clock.monotonic() - started)
                    return outcomes
        except (TransientError, ChannelRefused, Throttled) as error:
            self.breaker.record(ok=False)
            self.report.errors.append(str(error))
            logger.warning("channel %s: %s", self.channel, error)
            return [Outcome(change.delivery_id, error=str(error)) for change in call]
        raise AssertionError("unreachable: tenacity returns or raises")

    def idle_seconds(self) -> float:
        """How long to wait when `step` claimed nothing: until the breaker's trial, else a
        poll interval."""
        return self.breaker.retry_in() or POLL_SECONDS


def worker_id() -> str:
    """This process's name in the claims it holds."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class DeliveryWorker:
    """A lane per configured channel, each in its own thread; close it (or use `with`) to
    release the connections."""

    def __init__(self, engine: Engine, destinations: Destinations, clock: Clock | None = None,
                 lease_seconds: float = LEASE_SECONDS, channels: Sequence[str] | None = None,
                 transport: httpx.BaseTransport | None = None, seed: int | None = None):
        self.engine = engine
        self.clock = clock or SystemClock()
        self.id = worker_id()
        self.lanes: dict[str, ChannelLane] = {}
        self.unavailable: dict[str, str] = {}
        names = list(destinations.channels) if channels is None else list(channels)
        for name in names:
            if name not in destinations.channels:
                raise InputError(f"channel '{name}' is not in the channels config "
                                 f"{destinations.config_path}")
            try:
                connector = make_connector(destinations.channels[name], self.clock, transport)
            except InputError as error:  # e.g. its credentials are not set: the others go on
                self.unavailable[name] = str(error)
                continue
            self.lanes[name] = ChannelLane(engine, name, destinations, connector, self.clock,
                                           self.id, lease_seconds, random.Random(seed))

    def __enter__(self) -> "DeliveryWorker":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every lane's connections."""
        for lane in self.lanes.values():
            lane.connector.close()

    def run(self, stop: Callable[[], bool], until_idle: bool = False) -> dict[str, LaneReport]:
        """Run every lane in its own thread until `stop()` is true or, with `until_idle`,
        until the lane has nothing due; returns each lane's report."""
        threads = [threading.Thread(target=self._run_lane, args=(lane, stop, until_idle),
                                    name=f"deliver-{name}", daemon=True)
                   for name, lane in self.lanes.items()]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return {name: lane.report for name, lane in self.lanes.items()}

    def _run_lane(self, lane: ChannelLane, stop: Callable[[], bool], until_idle: bool) -> None:
        try:
            while not stop():
                try:
                    if lane.step():
                        continue
                except Exception:  # e.g. the database is down: this lane waits, then goes on
                    if until_idle:
                        raise
                    logger.exception("channel %s: delivery step failed", lane.channel)
                    self.clock.sleep(ERROR_PAUSE_SECONDS)
                    continue
                if until_idle:
                    return
                self.clock.sleep(min(lane.idle_seconds(), POLL_SECONDS))
        except Exception as error:  # with until_idle: report it, the other lanes go on
            lane.report.errors.append(f"lane stopped: {error!r}")
