"""Channel connectors behind one interface: each turns price changes into calls of its
channel's API (`plan`) and sends one call (`send`), reporting per change whether the channel
took it. Retries, the circuit breaker and leases are the worker's (`serving.channels.worker`);
a connector raises:

- `Throttled(seconds)` when the channel's rate limit asks to wait (not a failure),
- `TransientError` for what may pass (5xx, timeouts, refused connections),
- `ChannelRefused` for what will not pass by retrying the call at once (bad credentials),

and returns `Outcome(permanent=True)` for a change the channel rejects itself (an unknown
variant, an invalid price): a dead letter with the channel's reason.

Setting a price is idempotent: a call re-sent after a crash or a lost answer leaves the
channel's price equal to the approved one.
"""

import fcntl
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from db.channels import ChannelSettings, PriceFeedChannel, Target
from db.outbox import Outcome
from serving.channels.clock import Clock


@dataclass(frozen=True)
class PriceChange:
    """One approved price to set: `delivery_id` is its outbox row."""

    delivery_id: int
    item_id: str
    price: float
    target: Target | None


class Throttled(Exception):
    """The channel's rate limit: wait `seconds`, then send the call again."""

    def __init__(self, seconds: float, message: str = "rate limited"):
        self.seconds = max(0.0, seconds)
        super().__init__(f"{message}; retry in {self.seconds:.2f} s")


class TransientError(Exception):
    """A failure that may pass on a retry of the same call."""


class ChannelRefused(Exception):
    """The channel refused the call as a whole (e.g. bad credentials): fix, then retry."""


class Connector(Protocol):
    def plan(self, changes: Sequence[PriceChange]) -> list[list[PriceChange]]:
        """The changes grouped into calls, in order."""

    def pace(self) -> float:
        """Wait until the channel's rate limit lets the next call go; the seconds waited."""

    def send(self, call: Sequence[PriceChange]) -> list[Outcome]:
        """Send one call; an outcome per change."""

    def close(self) -> None:
        """Release connections."""


def chunked(changes: Sequence[PriceChange], size: int) -> list[list[PriceChange]]:
    return [list(changes[start:start + size]) for start in range(0, len(changes), size)]


def by_product(changes: Sequence[PriceChange], size: int) -> list[list[PriceChange]]:
    """Calls of one product each (at most `size` changes)."""
    groups: dict[str, list[PriceChange]] = {}
    for change in changes:
        assert change.target is not None
        groups.setdefault(change.target.product_id, []).append(change)
    return [call for group in groups.values() for call in chunked(group, size)]


def delivered(call: Sequence[PriceChange]) -> list[Outcome]:
    return [Outcome(change.delivery_id) for change in call]


def rejected(change: PriceChange, reason: str) -> Outcome:
    return Outcome(change.delivery_id, error=reason, permanent=True)


class HttpConnector:
    """Shared plumbing of the HTTP connectors: a client with the channel's timeout, client-side
    pacing (`max_requests_per_second`) and a wait before the next call (`wait_until`) that a
    connector sets from its channel's rate-limit answers."""

    def __init__(self, settings: ChannelSettings, clock: Clock,
                 transport: httpx.BaseTransport | None = None):
        self.settings = settings
        self.clock = clock
        self.client = httpx.Client(timeout=settings.timeout_seconds, transport=transport,
                                   headers={"Accept": "application/json",
                                            "User-Agent": "tailor-price-delivery"})
        self.wait_until = 0.0
        self.last_call = -1e9

    def pace(self) -> float:
        now = self.clock.monotonic()
        ready = self.wait_until
        if self.settings.max_requests_per_second:
            ready = max(ready, self.last_call + 1 / self.settings.max_requests_per_second)
        if ready <= now:
            return 0.0
        self.clock.sleep(ready - now)
        return ready - now

    def request(self, method: str, url: str, **options: Any) -> httpx.Response:
        """One HTTP request; transport failures and 5xx raise `TransientError`, 401 and 403
        `ChannelRefused`."""
        self.last_call = self.clock.monotonic()
        try:
            response = self.client.request(method, url, **options)
        except httpx.TimeoutException as error:
            raise TransientError(f"{method} {url}: timed out ({error!r})") from error
        except httpx.TransportError as error:
            raise TransientError(f"{method} {url}: {error!r}") from error
        if response.status_code >= 500:
            raise TransientError(f"{method} {url}: HTTP {response.status_code} "
                                 f"{response.text[:200]}")
        if response.status_code in (401, 403):
            raise ChannelRefused(f"{method} {url}: HTTP {response.status_code} (check the "
                                 f"channel's credentials): {response.text[:200]}")
        return response

    def close(self) -> None:
        self.client.close()


def json_body(response: httpx.Response) -> Any:
    """The response's JSON (`TransientError` when it is not JSON: a proxy's error page)."""
    try:
        return response.json()
    except ValueError as error:
        raise TransientError(f"HTTP {response.status_code}: not JSON: "
                             f"{response.text[:200]!r}") from error


class PriceFeedConnector:
    """A JSON price list `{item_id: price}` at the channel's `path`, rewritten atomically
    (write, fsync, rename) under a file lock, for channels that import a feed file."""

    def __init__(self, settings: PriceFeedChannel):
        self.settings = settings

    def plan(self, changes: Sequence[PriceChange]) -> list[list[PriceChange]]:
        return chunked(changes, self.settings.batch_size)

    def pace(self) -> float:
        return 0.0

    def send(self, call: Sequence[PriceChange]) -> list[Outcome]:
        path = self.settings.path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path.with_name(path.name + ".lock"), "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                prices = json.loads(path.read_text()) if path.exists() else {}
                prices.update({change.item_id: change.price for change in call})
                with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False,
                                                 suffix=".tmp") as handle:
                    json.dump(dict(sorted(prices.items())), handle, indent=1)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(handle.name, path)
        except (OSError, ValueError) as error:
            raise TransientError(f"price feed {path}: {error}") from error
        return delivered(call)

    def close(self) -> None:
        return None
