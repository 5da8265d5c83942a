"""Local HTTP doubles of three commerce APIs, for the price-update calls of the channel
connectors: the Shopify Admin GraphQL API (`productVariantsBulkUpdate`), the BigCommerce
Catalog API v3 (batch variant update) and the commercetools HTTP API (OAuth2 client
credentials, product update actions). Each follows the documented contract of its API for
those calls, keeps its prices in memory, and injects faults drawn from a seeded RNG: server
errors before or after the change is applied, slow responses, an outage; plus the rate limits
(Shopify's cost bucket, BigCommerce's request window) and commercetools' version conflicts,
timed by an injectable clock."""

import base64
import copy
import json
import random
import secrets
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from email.message import Message
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self, TypeGuard
from urllib.parse import parse_qs, urlsplit

Catalog = Iterable[tuple[str, str, float]]


@dataclass
class Call:
    """One HTTP request as the fakes see it."""

    method: str
    path: str
    headers: Message
    body: bytes


@dataclass
class Reply:
    """One HTTP response: status, JSON body and extra headers."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


class ChannelServer:
    """A fake commerce API on 127.0.0.1 (ephemeral port), served from a daemon thread.

    Every request is counted; authentication comes first, then the outage (`down`), then
    the faults drawn per request from the seeded RNG: `error_rate` of the requests get a
    500/502/503, `error_after_apply_share` of those after the change was applied; a
    `timeout_rate` share is delayed by `timeout_seconds`, the change applied before the delay
    when the same draw is below `error_after_apply_share`, else after it. The fault
    attributes may be changed while the server runs."""

    def __init__(
        self, catalog: Catalog, *, seed: int = 0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.error_rate = 0.0
        self.error_after_apply_share = 0.5
        self.timeout_rate = 0.0
        self.timeout_seconds = 1.0
        self.down = False
        self.requests = 0
        self.applied = 0
        self.history: list[tuple[str, str, float]] = []
        self.clock = clock
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._prices: dict[tuple[str, str], float] = {}
        self._variants: dict[str, list[str]] = {}
        for product_id, variant_id, price in catalog:
            if (product_id, variant_id) in self._prices:
                raise ValueError(f"variant {variant_id} of product {product_id} listed twice")
            self._prices[product_id, variant_id] = float(price)
            self._variants.setdefault(product_id, []).append(variant_id)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        """Bind an ephemeral port and serve in a daemon thread."""
        if self._server is None:
            self._server = _Server(self)
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
            )
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving and release the port."""
        if self._server is not None and self._thread is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
            self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def origin(self) -> str:
        """`http://127.0.0.1:PORT` of the running server."""
        if self._server is None:
            raise RuntimeError("the server is not running: call start() or use `with`")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def url(self) -> str:
        """The base URL a connector is configured with."""
        return self.origin

    def price(self, product_id: str, variant_id: str) -> float | None:
        """The current price of a variant by the plain ids of the catalog; None if unknown."""
        with self._lock:
            return self._prices.get((product_id, variant_id))

    def handle(self, call: Call) -> Reply:
        """Answer one request: count, authenticate, limit, inject faults, apply."""
        reply = self._answer(call)
        with self._lock:
            reply.headers.update(self._headers())
        return reply

    def _answer(self, call: Call) -> Reply:
        with self._lock:
            self.requests += 1
            refusal = self._authorize(call)
            if refusal is not None:
                return refusal
            limited = self._admit(call)
            if self.down:
                return self._failure(HTTPStatus.SERVICE_UNAVAILABLE)
            if limited is not None:
                return limited
            error = self._rng.random() < self.error_rate
            delay = self.timeout_seconds if self._rng.random() < self.timeout_rate else 0.0
            early = self._rng.random() < self.error_after_apply_share
            status = self._rng.choice((500, 502, 503))
        if not early:
            time.sleep(delay)
            if error:
                return self._failure(status)
        with self._lock:
            reply = self._apply(call)
        if early:
            time.sleep(delay)
        return self._failure(status) if error else reply

    def _record(self, product_id: str, variant_id: str, price: float) -> None:
        """Write one variant price (called under the lock)."""
        self._prices[product_id, variant_id] = price
        self.applied += 1
        self.history.append((product_id, variant_id, price))

    def _authorize(self, call: Call) -> Reply | None:
        """The refusal of an unrouted or unauthenticated request, if any."""
        raise NotImplementedError

    def _admit(self, call: Call) -> Reply | None:
        """Count the request against a rate limit; the refusal when over it."""
        return None

    def _apply(self, call: Call) -> Reply:
        """Validate and apply the request (called under the lock)."""
        raise NotImplementedError

    def _failure(self, status: int) -> Reply:
        """A server error in the API's error format."""
        raise NotImplementedError

    def _headers(self) -> dict[str, str]:
        """Headers every response carries."""
        return {}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: "_Server"

    def _serve(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        call = Call(self.command, urlsplit(self.path).path, self.headers, body)
        reply = self.server.channel.handle(call)
        data = json.dumps(reply.body).encode()
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, channel: ChannelServer) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.channel = channel

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Ignore clients that hung up (as after a client-side timeout)."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _integer(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


