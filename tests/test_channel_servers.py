"""The fake commerce APIs of `tests.channel_servers`, called directly with httpx: their
contracts (authentication, validation, rate limits, versions) and the injected faults."""

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
import pytest

from tests.channel_servers import (
    BigCommerceServer,
    ChannelServer,
    CommercetoolsServer,
    ShopifyServer,
)

CATALOG = [("1001", "5001", 10.0), ("1001", "5002", 12.0), ("1002", "5003", 20.0)]
CT_CATALOG = [("1001", "1", 10.0), ("1001", "2", 12.0), ("1002", "1", 20.0)]
MUTATION = """mutation update($productId: ID!, $variants: [ProductVariantsBulkInput!]!) {
  productVariantsBulkUpdate(productId: $productId, variants: $variants) {
    productVariants { id price } userErrors { field message code } } }"""
SHOPIFY_HEADERS = {"X-Shopify-Access-Token": "shpat_test"}
BC_HEADERS = {"X-Auth-Token": "bc_test", "Accept": "application/json"}


class FakeClock:
    """A clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def shopify_body(product: str, *variants: tuple[str, object]) -> dict:
    return {"query": MUTATION, "variables": {
        "productId": f"gid://shopify/Product/{product}",
        "variants": [{"id": f"gid://shopify/ProductVariant/{v}", "price": p} for v, p in variants],
    }}


def ct_token(client: httpx.Client, server: CommercetoolsServer, secret: str = "ct-secret"
             ) -> httpx.Response:
    return client.post(f"{server.auth_url}/oauth/token", auth=("ct-client", secret),
                       data={"grant_type": "client_credentials",
                             "scope": "manage_products:pattern-shop"})


def ct_change(price_id: str, cents: int, **extra: object) -> dict:
    return {"action": "changePrice", "priceId": price_id,
            "price": {"value": {"currencyCode": "EUR", "centAmount": cents}}, **extra}


@contextmanager
def ct_session() -> Iterator[tuple[CommercetoolsServer, httpx.Client, dict]]:
    """A running commercetools fake, a client holding a token, and product 1001."""
    with CommercetoolsServer(CT_CATALOG) as server, httpx.Client() as client:
        token = ct_token(client, server).json()["access_token"]
        client.headers["Authorization"] = f"Bearer {token}"
        yield server, client, client.get(f"{server.url}/pattern-shop/products/1001").json()


@contextmanager
def price_writer(kind: str) -> Iterator[tuple[ChannelServer, Callable[[float], httpx.Response]]]:
    """A running fake and a function that sends one request setting the first variant's price
    (any token needed is fetched beforehand)."""
    with httpx.Client() as client:
        if kind == "shopify":
            with ShopifyServer(CATALOG) as shopify:
                yield shopify, lambda price: client.post(
                    shopify.endpoint, headers=SHOPIFY_HEADERS,
                    json=shopify_body("1001", ("5001", f"{price:.2f}")))
        elif kind == "bigcommerce":
            with BigCommerceServer(CATALOG) as bigcommerce:
                yield bigcommerce, lambda price: client.put(
                    f"{bigcommerce.url}/v3/catalog/variants", headers=BC_HEADERS,
                    json=[{"id": 5001, "price": price}])
        else:
            with ct_session() as (ct, ct_client, product):
                price_id = product["masterData"]["current"]["masterVariant"]["prices"][0]["id"]
                yield ct, lambda price: ct_client.post(
                    f"{ct.url}/pattern-shop/products/1001",
                    json={"version": 1, "actions": [
                        ct_change(price_id, round(price * 100), staged=False)]})


def first_price(server: ChannelServer) -> float | None:
    return server.price("1001", "5001" if not isinstance(server, CommercetoolsServer) else "1")


# Shopify ------------------------------------------------------------------------------------


def test_shopify_refuses_a_wrong_token_and_unknown_paths() -> None:
    with ShopifyServer(CATALOG) as server, httpx.Client() as client:
        body = shopify_body("1001", ("5001", "11.00"))
        wrong = client.post(server.endpoint, headers={"X-Shopify-Access-Token": "x"}, json=body)
        old_version = client.post(f"{server.url}/admin/api/2024-01/graphql.json",
                                  headers=SHOPIFY_HEADERS, json=body)
        assert wrong.status_code == 401
        assert "Invalid API key or access token" in wrong.json()["errors"]
        assert old_version.status_code == 404
        assert old_version.json() == {"errors": "Not Found"}
        assert (server.requests, server.applied, server.price("1001", "5001")) == (2, 0, 10.0)


def test_shopify_updates_the_variants_of_a_product() -> None:
    with ShopifyServer(CATALOG) as server, httpx.Client() as client:
        response = client.post(server.endpoint, headers=SHOPIFY_HEADERS,
                               json=shopify_body("1001", ("5001", "12.50"), ("5002", 9)))
        body = response.json()
        assert response.status_code == 200
        assert body["data"]["productVariantsBulkUpdate"] == {
            "product": {"id": "gid://shopify/Product/1001"}, "userErrors": [],
            "productVariants": [{"id": "gid://shopify/ProductVariant/5001", "price": "12.50"},
                                {"id": "gid://shopify/ProductVariant/5002", "price": "9.00"}]}
        cost = body["extensions"]["cost"]
        assert (cost["requestedQueryCost"], cost["actualQueryCost"]) == (10, 10)
        assert cost["throttleStatus"]["currentlyAvailable"] == 990
        assert server.history == [("1001", "5001", 12.5), ("1001", "5002", 9.0)]
        assert server.price("1002", "5003") == 20.0


@pytest.mark.parametrize(("product", "variants", "error"), [
    ("1001", [("5001", "11.00"), ("5003", "11.00")],
     {"field": ["variants", "1", "id"], "code": "PRODUCT_VARIANT_DOES_NOT_EXIST"}),
    ("1001", [("5001", "11.00"), ("5002", "-1.00")],
     {"field": ["variants", "1", "price"], "code": "INVALID_INPUT"}),
    ("1001", [("5001", "11.00"), ("5002", "cheap")],
     {"field": ["variants", "1", "price"], "code": "INVALID_INPUT"}),
    ("9999", [("5001", "11.00")], {"field": ["productId"], "code": "PRODUCT_DOES_NOT_EXIST"}),
])
def test_shopify_user_errors_apply_nothing(
    product: str, variants: list[tuple[str, str]], error: dict
) -> None:
    with ShopifyServer(CATALOG) as server, httpx.Client() as client:
        response = client.post(server.endpoint, headers=SHOPIFY_HEADERS,
                               json=shopify_body(product, *variants))
        payload = response.json()["data"]["productVariantsBulkUpdate"]
        assert response.status_code == 200
        assert payload["productVariants"] is None
        assert [{k: e[k] for k in error} for e in payload["userErrors"]] == [error]
        assert (server.applied, server.price("1001", "5001")) == (0, 10.0)


def test_shopify_refuses_more_than_250_variants() -> None:
    with ShopifyServer(CATALOG) as server, httpx.Client() as client:
        variants = [("5001", "11.00")] * 251
        response = client.post(server.endpoint, headers=SHOPIFY_HEADERS,
                               json=shopify_body("1001", *variants))
        assert response.status_code == 200
        assert "250" in response.json()["errors"][0]["message"]
        assert "data" not in response.json()
        assert server.applied == 0


def test_shopify_throttles_until_the_bucket_refills() -> None:
    clock = FakeClock()
    with ShopifyServer(CATALOG, clock=clock) as server, httpx.Client() as client:
        server.drain_bucket(5.0)
        throttled = client.post(server.endpoint, headers=SHOPIFY_HEADERS,
                                json=shopify_body("1001", ("5001", "11.00"))).json()
        assert throttled["errors"][0]["extensions"]["code"] == "THROTTLED"
        assert throttled["extensions"]["cost"]["actualQueryCost"] is None
        assert throttled["extensions"]["cost"]["throttleStatus"] == {
            "maximumAvailable": 1000.0, "currentlyAvailable": 5, "restoreRate": 50.0}
        assert server.applied == 0
        clock.now += 0.1  # 5 more points: 10, just enough
        retried = client.post(server.endpoint, headers=SHOPIFY_HEADERS,
                              json=shopify_body("1001", ("5001", "11.00"))).json()
        assert "errors" not in retried
        assert retried["extensions"]["cost"]["throttleStatus"]["currentlyAvailable"] == 0
        assert server.price("1001", "5001") == 11.0
        clock.now += 100.0
        assert server.available == 1000.0


# BigCommerce --------------------------------------------------------------------------------


def test_bigcommerce_refuses_a_wrong_token_without_using_the_quota() -> None:
    with BigCommerceServer(CATALOG, quota=5) as server, httpx.Client() as client:
        response = client.put(f"{server.url}/v3/catalog/variants",
                              headers={**BC_HEADERS, "X-Auth-Token": "wrong"},
                              json=[{"id": 5001, "price": 11.0}])
        assert response.status_code == 401
        assert response.json()["title"] == "Unauthorized"
        assert response.headers["X-Rate-Limit-Requests-Left"] == "5"
        assert server.applied == 0


def test_bigcommerce_updates_a_batch_in_request_order() -> None:
    with BigCommerceServer(CATALOG) as server, httpx.Client() as client:
        response = client.put(f"{server.url}/v3/catalog/variants", headers=BC_HEADERS,
                              json=[{"id": 5003, "price": 21.5},
                                    {"id": 5001, "product_id": 1001, "price": 12.5}])
        assert response.status_code == 200
        assert [(v["id"], v["product_id"], v["price"]) for v in response.json()["data"]] == [
            (5003, 1002, 21.5), (5001, 1001, 12.5)]
        assert response.headers["X-Rate-Limit-Requests-Quota"] == "150"
        assert response.headers["X-Rate-Limit-Requests-Left"] == "149"
        assert response.headers["X-Rate-Limit-Time-Window-Ms"] == "30000"
        assert server.history == [("1002", "5003", 21.5), ("1001", "5001", 12.5)]


@pytest.mark.parametrize(("items", "status", "errors"), [
    ([{"id": 5001, "price": 11.0}] * 51, 413, {}),
    ([{"id": 5001, "price": 11.0}, {"id": 7777, "price": 11.0}], 422,
     {"1.id": "Variant 7777 does not exist"}),
    ([{"id": 5001, "price": 11.0}, {"id": 5002, "price": -1}], 422, {"1.price"}),
    ([{"id": 5001, "price": 11.0}, {"id": 5002, "price": "12"}], 422, {"1.price"}),
    ([{"id": 5001, "product_id": 1002, "price": 11.0}], 422, {"0.product_id"}),
])
def test_bigcommerce_invalid_batches_apply_nothing(
    items: list[dict], status: int, errors: dict | set
) -> None:
    with BigCommerceServer(CATALOG) as server, httpx.Client() as client:
        response = client.put(f"{server.url}/v3/catalog/variants", headers=BC_HEADERS,
                              json=items)
        assert response.status_code == status
        found = response.json()["errors"]
        assert (found if isinstance(errors, dict) else set(found)) == errors
        assert (server.applied, server.price("1001", "5001")) == (0, 10.0)


def test_bigcommerce_needs_a_json_content_type() -> None:
    with BigCommerceServer(CATALOG) as server, httpx.Client() as client:
        response = client.put(f"{server.url}/v3/catalog/variants", headers=BC_HEADERS,
                              content=b'[{"id": 5001, "price": 11.0}]')
        assert response.status_code == 415
        assert server.applied == 0


def test_bigcommerce_answers_429_until_the_window_resets() -> None:
    clock = FakeClock()
    with (BigCommerceServer(CATALOG, quota=2, window_ms=1000, clock=clock) as server,
          httpx.Client() as client):
        def put(price: float) -> httpx.Response:
            return client.put(f"{server.url}/v3/catalog/variants", headers=BC_HEADERS,
                              json=[{"id": 5001, "price": price}])

        assert [put(11.0).status_code, put(12.0).status_code] == [200, 200]
        clock.now = 0.4
        limited = put(13.0)
        assert limited.status_code == 429
        assert limited.json()["title"] == "Too many requests"
        assert limited.headers["X-Rate-Limit-Requests-Left"] == "0"
        assert limited.headers["X-Rate-Limit-Time-Reset-Ms"] == "600"
        assert server.price("1001", "5001") == 12.0
        clock.now = 1.0
        again = put(14.0)
        assert again.status_code == 200
        assert again.headers["X-Rate-Limit-Requests-Left"] == "1"
        assert server.history == [("1001", "5001", 11.0), ("1001", "5001", 12.0),
                                  ("1001", "5001", 14.0)]


# commercetools ------------------------------------------------------------------------------


def test_commercetools_token_flow() -> None:
    clock = FakeClock()
    with (CommercetoolsServer(CT_CATALOG, clock=clock, token_ttl_seconds=60) as server,
          httpx.Client() as client):
        product_url = f"{server.url}/pattern-shop/products/1001"
        assert ct_token(client, server, secret="wrong").json()["error"] == "invalid_client"
        assert client.get(product_url).status_code == 401
        granted = ct_token(client, server).json()
        assert (granted["token_type"], granted["expires_in"]) == ("Bearer", 60)
        assert granted["scope"] == "manage_products:pattern-shop"
        bearer = {"Authorization": f"Bearer {granted['access_token']}"}
        product = client.get(product_url, headers=bearer).json()
        current = product["masterData"]["current"]
        assert (product["version"], current["masterVariant"]["id"]) == (1, 1)
        assert [v["id"] for v in current["variants"]] == [2]
        assert current["masterVariant"]["prices"][0]["value"] == {
            "type": "centPrecision", "currencyCode": "EUR", "centAmount": 1000,
            "fractionDigits": 2}
        assert client.get(f"{server.url}/pattern-shop/products/9", headers=bearer
                          ).json()["errors"][0]["code"] == "ResourceNotFound"
        clock.now = 60.0
        expired = client.get(product_url, headers=bearer)
        assert expired.status_code == 401
        assert expired.json()["error"] == "invalid_token"


def test_commercetools_changes_and_adds_published_prices() -> None:
    with ct_session() as (server, client, product):
        variants = product["masterData"]["current"]
        price_id = variants["masterVariant"]["prices"][0]["id"]
        response = client.post(f"{server.url}/pattern-shop/products/1001", json={
            "version": 1, "actions": [ct_change(price_id, 1250, staged=False)]})
        assert response.status_code == 200
        assert response.json()["version"] == 2
        assert response.json()["masterData"]["hasStagedChanges"] is False
        assert (server.price("1001", "1"), server.version("1001")) == (12.5, 2)
        duplicate = {"action": "addPrice", "variantId": 2, "staged": False,
                     "price": {"value": {"currencyCode": "EUR", "centAmount": 999}}}
        refused = client.post(f"{server.url}/pattern-shop/products/1001",
                              json={"version": 2, "actions": [duplicate]})
        assert refused.json()["errors"][0]["code"] == "DuplicatePriceScope"
        assert server.history == [("1001", "1", 12.5)]


def test_commercetools_staged_by_default_leaves_the_current_price() -> None:
    with ct_session() as (server, client, product):
        price_id = product["masterData"]["current"]["masterVariant"]["prices"][0]["id"]
        response = client.post(f"{server.url}/pattern-shop/products/1001",
                               json={"version": 1, "actions": [ct_change(price_id, 1250)]})
        master = response.json()["masterData"]
        assert response.status_code == 200
        assert master["hasStagedChanges"] is True
        assert master["staged"]["masterVariant"]["prices"][0]["value"]["centAmount"] == 1250
        assert master["current"]["masterVariant"]["prices"][0]["value"]["centAmount"] == 1000
        assert (server.price("1001", "1"), server.applied) == (10.0, 0)


def test_commercetools_refuses_a_stale_version_and_injects_conflicts() -> None:
    with ct_session() as (server, client, product):
        price_id = product["masterData"]["current"]["masterVariant"]["prices"][0]["id"]
        url = f"{server.url}/pattern-shop/products/1001"
        stale = client.post(url, json={"version": 7, "actions": [
            ct_change(price_id, 1250, staged=False)]})
        assert stale.status_code == 409
        assert stale.json()["errors"][0] == {
            "code": "ConcurrentModification", "currentVersion": 1,
            "message": "Object 1001 has a different version than expected. "
                       "Expected: 7 - Actual: 1."}
        server.conflict_rate = 1.0
        bumped = client.post(url, json={"version": 1, "actions": [
            ct_change(price_id, 1250, staged=False)]})
        assert bumped.status_code == 409
        assert bumped.json()["errors"][0]["currentVersion"] == 2
        assert (server.applied, server.price("1001", "1")) == (0, 10.0)


def test_commercetools_updates_are_atomic() -> None:
    with ct_session() as (server, client, product):
        price_id = product["masterData"]["current"]["masterVariant"]["prices"][0]["id"]
        response = client.post(f"{server.url}/pattern-shop/products/1001", json={
            "version": 1, "actions": [ct_change(price_id, 1250, staged=False),
                                      ct_change("no-such-price", 1300, staged=False)]})
        assert response.status_code == 400
        assert response.json()["errors"][0]["code"] == "InvalidOperation"
        assert (server.applied, server.price("1001", "1"), server.version("1001")) == (0, 10.0, 1)


# Faults -------------------------------------------------------------------------------------

KINDS = ["shopify", "bigcommerce", "commercetools"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_down_server_answers_503_and_applies_nothing(kind: str) -> None:
    with price_writer(kind) as (server, send):
        server.down = True
        response = send(11.0)
        assert response.status_code == 503
        assert isinstance(response.json(), dict)
        assert (server.applied, first_price(server)) == (0, 10.0)
        server.down = False
        assert send(11.0).status_code == 200
        assert first_price(server) == 11.0


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("after_apply", "expected"), [(1.0, 11.0), (0.0, 10.0)])
def test_server_errors_before_or_after_the_change(
    kind: str, after_apply: float, expected: float
) -> None:
    with price_writer(kind) as (server, send):
        server.error_rate, server.error_after_apply_share = 1.0, after_apply
        response = send(11.0)
        assert response.status_code in (500, 502, 503)
        assert first_price(server) == expected


def test_faults_follow_the_seed() -> None:
    def statuses(seed: int) -> list[int]:
        with ShopifyServer(CATALOG, seed=seed) as server, httpx.Client() as client:
            server.error_rate = 0.5
            return [client.post(server.endpoint, headers=SHOPIFY_HEADERS,
                                json=shopify_body("1001", ("5001", "11.00"))).status_code
                    for _ in range(20)]

    first = statuses(3)
    assert first == statuses(3)
    assert 200 in first and set(first) - {200}


@pytest.mark.parametrize(("after_apply", "applied_at_timeout"), [(1.0, 11.0), (0.0, 10.0)])
def test_slow_responses_apply_before_or_after_the_delay(
    after_apply: float, applied_at_timeout: float
) -> None:
    with BigCommerceServer(CATALOG) as server, httpx.Client(timeout=0.1) as client:
        server.timeout_rate, server.timeout_seconds = 1.0, 0.3
        server.error_after_apply_share = after_apply
        with pytest.raises(httpx.ReadTimeout):
            client.put(f"{server.url}/v3/catalog/variants", headers=BC_HEADERS,
                       json=[{"id": 5001, "price": 11.0}])
        assert server.price("1001", "5001") == applied_at_timeout
        time.sleep(0.35)
        assert server.price("1001", "5001") == 11.0
