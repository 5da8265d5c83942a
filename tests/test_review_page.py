"""The review page over HTTP (its browser test is `test_review_browser.py`): log in with a
merchandiser key, a session cookie that never holds the key, CSRF on every form, decisions
and their refusals as messages, filters, sorting and paging done by the database, an item's
audit history, the delivery of approved prices to their channels and the retry of a dead
letter. On a SQLite file and on the real PostgreSQL."""

import html
import re
from contextlib import ExitStack
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event

from db import engine_for, migrate
from db.keys import create_key, revoke_key
from db.outbox import list_deliveries
from db.reviews import list_decisions
from db.suggestions import list_suggestions
from serving.app import create_app
from serving.auth import KeyCache
from serving.config import ServingSettings
from serving.review.pages import PAGE_SIZE
from tests.conftest import service_settings
from tests.test_channel_deliveries_api import attempt
from tests.test_review import OFFERS, store_batch

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
FLASH = re.compile(r'<p class="flash (ok|error)"[^>]*>([^<]*)</p>')
ROW = re.compile(r'<tr id="suggestion-(\d+)"')
DELIVERY_ROW = re.compile(r'<tr id="delivery-(\d+)"')


@pytest.fixture(params=["sqlite", "postgresql"])
def site(request, tmp_path):
    """The app on a database with one stored batch; yields (client, engine, settings)."""
    with ExitStack() as stack:
        settings = service_settings(stack, request.param, tmp_path / "data", "test_review_page")
        engine = engine_for(settings.database)
        stack.callback(engine.dispose)
        migrate(engine)
        store_batch(engine, OFFERS, "demand-model:7")
        client = stack.enter_context(TestClient(create_app(settings, ServingSettings())))
        yield client, engine, settings


def log_in(client: TestClient, key: str):
    form = client.get("/review/login")
    return client.post("/review/login", data={"key": key,
                                              "csrf_token": CSRF.search(form.text)[1]},
                       follow_redirects=False)


def signed_in(client: TestClient, engine, role: str = "merchandiser",
              name: str = "alice") -> str:
    """Log the client in with a new key; returns the page's CSRF token."""
    key, _ = create_key(engine, role, name)
    assert log_in(client, key).status_code == 303
    return CSRF.search(client.get("/review").text)[1]


def flash(response) -> tuple[str, str]:
    found = FLASH.search(response.text)
    assert found, response.text[:500]
    return found[1], html.unescape(found[2])


def test_the_page_needs_a_merchandiser_key_and_keeps_only_its_hash(site):
    client, engine, _ = site
    assert client.get("/review", follow_redirects=False).headers["location"] == "/review/login"
    storefront, _ = create_key(engine, "storefront", "shop")
    merchandiser, _ = create_key(engine, "merchandiser", "alice")

    assert log_in(client, "tlr_not-a-key").status_code == 401
    refused = log_in(client, storefront)
    assert refused.status_code == 403 and "role &#39;storefront&#39;" in refused.text
    form = client.get("/review/login")
    forged = client.post("/review/login", data={"key": merchandiser, "csrf_token": "forged"})
    assert forged.status_code == 403 and "session" not in client.cookies
    assert "tailor_review" not in client.cookies

    accepted = log_in(client, merchandiser)
    assert accepted.status_code == 303 and accepted.headers["location"] == "/review"
    cookie = next(value for value in accepted.headers.get_list("set-cookie")
                  if value.startswith("tailor_review="))
    assert {"httponly", "samesite=lax", "path=/review"} <= {
        part.strip().lower() for part in cookie.split(";")}
    assert merchandiser not in cookie and merchandiser[4:] not in cookie
    page = client.get("/review")
    assert page.status_code == 200 and "Signed in as <strong>alice</strong>" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"
    assert CSRF.search(form.text)[1] not in page.text  # the session has its own token

    revoke_key(engine, "alice")
    client.app.state.keys = KeyCache(seconds=0)  # no key cache: the revocation shows at once
    assert client.get("/review", follow_redirects=False).headers["location"] == "/review/login"


def test_every_form_needs_the_session_token(site):
    client, engine, _ = site
    csrf = signed_in(client, engine)
    target = list_suggestions(engine)[0]["id"]
    for path, data in [(f"/review/suggestions/{target}/approve", {}),
                       (f"/review/suggestions/{target}/reject", {"reason": "no"}),
                       (f"/review/suggestions/{target}/edit", {"price": "9.99"}),
                       ("/review/bulk", {"action": "reject", "scope": "matching",
                                         "reason": "no"}),
                       ("/review/logout", {})]:
        assert client.post(path, data=data).status_code == 422, path  # no token at all
        wrong = client.post(path, data=data | {"csrf_token": csrf[:-2] + "xx"})
        assert wrong.status_code == 403 and "did not come from this page" in wrong.text, path
    assert {row["status"] for row in list_suggestions(engine)} == {"pending"}
    assert client.post("/review/logout", data={"csrf_token": csrf},
                       follow_redirects=False).headers["location"] == "/review/login"
    assert client.get("/review", follow_redirects=False).status_code == 303