# Shopify ------------------------------------------------------------------------------------

PRODUCT_GID = "gid://shopify/Product/"
VARIANT_GID = "gid://shopify/ProductVariant/"
QUERY_COST = 10
MAX_VARIANTS = 250


class ShopifyServer(ChannelServer):
    """Shopify Admin GraphQL API: `POST {url}/admin/api/{api_version}/graphql.json` with the
    `productVariantsBulkUpdate` mutation, cost-throttled by a leaky bucket of
    `max_available` points refilled at `restore_rate` points per second (each call costs 10).
    Variant ids are GIDs of the catalog ids (`gid://shopify/ProductVariant/5001`)."""

    def __init__(
        self,
        catalog: Catalog,
        *,
        access_token: str = "shpat_test",
        api_version: str = "2025-10",
        max_available: float = 1000.0,
        restore_rate: float = 50.0,
        seed: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(catalog, seed=seed, clock=clock)
        self.access_token = access_token
        self.api_version = api_version
        self.max_available = max_available
        self.restore_rate = restore_rate
        self._available = max_available
        self._refilled_at = clock()

    @property
    def endpoint(self) -> str:
        """The GraphQL endpoint a connector posts to."""
        return f"{self.url}/admin/api/{self.api_version}/graphql.json"

    @property
    def available(self) -> float:
        """The points now in the bucket (currentlyAvailable)."""
        with self._lock:
            return self._refill()

    def drain_bucket(self, left: float = 0.0) -> None:
        """Leave `left` points in the bucket, as if other calls had used the rest."""
        with self._lock:
            self._refill()
            self._available = left

    def _refill(self) -> float:
        now = self.clock()
        elapsed = max(0.0, now - self._refilled_at)
        self._available = min(self.max_available, self._available + elapsed * self.restore_rate)
        self._refilled_at = now
        return self._available

    def _cost(self, actual: int | None) -> dict:
        return {"cost": {"requestedQueryCost": QUERY_COST, "actualQueryCost": actual,
                         "throttleStatus": {"maximumAvailable": float(self.max_available),
                                            "currentlyAvailable": int(self._available),
                                            "restoreRate": float(self.restore_rate)}}}

    def _authorize(self, call: Call) -> Reply | None:
        if call.method != "POST" or call.path != f"/admin/api/{self.api_version}/graphql.json":
            return Reply(404, {"errors": "Not Found"})
        if call.headers.get("X-Shopify-Access-Token") != self.access_token:
            return Reply(401, {"errors": "[API] Invalid API key or access token "
                                         "(unrecognized login or wrong password)"})
        return None

    def _failure(self, status: int) -> Reply:
        return Reply(status, {"errors": HTTPStatus(status).phrase})

    def _apply(self, call: Call) -> Reply:
        try:
            request = json.loads(call.body)
        except ValueError:
            request = None
        if not isinstance(request, dict) or not isinstance(request.get("query"), str):
            return Reply(400, {"errors": {"query": "Required parameter missing or invalid"}})
        if "productVariantsBulkUpdate" not in request["query"]:
            return _graphql_error("This test server only serves productVariantsBulkUpdate")
        variables = request.get("variables") or {}
        product_gid = variables.get("productId")
        variants = variables.get("variants")
        if not isinstance(product_gid, str):
            return _graphql_error("Variable $productId of type ID! was provided invalid value",
                                  "INVALID_VARIABLE")
        if not isinstance(variants, list) or not all(isinstance(v, dict) for v in variants):
            return _graphql_error("Variable $variants of type [ProductVariantsBulkInput!]! "
                                  "was provided invalid value", "INVALID_VARIABLE")
        if len(variants) > MAX_VARIANTS:
            return _graphql_error(f"The input array size of {len(variants)} is greater than "
                                  f"the maximum allowed of {MAX_VARIANTS}.",
                                  "MAX_INPUT_SIZE_EXCEEDED")
        gids = [product_gid, *(v.get("id") for v in variants)]
        prefixes = [PRODUCT_GID, *[VARIANT_GID] * len(variants)]
        for gid, prefix in zip(gids, prefixes, strict=True):
            if not isinstance(gid, str) or not gid.startswith(prefix) or gid == prefix:
                return _graphql_error(f"Invalid global id '{gid}'", "INVALID_VARIABLE")
        if self._refill() < QUERY_COST:
            return Reply(200, {"errors": [{"message": "Throttled", "extensions": {
                "code": "THROTTLED", "documentation": "https://shopify.dev/api/usage/rate-limits"
            }}], "extensions": self._cost(None)})
        self._available -= QUERY_COST
        product_id = product_gid.removeprefix(PRODUCT_GID)
        errors: list[dict] = []
        writes: list[tuple[str, float | None]] = []
        if product_id not in self._variants:
            errors.append({"field": ["productId"], "message": "Product does not exist",
                           "code": "PRODUCT_DOES_NOT_EXIST"})
        else:
            for index, variant in enumerate(variants):
                variant_id = variant["id"].removeprefix(VARIANT_GID)
                price = _money(variant["price"]) if "price" in variant else None
                if (product_id, variant_id) not in self._prices:
                    errors.append({"field": ["variants", str(index), "id"],
                                   "message": "Product variant does not exist",
                                   "code": "PRODUCT_VARIANT_DOES_NOT_EXIST"})
                elif "price" in variant and price is None:
                    errors.append({"field": ["variants", str(index), "price"],
                                   "message": "Price must be a decimal of at least 0",
                                   "code": "INVALID_INPUT"})
                writes.append((variant_id, price))
        product = {"id": product_gid} if product_id in self._variants else None
        if errors:
            payload = {"product": product, "productVariants": None, "userErrors": errors}
        else:
            for variant_id, price in writes:
                if price is not None:
                    self._record(product_id, variant_id, price)
            payload = {"product": product, "userErrors": [], "productVariants": [
                {"id": VARIANT_GID + variant_id,
                 "price": f"{self._prices[product_id, variant_id]:.2f}"}
                for variant_id, _ in writes
            ]}
        return Reply(200, {"data": {"productVariantsBulkUpdate": payload},
                           "extensions": self._cost(QUERY_COST)})


def _graphql_error(message: str, code: str | None = None) -> Reply:
    error: dict[str, Any] = {"message": message}
    if code:
        error["extensions"] = {"code": code}
    return Reply(200, {"errors": [error]})


def _money(value: Any) -> float | None:
    """A Shopify Money input (decimal string or number) rounded to cents; None if invalid."""
    if not isinstance(value, str) and not _number(value):
        return None
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        return None
    if not amount.is_finite() or amount < 0:
        return None
    return float(amount.quantize(Decimal("0.01")))


# BigCommerce --------------------------------------------------------------------------------

BC_ERRORS = "https://developer.bigcommerce.com/api-docs/getting-started/api-status-codes"
BC_MAX_ITEMS = 50


class BigCommerceServer(ChannelServer):
    """BigCommerce Catalog API v3 "Update Variants (Batch)": `PUT {url}/v3/catalog/variants`
    with a JSON array of up to 50 `{"id", "price"}` objects, all or nothing, under a fixed
    window of `quota` requests per `window_ms`. Catalog ids must be integers."""

    def __init__(
        self,
        catalog: Catalog,
        *,
        access_token: str = "bc_test",
        store_hash: str = "abc123",
        quota: int = 150,
        window_ms: int = 30000,
        seed: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(catalog, seed=seed, clock=clock)
        self.access_token = access_token
        self.store_hash = store_hash
        self.quota = quota
        self.window_ms = window_ms
        self._owners: dict[int, str] = {}
        for product_id, variant_id in self._prices:
            if not (product_id.isdigit() and variant_id.isdigit()):
                raise ValueError(f"ids must be integers: {product_id}, {variant_id}")
            if int(variant_id) in self._owners:
                raise ValueError(f"variant {variant_id} belongs to two products")
            self._owners[int(variant_id)] = product_id
        self._window_start = clock()
        self._used = 0

    @property
    def url(self) -> str:
        return f"{self.origin}/stores/{self.store_hash}"

    def _window(self) -> float:
        """Milliseconds left in the current window, opening a new one when it has passed."""
        elapsed = (self.clock() - self._window_start) * 1000
        if elapsed >= self.window_ms:
            self._window_start = self.clock()
            self._used = 0
            elapsed = 0.0
        return self.window_ms - elapsed

    def _headers(self) -> dict[str, str]:
        left_ms = self._window()
        return {"X-Rate-Limit-Time-Window-Ms": str(self.window_ms),
                "X-Rate-Limit-Time-Reset-Ms": str(int(left_ms)),
                "X-Rate-Limit-Requests-Quota": str(self.quota),
                "X-Rate-Limit-Requests-Left": str(max(0, self.quota - self._used))}

    def _authorize(self, call: Call) -> Reply | None:
        if call.headers.get("X-Auth-Token") != self.access_token:
            return _bc_error(401, "Unauthorized")
        return None

    def _admit(self, call: Call) -> Reply | None:
        self._window()
        self._used += 1
        return _bc_error(429, "Too many requests") if self._used > self.quota else None

    def _failure(self, status: int) -> Reply:
        return _bc_error(status, HTTPStatus(status).phrase)

    def _apply(self, call: Call) -> Reply:
        if call.method != "PUT" or call.path != f"/stores/{self.store_hash}/v3/catalog/variants":
            return _bc_error(404, "Not Found")
        if call.headers.get_content_type() != "application/json":
            return _bc_error(415, "Unsupported Media Type: the Content-Type must be "
                                  "application/json")
        accept = call.headers.get("Accept", "*/*")
        if not any(kind in accept for kind in ("application/json", "*/*", "application/*")):
            return _bc_error(406, "Not Acceptable: the Accept header must allow "
                                  "application/json")
        try:
            items = json.loads(call.body)
        except ValueError:
            return _bc_error(400, "Input is invalid")
        if not isinstance(items, list) or not items:
            return _bc_error(422, "JSON data is missing or invalid",
                             {"body": "must be a non-empty array of variants"})
        if len(items) > BC_MAX_ITEMS:
            return _bc_error(413, "The request payload is too large. The maximum items allowed "
                                  f"in the array is {BC_MAX_ITEMS}", {})
        errors: dict[str, str] = {}
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                errors[str(index)] = "must be an object"
                continue
            variant_id = item.get("id")
            owner = self._owners.get(variant_id) if _integer(variant_id) else None
            if owner is None:
                errors[f"{index}.id"] = f"Variant {variant_id} does not exist"
            elif "product_id" in item and item["product_id"] != int(owner):
                errors[f"{index}.product_id"] = (
                    f"Variant {variant_id} does not belong to product {item['product_id']}")
            if "price" in item and not (_number(item["price"]) and item["price"] >= 0):
                errors[f"{index}.price"] = "price must be a number greater than or equal to 0"
        if errors:
            return _bc_error(422, "JSON data is missing or invalid", errors)
        data = []
        for item in items:
            product_id = self._owners[item["id"]]
            if "price" in item:
                self._record(product_id, str(item["id"]), float(item["price"]))
            price = self._prices[product_id, str(item["id"])]
            data.append({"id": item["id"], "product_id": int(product_id),
                         "sku": f"SKU-{item['id']}", "price": price, "calculated_price": price})
        return Reply(200, {"data": data, "meta": {}})


def _bc_error(status: int, title: str, errors: dict[str, str] | None = None) -> Reply:
    body: dict[str, Any] = {"status": status, "title": title, "type": BC_ERRORS}
    if errors is not None:
        body["errors"] = errors
    return Reply(status, body)


# commercetools ------------------------------------------------------------------------------


class CommercetoolsServer(ChannelServer):
    """commercetools HTTP API and its OAuth2 server on one port: `POST /oauth/token` (client
    credentials, HTTP Basic) and `GET`/`POST /{project_key}/products/{id}` with a Bearer
    token, optimistic versioning and the `changePrice`/`addPrice` update actions. Catalog
    variant ids are integers per product, the first listed is the master variant. `price()`
    and `history` report the current (published) projection."""

    def __init__(
        self,
        catalog: Catalog,
        *,
        project_key: str = "pattern-shop",
        client_id: str = "ct-client",
        client_secret: str = "ct-secret",
        currency: str = "EUR",
        conflict_rate: float = 0.0,
        token_ttl_seconds: float = 172800,
        seed: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(catalog, seed=seed, clock=clock)
        self.project_key = project_key
        self.client_id = client_id
        self.client_secret = client_secret
        self.currency = currency
        self.conflict_rate = conflict_rate
        self.token_ttl_seconds = token_ttl_seconds
        self._tokens: dict[str, float] = {}
        self._versions = dict.fromkeys(self._variants, 1)
        self._current: dict[str, dict[int, list[dict]]] = {
            product_id: {int(v): [self._new_price(round(self._prices[product_id, v] * 100))]
                         for v in variant_ids}
            for product_id, variant_ids in self._variants.items()
        }
        self._staged = copy.deepcopy(self._current)

    @property
    def auth_url(self) -> str:
        """The OAuth2 server's base URL (the same server)."""
        return self.origin

    def version(self, product_id: str) -> int | None:
        """The product's current version."""
        with self._lock:
            return self._versions.get(product_id)

    def _new_price(self, cents: int) -> dict:
        return {"id": str(uuid.uuid4()), "value": {
            "type": "centPrecision", "currencyCode": self.currency, "centAmount": cents,
            "fractionDigits": 2}}

    def _product(self, product_id: str) -> dict:
        def projection(prices: dict[int, list[dict]]) -> dict:
            variants = [{"id": v, "sku": f"{product_id}-{v}", "prices": p}
                        for v, p in prices.items()]
            return {"masterVariant": variants[0], "variants": variants[1:]}

        current, staged = self._current[product_id], self._staged[product_id]
        return {"id": product_id, "version": self._versions[product_id], "masterData": {
            "current": projection(current), "staged": projection(staged), "published": True,
            "hasStagedChanges": current != staged}}

    def _authorize(self, call: Call) -> Reply | None:
        if call.path == "/oauth/token":
            basic = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
            if call.headers.get("Authorization") != f"Basic {basic}":
                return Reply(401, {"error": "invalid_client", "error_description":
                                   "Please provide valid client credentials using HTTP Basic "
                                   "Authentication."})
            return None
        scheme, _, token = (call.headers.get("Authorization") or "").partition(" ")
        if scheme != "Bearer" or token not in self._tokens or (
                self._tokens[token] <= self.clock()):
            return Reply(401, {"statusCode": 401, "message": "invalid_token", "errors": [
                {"code": "invalid_token", "message": "invalid_token"}], "error": "invalid_token"},
                {"WWW-Authenticate": 'Bearer realm="commercetools", error="invalid_token"'})
        return None

    def _failure(self, status: int) -> Reply:
        return _ct_error(status, "General", HTTPStatus(status).phrase)

    def _apply(self, call: Call) -> Reply:
        if call.path == "/oauth/token" and call.method == "POST":
            return self._token(call)
        prefix = f"/{self.project_key}/products/"
        product_id = call.path.removeprefix(prefix)
        if not call.path.startswith(prefix) or call.method not in ("GET", "POST"):
            return _ct_error(404, "ResourceNotFound", f"The path '{call.path}' was not found.")
        if product_id not in self._versions:
            return _ct_error(404, "ResourceNotFound",
                             f"The Resource with ID '{product_id}' was not found.")
        if call.method == "GET":
            return Reply(200, self._product(product_id))
        return self._update(product_id, call.body)

    def _token(self, call: Call) -> Reply:
        form = parse_qs(call.body.decode(errors="replace"))
        if form.get("grant_type") != ["client_credentials"]:
            return Reply(400, {"error": "unsupported_grant_type",
                               "error_description": "Only client_credentials is supported."})
        scope = form.get("scope", [f"manage_products:{self.project_key}"])[0]
        if not all(s.endswith(f":{self.project_key}") for s in scope.split()):
            return Reply(400, {"error": "invalid_scope",
                               "error_description": f"Invalid scope '{scope}'."})
        token = secrets.token_urlsafe(24)
        self._tokens[token] = self.clock() + self.token_ttl_seconds
        return Reply(200, {"access_token": token, "token_type": "Bearer",
                           "expires_in": self.token_ttl_seconds, "scope": scope})

    def _update(self, product_id: str, body: bytes) -> Reply:
        try:
            update = json.loads(body)
        except ValueError:
            update = None
        if (not isinstance(update, dict) or not isinstance(update.get("version"), int)
                or not isinstance(update.get("actions"), list)):
            return _ct_error(400, "InvalidJsonInput", "Request body does not contain valid JSON: "
                                                      "it needs an integer version and actions.")
        if update["version"] == self._versions[product_id] and (
                self._rng.random() < self.conflict_rate):
            self._versions[product_id] += 1
        if update["version"] != self._versions[product_id]:
            actual = self._versions[product_id]
            message = (f"Object {product_id} has a different version than expected. "
                       f"Expected: {update['version']} - Actual: {actual}.")
            return _ct_error(409, "ConcurrentModification", message, currentVersion=actual)
        current = copy.deepcopy(self._current[product_id])
        staged = copy.deepcopy(self._staged[product_id])
        writes: list[tuple[int, int]] = []
        for action in update["actions"]:
            refusal = self._act(action, current, staged, writes)
            if refusal is not None:
                return refusal
        self._current[product_id], self._staged[product_id] = current, staged
        self._versions[product_id] += 1
        for variant_id, cents in writes:
            self._record(product_id, str(variant_id), cents / 100)
        return Reply(200, self._product(product_id))

    def _act(
        self,
        action: Any,
        current: dict[int, list[dict]],
        staged: dict[int, list[dict]],
        writes: list[tuple[int, int]],
    ) -> Reply | None:
        """Apply one update action to the copies of the projections; the refusal if invalid."""
        name = action.get("action") if isinstance(action, dict) else None
        if name not in ("changePrice", "addPrice"):
            return _ct_error(400, "InvalidOperation", f"Unknown update action '{name}'.")
        value = _ct_money(action.get("price"))
        if value is None or not isinstance(action.get("staged", True), bool):
            return _ct_error(400, "InvalidJsonInput", "Request body does not contain valid JSON: "
                                                      "price.value needs a currencyCode and a "
                                                      "non-negative integer centAmount.")
        currency, cents = value
        projections = [staged] if action.get("staged", True) else [current, staged]
        if name == "addPrice":
            variant_id = action.get("variantId")
            if not _integer(variant_id) or variant_id not in staged:
                return _ct_error(400, "InvalidOperation",
                                 f"The variant with ID '{variant_id}' does not exist.")
            if currency != self.currency:
                return _ct_error(400, "InvalidOperation",
                                 f"The currency '{currency}' is not one of the project's.")
            if any(p["value"]["currencyCode"] == currency
                   for projection in projections for p in projection[variant_id]):
                return _ct_error(400, "DuplicatePriceScope",
                                 f"Variant {variant_id} already has a price in {currency}.")
            price = self._new_price(cents)
            for projection in projections:
                projection[variant_id].append(copy.deepcopy(price))
        else:
            for projection in projections:
                found = [(v, p) for v, prices in projection.items() for p in prices
                         if p["id"] == action.get("priceId")]
                if not found:
                    return _ct_error(400, "InvalidOperation",
                                     f"The price with ID '{action.get('priceId')}' does not "
                                     "exist.")
                variant_id, price = found[0]
                if price["value"]["currencyCode"] != currency:
                    return _ct_error(400, "InvalidOperation",
                                     "The currency of a price cannot be changed.")
                price["value"] = {**price["value"], "centAmount": cents}
        if projections[0] is current:
            writes.append((variant_id, cents))
        return None


def _ct_money(price: Any) -> tuple[str, int] | None:
    """The currency and cent amount of a PriceDraft; None if malformed."""
    value = price.get("value") if isinstance(price, dict) else None
    if not isinstance(value, dict):
        return None
    currency, cents = value.get("currencyCode"), value.get("centAmount")
    if (not isinstance(currency, str) or not _integer(cents) or cents < 0
            or value.get("type", "centPrecision") != "centPrecision"):
        return None
    return currency, cents


def _ct_error(status: int, code: str, message: str, **extra: Any) -> Reply:
    return Reply(status, {"statusCode": status, "message": message,
                          "errors": [{"code": code, "message": message, **extra}]})
