"""Inventory events trigger repricing. The channels' stock reports are recorded (latest per
item x channel, so replays and late older reports change nothing) and summed per item. A move
beyond the guardrails' `reprice_on_stock` threshold marks the item. One targeted suggestion
run then prices the marked items with that stock, and the approval policy and the delivery
outbox take the result to the channel. On a SQLite file and on the real PostgreSQL, with a
demand model trained on the real Online Retail slice."""

import json
import logging
import re
import shutil
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import pandas as pd
import pytest
import yaml
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event, select
from sqlalchemy.orm import Session

from cli.events import Repricer, consumer
from db import migrate, service_database
from db.channels import load_destinations
from db.outbox import list_deliveries
from db.policy import ApprovalPolicy
from db.stock import pending_repricing, record_stock, repriced, stock_totals
from db.suggestions import list_suggestions
from db.tables import ChannelStockRow, ItemStockRow
from features.errors import InputError
from features.event_log import EventLog
from features.ingest import read_catalog
from features.schemas import validate_events
from features.settings import Settings
from features.store import apply_definitions, feature_store
from features.transforms import build_feature_tables
from models.pricing.guardrails import GuardrailsError, StockThreshold, load_guardrails
from serving.app import create_app
from serving.channels.worker import DeliveryWorker
from serving.config import ServingSettings
from tests.conftest import REPO_ROOT, key_headers, service_settings
from training.pricing.market import load_market_files
from training.pricing.stock import (
    RepricingInputs,
    handle_inventory,
    reprice_pending,
    sync_catalog_stock,
)
from training.pricing.train import train_pricing

THRESHOLD = StockThreshold()
CHANNEL_FEES = "channel,fee_percent,fee_fixed\nweb,2.9,0.30\n"
SCARCE_ITEM, SOLD_ITEM, NEW_ITEM = "21175", "84313B", "NEW-1"
"""Online Retail items sold in the slice (the first sells ~150 a week at 2.55, the second
~13 at 1.95), and an item that never sold."""


def report(event_id: str, item_id: str, channel: str, ts: str, stock: int) -> dict:
    """One `inventory` event, all canonical columns."""
    return {"event_id": event_id, "event_type": "inventory", "user_id": None,
            "session_id": None, "item_id": item_id, "ts": pd.Timestamp(ts, tz="UTC"),
            "quantity": 1, "unit_price": None, "currency": None, "channel": channel,
            "stock_on_hand": stock}


def record(engine: Engine, *reports: dict) -> list[str]:
    return record_stock(engine, validate_events(pd.DataFrame(reports)), THRESHOLD)


def contents(engine: Engine) -> tuple[list[dict], list[dict]]:
    """Every row of both stock tables, in key order."""
    with Session(engine) as session:
        return ([row.as_dict() for row in session.scalars(select(ChannelStockRow).order_by(
                    ChannelStockRow.item_id, ChannelStockRow.channel))],
                [row.as_dict() for row in session.scalars(select(ItemStockRow).order_by(
                    ItemStockRow.item_id))])


@pytest.fixture
def database(empty_database: Engine) -> Engine:
    migrate(empty_database)
    return empty_database


# ----------------------------------------------------------------------------- threshold


@pytest.mark.parametrize(("priced_with", "stock", "moved"), [
    (None, 7, True),    # no price suggested with a known stock yet
    (20, 15, True),     # -25%, 5 units: both at the threshold
    (20, 16, False),    # -20%
    (20, 25, True),     # +25%
    (100, 76, False),   # -24%
    (8, 6, False),      # -25% but 2 units
    (8, 5, True),       # -37.5%, 3 units
    (2, 0, True),       # sold out
    (0, 1, True),       # back in stock
    (0, 0, False),
    (5, 5, False),
])
def test_the_default_threshold(priced_with, stock, moved):
    assert THRESHOLD.moved(priced_with, stock) is moved


