"""BigCommerce: the Catalog API v3's batch variant update (`PUT /v3/catalog/variants`, up to
50 variants per call), authenticated by `X-Auth-Token`.

Rate limits come in every answer's headers: when `X-Rate-Limit-Requests-Left` reaches 0 the
next call waits `X-Rate-Limit-Time-Reset-Ms`; a 429 waits that long and sends again. A batch
is all or nothing: a 422 naming the refused variants (`errors: {"<index>.<field>": ...}`)
makes those dead letters and sends the rest again; one that names none (or a 413) is split,
down to single variants, to find them. Any other 4xx is the channel's set-up (a wrong store
URL): retried later, never a dead letter at once.
"""

from collections.abc import Sequence

import httpx

from db.channels import BigCommerceChannel
from db.outbox import Outcome
from serving.channels.clock import Clock
from serving.channels.connectors import (
    ChannelRefused,
    HttpConnector,
    PriceChange,
    Throttled,
    chunked,
    delivered,
    json_body,
    rejected,
)

RESET_MS = "X-Rate-Limit-Time-Reset-Ms"
LEFT = "X-Rate-Limit-Requests-Left"


def _number(value: str) -> int | str:
    return int(value) if value.isdigit() else value


class BigCommerceConnector(HttpConnector):
    settings: BigCommerceChannel

    def __init__(self, settings: BigCommerceChannel, clock: Clock,
                 transport: httpx.BaseTransport | None = None):
        super().__init__(settings, clock, transport)
        self.url = f"{settings.base_url.rstrip('/')}/{settings.api_version}/catalog/variants"
        self.client.headers["X-Auth-Token"] = settings.secrets()["access_token"]

    def plan(self, changes: Sequence[PriceChange]) -> list[list[PriceChange]]:
        return chunked(changes, self.settings.batch_size)

    def _note_limits(self, response: httpx.Response) -> float:
        """Seconds until the rate-limit window resets; the next call waits for it when the
        window's quota is spent."""
        try:
            reset = float(response.headers.get(RESET_MS, 0)) / 1000
            left = int(response.headers.get(LEFT, 1))
        except ValueError:
            reset, left = 1.0, 0
        if left <= 0:
            self.wait_until = self.clock.monotonic() + reset
        return reset

    def send(self, call: Sequence[PriceChange]) -> list[Outcome]:
        self.pace()  # again for the calls a refused batch is split into
        body = [{"id": _number(change.target.variant_id),
                 "product_id": _number(change.target.product_id),
                 "price": round(change.price, 2)}
                for change in call if change.target is not None]
        response = self.request("PUT", self.url, json=body)
        reset = self._note_limits(response)
        if response.status_code == 429:
            raise Throttled(reset if reset > 0 else 1.0, "HTTP 429")
        if response.status_code < 300:
            return delivered(call)
        if response.status_code not in (413, 422):
            raise ChannelRefused(f"BigCommerce PUT {self.url}: HTTP {response.status_code}: "
                                 f"{response.text[:200]}")
        answer = json_body(response)
        errors = answer.get("errors") if isinstance(answer, dict) else None
        reason = (f"BigCommerce HTTP {response.status_code}: "
                  f"{answer.get('title') if isinstance(answer, dict) else answer}")
        named = {}
        for key, message in (errors or {}).items():
            index = str(key).split(".", 1)[0]
            if index.isdigit() and int(index) < len(call):
                named[call[int(index)]] = f"{reason}: {key}: {message}"
        if named:
            rest = [change for change in call if change not in named]
            outcomes = [rejected(change, why) for change, why in named.items()]
            return outcomes + (self.send(rest) if rest else [])
        if len(call) == 1:
            return [rejected(call[0], f"{reason} {errors or ''}".strip())]
        middle = len(call) // 2
        return self.send(call[:middle]) + self.send(call[middle:])
