"""The review page in a real browser: Debian's Chromium (`/usr/bin/chromium`, installed by
`scripts/ensure-chromium.sh`, which `make test` runs) driven by Playwright against the service
served by uvicorn. A merchandiser logs in, filters, approves one suggestion by clicking, edits
another's price, bulk-rejects a filtered set; the database shows each decision. Screenshots
go to a temporary folder, or to `docs/images/` with `UPDATE_SCREENSHOTS=1` (the README's)."""

import os
import socket
import threading
import time
import uuid
from pathlib import Path

import pytest
import uvicorn
from playwright.sync_api import Page, expect, sync_playwright

from db import engine_for, migrate
from db.keys import create_key
from db.reviews import list_decisions
from db.suggestions import list_suggestions
from features.settings import Settings
from serving.app import create_app
from serving.config import ServingSettings
from tests.conftest import REPO_ROOT
from tests.test_review import OFFERS, store_batch

CHROMIUM = Path("/usr/bin/chromium")
MORE_OFFERS = [(f"q{number:02d}", channel, 7.49 + number % 9)
               for number in range(24) for channel in ("web", "etsy", "amazon")]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def served(tmp_path):
    """The service on a free local port with two stored batches; yields (base URL, engine,
    a merchandiser key)."""
    if not CHROMIUM.exists():
        pytest.fail(f"Chromium is missing at {CHROMIUM}: run scripts/ensure-chromium.sh")
    settings = Settings(data_dir=tmp_path / "data", feast_project=f"t{uuid.uuid4().hex[:8]}")
    settings.data_dir.mkdir(parents=True)
    engine = engine_for(settings.database)
    migrate(engine)
    store_batch(engine, MORE_OFFERS, "demand-model:6")
    store_batch(engine, OFFERS, "demand-model:7")
    key, _ = create_key(engine, "merchandiser", "alice")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings, ServingSettings()),
                                           host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the service did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", engine, key
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        engine.dispose()


@pytest.fixture
def page():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
        context = browser.new_context(viewport={"width": 1500, "height": 900})
        yield context.new_page()
        browser.close()


def screenshots_dir(tmp_path: Path) -> Path:
    folder = REPO_ROOT / "docs/images" if os.environ.get("UPDATE_SCREENSHOTS") else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def status_of(engine, item_id: str, channel: str) -> dict:
    [row] = list_suggestions(engine, item_id=item_id, channel=channel)
    return row


def test_a_merchandiser_reviews_in_the_browser(served, page: Page, tmp_path):
    base, engine, key = served
    shots = screenshots_dir(tmp_path)

    page.goto(f"{base}/review")
    expect(page).to_have_url(f"{base}/review/login")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_text("Signed in as")).to_contain_text("alice")
    cookie = next(c for c in page.context.cookies() if c["name"] == "tailor_review")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and key not in cookie["value"]
    expect(page.locator("h1")).to_have_text(f"{len(OFFERS) + len(MORE_OFFERS)} pending "
                                            "suggestions")
    page.screenshot(path=shots / "review-queue.png")

    # Filter to one channel, then approve one suggestion by clicking.
    page.get_by_label("Channel", exact=True).select_option("web")
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("h1")).to_have_text("26 pending suggestions")
    row = page.locator('tr[data-item="p1"][data-channel="web"]')
    row.get_by_role("button", name="Approve").click()
    expect(page.locator(".flash.ok")).to_contain_text("Approved p1 on web")
    expect(page.get_by_label("Channel", exact=True)).to_have_value("web")  # the same filters
    assert status_of(engine, "p1", "web")["status"] == "approved"

    # Edit another's price inline: first outside the guardrails (refused, naming the rule),
    # then at its current price.
    target = status_of(engine, "p2", "web")
    row = page.locator('tr[data-item="p2"][data-channel="web"]')
    row.get_by_label("New price for p2 on web").fill(f"{target['price_ceiling'] + 5:.2f}")
    row.get_by_label("New price for p2 on web").evaluate("input => input.removeAttribute('max')")
    row.get_by_role("button", name="Set price").click()
    expect(page.locator(".flash.error")).to_contain_text(
        f"rule: {target['price_ceiling_rule']}")
    assert status_of(engine, "p2", "web")["status"] == "pending"
    row = page.locator('tr[data-item="p2"][data-channel="web"]')
    row.get_by_label("New price for p2 on web").fill(f"{target['current_price']:.2f}")
    row.get_by_role("button", name="Set price").click()
    expect(page.locator(".flash.ok")).to_contain_text("(edited)")
    edited = status_of(engine, "p2", "web")
    assert (edited["status"], edited["approved_price"]) == ("edited", target["current_price"])

    # Bulk-reject a filtered set: the etsy suggestions of the newest batch, selected on the
    # page with the select-all box.
    page.get_by_label("Channel", exact=True).select_option("etsy")
    page.get_by_label("Sort", exact=True).select_option("newest")
    page.get_by_role("button", name="Apply").click()
    batch = list_suggestions(engine, item_id="p1", channel="etsy")[0]["batch_id"]
    page.get_by_label("Batch", exact=True).select_option(batch)
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("h1")).to_have_text("2 pending suggestions")
    page.get_by_label("Select every pending suggestion on this page").check()
    expect(page.locator("#selected-count")).to_have_text("2 selected")
    page.get_by_label("Reason for the bulk rejection").fill("etsy follows the web shop")
    page.locator("#bulk").get_by_role("button", name="Reject").click()
    expect(page.locator(".flash.ok")).to_have_text("Rejected 2 suggestions.")
    for item in ("p1", "p3"):
        assert status_of(engine, item, "etsy")["status"] == "rejected"
    assert {entry["reason"] for entry in list_decisions(engine, channel="etsy")} == {
        "etsy follows the web shop"}
    assert status_of(engine, "q00", "etsy")["status"] == "pending"  # outside the filter

    # The item's audit history.
    page.get_by_label("Status", exact=True).select_option("rejected")
    page.get_by_role("button", name="Apply").click()
    page.get_by_role("link", name="p1", exact=True).click()
    expect(page.locator("h1")).to_have_text("Item p1")
    expect(page.locator("table.history tbody tr")).to_have_count(2)
    expect(page.locator("table.history")).to_contain_text("etsy follows the web shop")
    page.screenshot(path=shots / "review-item.png", full_page=True)