def test_the_threshold_is_set_in_the_guardrails_file(tmp_path):
    path = tmp_path / "guardrails.yaml"
    path.write_text("reprice_on_stock:\n  change_percent: 10\n  change_units: 1\n")
    assert load_guardrails(path).reprice_on_stock.moved(20, 18)
    assert load_guardrails(REPO_ROOT / "guardrails.example.yaml").reprice_on_stock == THRESHOLD

    path.write_text("reprice_on_stock:\n  change_units: 0\n")
    with pytest.raises(GuardrailsError, match=re.escape("field 'reprice_on_stock[change_units]'")):
        load_guardrails(path)


# ------------------------------------------------------------------------ recording stock


def test_stock_is_the_sum_of_the_channels_reports_and_a_move_beyond_the_threshold_marks(
        database):
    assert record(database, report("e1", "i1", "web", "2026-03-02 09:00", 12),
                  report("e2", "i1", "etsy", "2026-03-02 09:00", 8),
                  report("e3", "i2", "web", "2026-03-02 09:00", 0)) == ["i1", "i2"]
    assert stock_totals(database) == {"i1": 20, "i2": 0}
    assert repriced(database, {"i1": 20, "i2": 0}, THRESHOLD) == []
    assert pending_repricing(database) == []

    assert record(database, report("e4", "i1", "web", "2026-03-02 10:00", 9)) == []  # 17: -15%
    assert record(database, report("e5", "i1", "etsy", "2026-03-02 10:00", 5)) == ["i1"]  # 14
    assert record(database, report("e6", "i1", "web", "2026-03-02 11:00", 15)) == []  # pending
    assert record(database, report("e7", "i2", "web", "2026-03-02 11:00", 1)) == ["i2"]
    assert stock_totals(database) == {"i1": 20, "i2": 1}
    assert pending_repricing(database) == ["i1", "i2"]


def test_a_replayed_or_older_report_changes_nothing_whatever_the_order(database):
    reports = [report("e1", "i1", "web", "2026-03-02 09:00", 30),
               report("e2", "i1", "web", "2026-03-02 12:00", 20),
               report("e3", "i1", "etsy", "2026-03-02 12:00", 4),
               report("e4", "i1", "etsy", "2026-03-02 12:00", 6),  # same time: e4 > e3 wins
               report("e5", "i2", "web", "2026-03-02 08:00", 9)]
    assert record(database, *reports) == ["i1", "i2"]
    before = contents(database)
    assert [(row["channel"], row["stock_on_hand"], row["event_id"]) for row in before[0]] == [
        ("etsy", 6, "e4"), ("web", 20, "e2"), ("web", 9, "e5")]
    assert stock_totals(database) == {"i1": 26, "i2": 9}

    assert record(database, *reports) == []
    assert record(database, report("e0", "i1", "web", "2026-03-01 23:00", 500),
                  report("e2", "i1", "etsy", "2026-03-02 12:00", 500)) == []
    assert contents(database) == before  # not even a timestamp moved

    for one in reversed(reports):  # one at a time, newest first, as other items
        record(database, one | {"item_id": one["item_id"] + "-late"})
    late = {(row["item_id"].removesuffix("-late"), row["channel"]):
            (row["stock_on_hand"], row["reported_at"], row["event_id"])
            for row in contents(database)[0] if row["item_id"].endswith("-late")}
    assert late == {(row["item_id"], row["channel"]):
                    (row["stock_on_hand"], row["reported_at"], row["event_id"])
                    for row in before[0]}