def test_decisions_and_their_refusals_show_as_messages(site):
    client, engine, _ = site
    csrf = signed_in(client, engine)
    rows = {(row["item_id"], row["channel"]): row for row in list_suggestions(engine)}
    back = "/review?status=pending&channel=web"

    approve = rows[("p1", "web")]
    done = client.post(f"/review/suggestions/{approve['id']}/approve",
                       data={"csrf_token": csrf, "next": back})
    assert urlsplit(str(done.url)).query == "status=pending&channel=web"
    assert flash(done) == ("ok", f"Approved p1 on web at {approve['suggested_price']:.2f}.")
    again = client.post(f"/review/suggestions/{approve['id']}/approve",
                        data={"csrf_token": csrf})
    assert flash(again)[0] == "error" and "is approved by alice" in flash(again)[1]

    edit = rows[("p2", "web")]
    too_high = client.post(f"/review/suggestions/{edit['id']}/edit",
                           data={"csrf_token": csrf, "price": f"{edit['price_ceiling'] + 1:.2f}"})
    assert flash(too_high)[0] == "error"
    assert f"(rule: {edit['price_ceiling_rule']})" in flash(too_high)[1]
    not_a_price = client.post(f"/review/suggestions/{edit['id']}/edit",
                              data={"csrf_token": csrf, "price": "twelve"})
    assert flash(not_a_price) == ("error", "Field 'price' must be a number, got 'twelve'.")

    no_reason = client.post(f"/review/suggestions/{edit['id']}/reject",
                            data={"csrf_token": csrf, "reason": "  "})
    assert "reason" in flash(no_reason)[1]
    nothing = client.post("/review/bulk", data={"csrf_token": csrf, "action": "approve"})
    assert flash(nothing) == ("error", "Select at least one suggestion first.")
    elsewhere = client.post("/review/bulk", data={
        "csrf_token": csrf, "action": "reject", "scope": "matching", "channel": "etsy",
        "reason": "etsy prices follow the web shop", "next": "https://evil.example/"})
    assert str(elsewhere.url) == "http://testserver/review"  # never off-site
    assert flash(elsewhere) == ("ok", "Rejected 2 suggestions.")

    by_status = {(row["item_id"], row["channel"]): row["status"]
                 for row in list_suggestions(engine)}
    assert by_status == {("p1", "web"): "approved", ("p1", "etsy"): "rejected",
                         ("p2", "web"): "pending", ("p2", "amazon"): "pending",
                         ("p3", "etsy"): "rejected"}
    assert {entry["reason"] for entry in list_decisions(engine, channel="etsy")} == {
        "etsy prices follow the web shop"}
    history = client.get("/review/items/p1")
    assert history.status_code == 200
    assert "etsy prices follow the web shop" in history.text and "alice" in history.text
    assert client.get("/review/items/nope").status_code == 404


def test_filters_sort_and_pages_come_from_the_database(site):
    client, engine, _ = site
    many = [(f"q{number:03d}", channel, 5.49 + number % 20)
            for number in range(60) for channel in ("web", "etsy")]
    store_batch(engine, many, "demand-model:8")
    signed_in(client, engine)

    page = client.get("/review", params={"channel": "web", "sort": "gain_desc"})
    ids = [int(found) for found in ROW.findall(page.text)]
    web = [row for row in list_suggestions(engine, status="pending", channel="web")]
    assert f"{len(web)} pending suggestions" in page.text
    gains = {row["id"]: row["expected_profit_suggested"] - row["expected_profit_current"]
             for row in web}
    assert len(ids) == PAGE_SIZE
    assert [gains[i] for i in ids] == sorted(gains.values(), reverse=True)[:PAGE_SIZE]

    last = client.get("/review", params={"channel": "web", "sort": "gain_desc", "page": 99})
    assert len(ROW.findall(last.text)) == len(web) - PAGE_SIZE  # clamped to the last page
    assert 'rel="prev"' in last.text and 'rel="next"' not in last.text
    link = re.search(r'rel="prev" href="([^"]+)"', last.text)[1].replace("&amp;", "&")
    assert parse_qs(urlsplit(link).query) == {"status": ["pending"], "channel": ["web"],
                                               "sort": ["gain_desc"], "page": ["1"]}

    quilting = client.get("/review", params={"category": "quilting"})
    assert {int(found) for found in ROW.findall(quilting.text)} == {
        row["id"] for row in list_suggestions(engine, status="pending", category="quilting")}
    assert client.get("/review", params={"status": "lost"}).status_code == 422
    assert client.get("/review", params={"sort": "random"}).status_code == 422


def delivery_of(page_text: str, suggestion_id: int) -> str:
    """The delivery status shown in a suggestion's row, in words."""
    row = page_text.split(f'<tr id="suggestion-{suggestion_id}"', 1)[1].split("</tr>", 1)[0]
    found = re.search(r'data-delivery="\w+">(.*?)\n</div>', row, re.S)
    assert found, row
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", found[1])).split())


