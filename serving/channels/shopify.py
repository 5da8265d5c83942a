"""Shopify: the Admin GraphQL API's `productVariantsBulkUpdate`, one product (up to 250 of its
variants) per call, authenticated by `X-Shopify-Access-Token`.

Throttling is cost based (a leaky bucket): every answer's `extensions.cost.throttleStatus`
says how many points are left and how fast they come back; the next call waits until the
bucket holds its cost, and a `THROTTLED` answer waits for the missing points. The mutation
is all or nothing: when some variants are refused (`userErrors`), those are dead letters and
the others are sent again at once.
"""

from collections.abc import Sequence
from typing import Any

import httpx

from db.channels import ShopifyChannel
from db.outbox import Outcome
from serving.channels.clock import Clock
from serving.channels.connectors import (
    ChannelRefused,
    HttpConnector,
    PriceChange,
    Throttled,
    TransientError,
    by_product,
    delivered,
    json_body,
    rejected,
)

MUTATION = """
mutation productVariantsBulkUpdate($productId: ID!, $variants: [ProductVariantsBulkInput!]!) {
  productVariantsBulkUpdate(productId: $productId, variants: $variants) {
    product { id }
    productVariants { id price }
    userErrors { field message code }
  }
}
"""
DEFAULT_COST = 10.0


def gid(kind: str, value: str) -> str:
    """A Shopify global id from a mapping file's id (a plain number or already a gid)."""
    return value if value.startswith("gid://") else f"gid://shopify/{kind}/{value}"


class ShopifyConnector(HttpConnector):
    settings: ShopifyChannel

    def __init__(self, settings: ShopifyChannel, clock: Clock,
                 transport: httpx.BaseTransport | None = None):
        super().__init__(settings, clock, transport)
        self.url = (f"{settings.base_url.rstrip('/')}/admin/api/{settings.api_version}"
                    "/graphql.json")
        self.client.headers["X-Shopify-Access-Token"] = settings.secrets()["access_token"]
        self.cost = DEFAULT_COST

    def plan(self, changes: Sequence[PriceChange]) -> list[list[PriceChange]]:
        return by_product(changes, self.settings.batch_size)

    def _note_cost(self, body: dict[str, Any]) -> None:
        """Remember the call's cost and, when the bucket is short of it, when to call next."""
        cost = (body.get("extensions") or {}).get("cost") or {}
        self.cost = float(cost.get("requestedQueryCost") or self.cost)
        status = cost.get("throttleStatus") or {}
        available, rate = status.get("currentlyAvailable"), status.get("restoreRate")
        if available is not None and rate:
            missing = self.cost - float(available)
            self.wait_until = self.clock.monotonic() + max(0.0, missing / float(rate))

    def send(self, call: Sequence[PriceChange]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        pending = list(call)
        while pending:
            refused = self._send_product(pending)
            if not refused:
                return outcomes + delivered(pending)
            outcomes += [rejected(change, reason) for change, reason in refused.items()]
            pending = [change for change in pending if change not in refused]
        return outcomes

    def _send_product(self, call: Sequence[PriceChange]) -> dict[PriceChange, str]:
        """Send one product's variants; the changes refused by `userErrors` with why."""
        assert call[0].target is not None
        variables = {
            "productId": gid("Product", call[0].target.product_id),
            "variants": [{"id": gid("ProductVariant", change.target.variant_id),
                          "price": f"{change.price:.2f}"}
                         for change in call if change.target is not None]}
        response = self.request("POST", self.url, json={"query": MUTATION,
                                                        "variables": variables})
        if response.status_code == 429:
            raise Throttled(float(response.headers.get("Retry-After", 1.0)), "HTTP 429")
        body = json_body(response)
        if not isinstance(body, dict):
            raise TransientError(f"HTTP {response.status_code}: unexpected answer {body!r:.200}")
        self._note_cost(body)
        errors = body.get("errors")
        if errors:
            codes = {(error.get("extensions") or {}).get("code")
                     for error in (errors if isinstance(errors, list) else [])
                     if isinstance(error, dict)}
            if "THROTTLED" in codes:
                wait = self.wait_until - self.clock.monotonic()
                raise Throttled(wait if wait > 0 else 1.0, "THROTTLED")
            if "INTERNAL_SERVER_ERROR" in codes:
                raise TransientError(f"Shopify: {errors!r:.300}")
            if "ACCESS_DENIED" in codes:
                raise ChannelRefused(f"Shopify: {errors!r:.300}")
            return dict.fromkeys(call, f"Shopify refused the call: {errors!r:.300}")
        if response.status_code >= 400:
            return dict.fromkeys(call, f"HTTP {response.status_code}: {body!r:.300}")
        result = (body.get("data") or {}).get("productVariantsBulkUpdate")
        if not isinstance(result, dict):
            raise TransientError(f"no productVariantsBulkUpdate in the answer: {body!r:.300}")
        return self._refused(call, result.get("userErrors") or [])

    @staticmethod
    def _refused(call: Sequence[PriceChange], user_errors: list[dict[str, Any]]
                 ) -> dict[PriceChange, str]:
        """The changes named by `userErrors` (`field: ["variants", index, ...]`); an error on
        the product, or one naming no variant, refuses them all."""
        refused: dict[PriceChange, str] = {}
        for error in user_errors:
            field = error.get("field") or []
            reason = f"Shopify: {error.get('code') or ''} {error.get('message')}".strip()
            if len(field) >= 2 and field[0] == "variants" and str(field[1]).isdigit() \
                    and int(field[1]) < len(call):
                refused[call[int(field[1])]] = reason
            else:
                return dict.fromkeys(call, reason)
        return refused