def test_recording_is_one_transaction(database):
    executed: list[str] = []

    def fail_on_the_totals(_connection, _cursor, statement, *_args) -> None:
        executed.append(" ".join(statement.split()[:3]).upper())
        if executed[-1] == "UPDATE ITEM_STOCK SET":
            raise RuntimeError("the database went away")

    event.listen(database, "before_cursor_execute", fail_on_the_totals)
    try:
        with pytest.raises(RuntimeError, match="went away"):
            record(database, report("e1", "i1", "web", "2026-03-02 09:00", 12))
    finally:
        event.remove(database, "before_cursor_execute", fail_on_the_totals)
    assert {"INSERT INTO ITEM_STOCK", "INSERT INTO CHANNEL_STOCK"} <= set(executed)
    assert contents(database) == ([], [])  # both inserts rolled back

    assert record(database, report("e1", "i1", "web", "2026-03-02 09:00", 12)) == ["i1"]


def test_a_repricing_keeps_the_mark_when_the_stock_moved_again_during_the_run(database):
    assert record(database, report("e1", "i1", "web", "2026-03-02 09:00", 40)) == ["i1"]
    assert record(database, report("e2", "i1", "web", "2026-03-02 10:00", 10)) == []

    assert repriced(database, {"i1": 40}, THRESHOLD) == ["i1"]  # the run used 40: now 10
    assert pending_repricing(database) == ["i1"]
    assert repriced(database, {"i1": 10}, THRESHOLD) == []
    assert pending_repricing(database) == []
    assert contents(database)[1][0]["priced_stock"] == 10


# --------------------------------------------------------------------- end to end, priced


@pytest.fixture(scope="module")
def champion(tmp_path_factory, online_retail_four_months) -> str:
    """The tracking URI of an MLflow store whose `demand-model` champion was trained on the
    four-month Online Retail slice."""
    folder = tmp_path_factory.mktemp("champion")
    (folder / "channels.csv").write_text(CHANNEL_FEES)
    settings = Settings(data_dir=folder / "data")
    train_pricing(settings, load_market_files(online_retail_four_months / "events",
                                              online_retail_four_months / "catalog.parquet",
                                              folder / "channels.csv"))
    return f"sqlite:///{settings.mlflow_dir / 'mlflow.db'}"


def shop(stack: ExitStack, kind: str, tmp_path: Path, slice_dir: Path, champion: str
         ) -> tuple[Settings, RepricingInputs]:
    """Settings on a copy of the slice with the champion, the example approval policy and a
    `web` channel delivering to a price feed file, and the repricing inputs."""
    data_dir = tmp_path / "data"
    shutil.copytree(slice_dir, data_dir)
    (tmp_path / "channels.csv").write_text(CHANNEL_FEES)
    (tmp_path / "channels.yaml").write_text(yaml.safe_dump(
        {"channels": {"web": {"connector": "price_feed", "path": "feeds/web.json"}}}))
    settings = service_settings(stack, kind, data_dir, "stock").model_copy(update={
        "mlflow_tracking_uri": champion,
        "approval_policy": REPO_ROOT / "approval_policy.example.yaml",
        "channels_config": tmp_path / "channels.yaml"})
    return settings, RepricingInputs(data_dir / "events", data_dir / "catalog.parquet",
                                     tmp_path / "channels.csv")


def consume(settings: Settings, inputs: RepricingInputs, *reports: dict) -> list[str]:
    """What the stream consumer does with a batch: append it to the event log, then hand it
    to `handle_inventory`."""
    events = validate_events(pd.DataFrame(reports))
    EventLog(inputs.events_dir).append(events)
    return handle_inventory(settings, events, inputs)


