"""commercetools: product update actions on the HTTP API, one product per call, with an
OAuth2 client-credentials token (scope `manage_products:{project_key}`, renewed when it
expires or is refused).

A price is the variant's base price in the channel's currency (no country, customer group or
channel): `changePrice` when it exists, `addPrice` otherwise, both `staged: false` so the
shop shows it at once. Updates carry the product's `version` (optimistic concurrency): a 409
re-reads the product and sends again. A refused update (400) of several variants is split to
find the refused ones; a missing product (404) or variant is a dead letter.
"""

from collections.abc import Sequence
from typing import Any

import httpx

from db.channels import CommercetoolsChannel
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

MAX_CONFLICTS = 10
"""Version conflicts (409) one call re-reads before it counts as a transient failure."""
TOKEN_MARGIN_SECONDS = 60.0


class CommercetoolsConnector(HttpConnector):
    settings: CommercetoolsChannel

    def __init__(self, settings: CommercetoolsChannel, clock: Clock,
                 transport: httpx.BaseTransport | None = None):
        super().__init__(settings, clock, transport)
        self.secrets = settings.secrets()
        self.products_url = f"{settings.base_url.rstrip('/')}/{settings.project_key}/products"
        self.token: str | None = None
        self.token_expires = 0.0
        self.products: dict[str, dict[str, Any]] = {}  # the last version seen of each product

    def plan(self, changes: Sequence[PriceChange]) -> list[list[PriceChange]]:
        return by_product(changes, self.settings.batch_size)

    def _authorize(self) -> None:
        if self.token is not None and self.clock.monotonic() < self.token_expires:
            return
        response = self.request(
            "POST", f"{self.settings.auth_url.rstrip('/')}/oauth/token",
            auth=(self.secrets["client_id"], self.secrets["client_secret"]),
            data={"grant_type": "client_credentials",
                  "scope": f"manage_products:{self.settings.project_key}"})
        body = json_body(response)
        if response.status_code != 200 or "access_token" not in body:
            raise ChannelRefused(f"commercetools token: HTTP {response.status_code} {body!r:.200}")
        self.token = body["access_token"]
        self.token_expires = (self.clock.monotonic() + float(body.get("expires_in", 3600))
                              - TOKEN_MARGIN_SECONDS)
        self.client.headers["Authorization"] = f"Bearer {self.token}"

    def _call(self, method: str, url: str, **options: Any) -> httpx.Response:
        """An API request with a valid token (a refused token is renewed once)."""
        self._authorize()
        try:
            response = self.request(method, url, **options)
        except ChannelRefused:
            self.token = None
            self._authorize()
            response = self.request(method, url, **options)
        if response.status_code in (429, 503) and "Retry-After" in response.headers:
            raise Throttled(float(response.headers["Retry-After"]), f"HTTP {response.status_code}")
        return response

    def _read(self, product_id: str) -> dict[str, Any] | None:
        response = self._call("GET", f"{self.products_url}/{product_id}")
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise TransientError(f"GET product {product_id}: HTTP {response.status_code} "
                                 f"{response.text[:200]}")
        product = json_body(response)
        self.products[product_id] = product
        return product

    def _action(self, product: dict[str, Any], change: PriceChange) -> dict[str, Any] | None:
        """The update action setting the change's price; None when the variant is missing."""
        assert change.target is not None
        data = product["masterData"]["current"]
        variants = [data.get("masterVariant"), *data.get("variants", [])]
        variant = next((v for v in variants
                        if v and str(v.get("id")) == change.target.variant_id), None)
        if variant is None:
            return None
        value = {"currencyCode": self.settings.currency,
                 "centAmount": round(change.price * 10 ** self.settings.fraction_digits)}
        base = next((price for price in variant.get("prices", [])
                     if price["value"]["currencyCode"] == self.settings.currency
                     and not {"country", "customerGroup", "channel"} & set(price)), None)
        if base is None:
            return {"action": "addPrice", "variantId": variant["id"], "price": {"value": value},
                    "staged": False}
        return {"action": "changePrice", "priceId": base["id"], "price": {"value": value},
                "staged": False}

    def send(self, call: Sequence[PriceChange]) -> list[Outcome]:
        assert call[0].target is not None
        product_id = call[0].target.product_id
        for _ in range(MAX_CONFLICTS):
            product = self.products.get(product_id) or self._read(product_id)
            if product is None:
                return [rejected(change, f"commercetools: product {product_id} not found")
                        for change in call]
            actions = {change: self._action(product, change) for change in call}
            missing = [rejected(change, f"commercetools: product {product_id} has no variant "
                                        f"{change.target.variant_id}")
                       for change, action in actions.items()
                       if action is None and change.target is not None]
            wanted = [change for change, action in actions.items() if action is not None]
            if not wanted:
                return missing
            response = self._call("POST", f"{self.products_url}/{product_id}", json={
                "version": product["version"], "actions": [actions[c] for c in wanted]})
            if response.status_code == 409:
                self.products.pop(product_id, None)  # re-read, then send again
                continue
            if response.status_code == 404:
                self.products.pop(product_id, None)
                return [rejected(change, f"commercetools: product {product_id} not found")
                        for change in call]
            if response.status_code == 200:
                self.products[product_id] = json_body(response)
                return missing + delivered(wanted)
            self.products.pop(product_id, None)
            if response.status_code == 400:
                if len(wanted) == 1:
                    reason = f"commercetools HTTP 400: {response.text[:300]}"
                    return [*missing, rejected(wanted[0], reason)]
                return missing + [outcome for change in wanted for outcome in self.send([change])]
            raise ChannelRefused(f"commercetools POST product {product_id}: HTTP "
                                 f"{response.status_code} {response.text[:200]}")
        raise TransientError(f"commercetools: product {product_id} changed {MAX_CONFLICTS} "
                             "times while updating it (version conflicts)")