def test_approved_suggestions_show_their_delivery(site):
    client, engine, _ = site
    csrf = signed_in(client, engine)
    ids = {(row["item_id"], row["channel"]): row["id"] for row in list_suggestions(engine)}
    for item_id, channel, _ in OFFERS:
        client.post(f"/review/suggestions/{ids[item_id, channel]}/approve",
                    data={"csrf_token": csrf})
    attempt(engine, "web")  # the older web approval (p1) is delivered, p2 waits its turn
    attempt(engine, "amazon", "HTTP 400: SKU p2 is not listed")
    newer = store_batch(engine, [("p3", "etsy", 4.99)], "demand-model:8")
    [p3] = list_suggestions(engine, batch_id=newer)
    client.post(f"/review/suggestions/{p3['id']}/approve", data={"csrf_token": csrf})
    delivered_at = list_deliveries(engine, status="delivered")[0]["delivered_at"]

    statements: list[str] = []

    def record(_connection, _cursor, statement, *_) -> None:
        statements.append(statement)

    database = client.app.state.database.engine
    event.listen(database, "before_cursor_execute", record)
    try:
        page = client.get("/review", params={"status": "approved"})
    finally:
        event.remove(database, "before_cursor_execute", record)

    assert page.status_code == 200
    assert delivery_of(page.text, ids[("p1", "web")]) == (
        f"delivered {delivered_at:%Y-%m-%d %H:%M} UTC")
    assert delivery_of(page.text, ids[("p2", "web")]) == "queued for web"
    assert delivery_of(page.text, ids[("p2", "amazon")]) == (
        "failed after 1 attempt: HTTP 400: SKU p2 is not listed")
    assert delivery_of(page.text, ids[("p3", "etsy")]) == "superseded by a newer approval"
    assert delivery_of(page.text, p3["id"]) == "queued for etsy"
    assert "/review/deliveries?status=failed&amp;channel=amazon" in page.text
    assert '<span class="badge">1 failed</span>' in page.text
    outbox_reads = [sql for sql in statements if "channel_deliveries" in sql]
    assert len(outbox_reads) == 2  # the rows' deliveries and the failed count: no N+1
    item = client.get("/review/items/p2")
    assert delivery_of(item.text, ids[("p2", "amazon")]).startswith("failed after 1 attempt")
    pending = client.get("/review")  # the pending rows have no delivery to read
    assert 'class="delivery' not in pending.text


def test_the_deliveries_page_lists_dead_letters_and_retries_them(site):
    client, engine, _ = site
    csrf = signed_in(client, engine)
    ids = {(row["item_id"], row["channel"]): row["id"] for row in list_suggestions(engine)}
    for offer in [("p1", "web"), ("p2", "amazon"), ("p3", "etsy")]:
        client.post(f"/review/suggestions/{ids[offer]}/approve", data={"csrf_token": csrf})
    dead = attempt(engine, "amazon", "HTTP 400: SKU p2 is not listed")
    other = attempt(engine, "etsy", "HTTP 503 after 5 attempts")

    failed = client.get("/review/deliveries")
    assert failed.status_code == 200
    assert [int(found) for found in DELIVERY_ROW.findall(failed.text)] == [other, dead]
    assert "2 failed deliveries" in failed.text and "HTTP 400: SKU p2 is not listed" in failed.text
    assert failed.text.count(">Retry</button>") == 2
    amazon = client.get("/review/deliveries", params={"channel": "amazon"})
    assert [int(found) for found in DELIVERY_ROW.findall(amazon.text)] == [dead]
    every = client.get("/review/deliveries", params={"status": "any"})
    assert len(DELIVERY_ROW.findall(every.text)) == 3 and every.text.count(">Retry<") == 2

    retry = f"/review/deliveries/{dead}/retry"
    back = "/review/deliveries?status=failed&channel=amazon&page=1"
    assert client.post(retry, data={"next": back}).status_code == 422  # no token at all
    forged = client.post(retry, data={"csrf_token": csrf[:-2] + "xx", "next": back})
    assert forged.status_code == 403 and "did not come from this page" in forged.text
    assert list_deliveries(engine, status="failed", channel="amazon")[0]["id"] == dead

    done = client.post(retry, data={"csrf_token": csrf, "next": back})
    assert urlsplit(str(done.url)).query == "status=failed&channel=amazon&page=1"
    [queued] = list_deliveries(engine, status="pending", channel="amazon")
    assert flash(done) == ("ok", f"Delivery {dead} of p2 on amazon at {queued['price']:.2f} is "
                                 "queued again.")
    assert DELIVERY_ROW.findall(done.text) == []
    again = client.post(retry, data={"csrf_token": csrf, "next": back})
    assert flash(again) == ("error", f"Delivery {dead} is pending; only failed deliveries can "
                                     "be retried.")
    unknown = client.post("/review/deliveries/999999/retry", data={"csrf_token": csrf})
    assert str(unknown.url) == "http://testserver/review/deliveries"
    assert flash(unknown) == ("error", "No channel delivery with id 999999.")
    assert '<span class="badge">1 failed</span>' in unknown.text
    assert client.get("/review/deliveries", params={"status": "lost"}).status_code == 422