def catalog_stock(inputs: RepricingInputs, item_id: str) -> float:
    catalog = read_catalog(inputs.catalog)
    return catalog.loc[catalog["item_id"] == item_id, "stock_on_hand"].item()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_stock_changes_reprice_through_the_policy_and_the_outbox_to_the_channel(
        kind, tmp_path, online_retail_four_months, champion, caplog):
    policy = ApprovalPolicy()
    with ExitStack() as stack:
        settings, inputs = shop(stack, kind, tmp_path, online_retail_four_months, champion)
        purchase = report("p1", SOLD_ITEM, "web", "2011-03-31 17:00", 0) | {
            "event_type": "purchase", "stock_on_hand": None, "session_id": "s1",
            "unit_price": 1.95, "currency": "GBP"}

        # Plenty of stock, split across two channels' allocations; an item never sold.
        assert consume(settings, inputs, purchase,
                       report("s1", SCARCE_ITEM, "web", "2011-03-31 18:00", 600),
                       report("s2", SCARCE_ITEM, "etsy", "2011-03-31 18:00", 400),
                       report("s3", SOLD_ITEM, "web", "2011-03-31 18:00", 40),
                       report("s4", NEW_ITEM, "web", "2011-03-31 18:00", 5)) == [
            SCARCE_ITEM, SOLD_ITEM, NEW_ITEM]
        with caplog.at_level(logging.WARNING, logger="training.pricing.stock"):
            first = reprice_pending(settings, inputs)

        assert (first.repriced, first.unpriceable, first.pending, first.error) == (
            [SCARCE_ITEM, SOLD_ITEM], [NEW_ITEM], [], None)
        assert f"no sales to price from for {NEW_ITEM}" in caplog.text
        assert catalog_stock(inputs, SCARCE_ITEM) == 1000
        with service_database(settings) as engine:
            batch = {row["item_id"]: row for row in list_suggestions(engine,
                                                                     batch_id=first.batch_id)}
            assert set(batch) == {SCARCE_ITEM, SOLD_ITEM}
            for row in batch.values():
                change = abs(row["suggested_price"] / row["current_price"] - 1) * 100
                assert 0 < change <= policy.max_change_percent
                assert (row["status"], row["reviewed_by"]) == ("approved", "policy")
            queued = {row["item_id"]: row for row in list_deliveries(engine, status="pending")}
            assert {item: (row["channel"], row["price"]) for item, row in queued.items()} == {
                item: ("web", row["suggested_price"]) for item, row in batch.items()}

            with DeliveryWorker(engine, load_destinations(settings.channels_config)) as worker:
                worker.run(lambda: False, until_idle=True)
            feed = json.loads((tmp_path / "feeds/web.json").read_text())
            assert feed == {item: row["suggested_price"] for item, row in batch.items()}
            assert list_deliveries(engine, status="pending") == []
            assert pending_repricing(engine) == []

        # A replay of the reports changes nothing; the scarce item then nearly sells out.
        assert consume(settings, inputs, report("s1", SCARCE_ITEM, "web", "2011-03-31 18:00",
                                                600)) == []
        assert consume(settings, inputs,
                       report("s5", SCARCE_ITEM, "web", "2011-03-31 20:00", 60),
                       report("s6", SCARCE_ITEM, "etsy", "2011-03-31 20:00", 40)) == [
            SCARCE_ITEM]
        second = reprice_pending(settings, inputs)

        assert (second.repriced, second.pending) == ([SCARCE_ITEM], [])
        assert catalog_stock(inputs, SCARCE_ITEM) == 100
        with service_database(settings) as engine:
            [scarce] = list_suggestions(engine, batch_id=second.batch_id)
            change = (scarce["suggested_price"] / scarce["current_price"] - 1) * 100
            assert change > policy.max_change_percent  # scarce: up, outside the envelope
            assert (scarce["status"], scarce["reviewed_by"]) == ("pending", None)
            assert list_deliveries(engine, status="pending") == []
        assert json.loads((tmp_path / "feeds/web.json").read_text()) == feed


def test_a_failed_repricing_leaves_the_items_pending(tmp_path, online_retail_four_months,
                                                     champion, caplog):
    with ExitStack() as stack:
        settings, inputs = shop(stack, "sqlite", tmp_path, online_retail_four_months,
                                champion)
        assert consume(settings, inputs, report("s1", SOLD_ITEM, "web", "2011-03-31 18:00",
                                                40)) == [SOLD_ITEM]
        broken = RepricingInputs(inputs.events_dir, inputs.catalog, tmp_path / "gone.csv")

        with caplog.at_level(logging.ERROR, logger="training.pricing.stock"):
            failed = reprice_pending(settings, broken)

        assert (failed.batch_id, failed.pending) == (None, [SOLD_ITEM])
        assert "gone.csv" in failed.error
        assert "they stay pending" in caplog.text
        with service_database(settings) as engine:
            assert pending_repricing(engine) == [SOLD_ITEM]
            assert list_suggestions(engine, status=None) == []

        done = reprice_pending(settings, inputs)
        assert (done.repriced, done.pending) == ([SOLD_ITEM], [])


def test_the_catalog_takes_the_channels_stock_of_its_items(tmp_path, online_retail_four_months):
    catalog = tmp_path / "catalog.parquet"
    shutil.copy(online_retail_four_months / "catalog.parquet", catalog)
    before = read_catalog(catalog)

    assert sync_catalog_stock(catalog, {SCARCE_ITEM: 1000, SOLD_ITEM: 0, NEW_ITEM: 5}) == [
        SCARCE_ITEM, SOLD_ITEM]
    written = catalog.stat().st_mtime_ns
    assert sync_catalog_stock(catalog, {SCARCE_ITEM: 1000, SOLD_ITEM: 0}) == []

    assert catalog.stat().st_mtime_ns == written
    after = read_catalog(catalog).set_index("item_id")
    assert after.loc[[SCARCE_ITEM, SOLD_ITEM], "stock_on_hand"].tolist() == [1000, 0]
    assert NEW_ITEM not in after.index
    pd.testing.assert_frame_equal(after.drop(columns="stock_on_hand"),
                                  before.set_index("item_id").drop(columns="stock_on_hand"))
    with pytest.raises(InputError, match=r"\.parquet file"):
        sync_catalog_stock(tmp_path / "catalog.csv", {SCARCE_ITEM: 1})


def test_a_stock_report_posted_to_the_api_reprices_and_reaches_the_channel(
        tmp_path, online_retail_four_months, champion):
    """The whole path: POST /v1/events, the stream, the consumer `tailor events consume`
    builds (with its repricer thread), the approval policy, the outbox, the channel."""
    with ExitStack() as stack:
        settings, inputs = shop(stack, "sqlite", tmp_path, online_retail_four_months, champion)
        build_feature_tables(settings.events_dir, read_catalog(settings.catalog_path),
                             settings.feature_tables_dir)
        apply_definitions(feature_store(settings))
        stock = report("api-1", SCARCE_ITEM, "web", "2011-03-31 18:00", 1000)
        stock["ts"] = stock["ts"].isoformat()
        with TestClient(create_app(settings, ServingSettings())) as client:
            response = client.post("/v1/events", json=[stock],
                                   headers=key_headers(settings, "storefront"))
        assert response.status_code == 202
        stopping = threading.Event()
        repricer = Repricer(settings, inputs, stopping)
        worker = consumer(settings, claim_idle_seconds=1.0, entries_per_round=50,
                          max_deliveries=5, repricer=repricer)
        repricer.thread.start()
        try:
            assert worker.run_once(1.0).events == 1
            with service_database(settings) as engine:
                deadline = time.monotonic() + 300
                while not list_deliveries(engine, status="pending"):
                    assert time.monotonic() < deadline, "no approved price queued"
                    time.sleep(0.2)
                (queued,) = list_deliveries(engine, status="pending")
                with DeliveryWorker(engine, load_destinations(settings.channels_config)) as push:
                    push.run(lambda: False, until_idle=True)
        finally:
            stopping.set()
            repricer.thread.join()
        assert (queued["item_id"], queued["channel"]) == (SCARCE_ITEM, "web")
        feed = json.loads((tmp_path / "feeds/web.json").read_text())
        assert feed == {SCARCE_ITEM: queued["price"]}
        assert EventLog(settings.events_dir).read()["event_id"].eq("api-1").sum() == 1
