"""The stream consumer on both stores: events reach the log and the online features once,
whatever is redelivered, killed or split between consumers; what keeps failing becomes a
dead letter with its reason; Redis going away and coming back loses nothing accepted."""

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from features.consumer import Consumer, RoundResult
from features.event_log import EventLog
from features.feature_repo.definitions import RECS_RANKER_SERVICE
from features.online import ServiceReader
from features.online_updates import OnlineFeatureWriter
from features.schemas import validate_events
from features.settings import Settings
from features.store import apply_definitions, feature_store, materialize
from features.stream import EVENTS, StreamUnavailableError, open_stream
from features.transforms import build_feature_tables
from serving.app import create_app
from serving.config import ServingSettings
from tests.conftest import SAMPLE_CATALOG, SAMPLE_EVENTS, key_headers

TAILOR = str(Path(sys.executable).with_name("tailor"))
CLAIM_IDLE = 0.5
USERS = [f"u{n}" for n in range(1, 9)]
ITEMS = ["i1", "i2"]


def materialized(settings: Settings) -> Settings:
    """`settings` with the sample history in the log, built, applied and materialized."""
    EventLog(settings.events_dir).append(validate_events(pd.DataFrame(SAMPLE_EVENTS)))
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    SAMPLE_CATALOG.to_parquet(settings.catalog_path, index=False)
    build_feature_tables(settings.events_dir, SAMPLE_CATALOG, settings.feature_tables_dir)
    store = feature_store(settings)
    apply_definitions(store)
    materialize(store, datetime(2011, 2, 1, tzinfo=UTC))
    return settings


@pytest.fixture
def ready(store_settings) -> Settings:
    return materialized(store_settings)


def purchases(n: int, prefix: str = "p", seed: int = 0) -> list[dict]:
    """`n` purchases (JSON records as the API dumps them) of the sample items by USERS."""
    rng = np.random.default_rng(seed)
    return [{"event_id": f"{prefix}{k}", "event_type": "purchase",
             "user_id": USERS[rng.integers(len(USERS))], "session_id": f"{prefix}-s{k}",
             "item_id": ITEMS[rng.integers(len(ITEMS))],
             "ts": f"2011-02-{1 + k % 20:02d}T10:{k % 60:02d}:00Z", "quantity": 1 + k % 3,
             "unit_price": 2.5, "currency": "GBP", "channel": "web"}
            for k in range(n)]


def consumer(settings: Settings, name: str = "c1", **options) -> Consumer:
    writer = OnlineFeatureWriter(feature_store(settings),
                                 SAMPLE_CATALOG.set_index("item_id")["category"])
    return Consumer(open_stream(settings, CLAIM_IDLE), EventLog(settings.events_dir), writer,
                    name=name, **options)


def drain(worker: Consumer, block: float = 0.1) -> RoundResult:
    total = RoundResult()
    while (result := worker.run_once(block)).entries:
        total.events += result.events
        total.written += result.written
        total.dead_letters += result.dead_letters
    return total


def online_users(settings: Settings) -> pd.DataFrame:
    """Online user features of USERS: monetary value and the index's purchase counts."""
    reader = ServiceReader(feature_store(settings), RECS_RANKER_SERVICE)
    rows = []
    for user in USERS:
        columns = reader.read_columns({"user_id": user, "item_id": ITEMS},
                                      {"as_of": datetime(2011, 3, 1, tzinfo=UTC)},
                                      skip=("item_stats",))
        rows.append({"user_id": user, "monetary": columns["user_monetary"][0],
                     **{f"bought_{item}": columns["user_item_times_bought"][k]
                        for k, item in enumerate(ITEMS)}})
    return pd.DataFrame(rows).set_index("user_id")


def expected_users(settings: Settings) -> pd.DataFrame:
    """What the online features must say: every purchase and return of the log, once."""
    log = EventLog(settings.events_dir).read()
    sales = log[log["event_type"].isin(["purchase", "return"]) & log["user_id"].isin(USERS)]
    sign = np.where(sales["event_type"] == "purchase", 1, -1)
    amount = (sales["quantity"] * sales["unit_price"] * sign).groupby(sales["user_id"]).sum()
    bought = sales[sales["event_type"] == "purchase"].pivot_table(
        index="user_id", columns="item_id", values="event_id", aggfunc="count")
    frame = pd.DataFrame({"monetary": amount.round(2)}).reindex(USERS)
    for item in ITEMS:
        frame[f"bought_{item}"] = bought.get(item, np.nan)
    return frame.rename_axis("user_id")


def assert_counted_once(settings: Settings, sent: list[dict]) -> None:
    log = EventLog(settings.events_dir).read()
    ids = set(log["event_id"])
    assert {e["event_id"] for e in sent} <= ids
    assert log["event_id"].is_unique
    pd.testing.assert_frame_equal(online_users(settings).fillna(0), expected_users(settings)
                                  .fillna(0), check_dtype=False)


def test_events_reach_the_log_and_the_online_features_once(ready):
    stream = open_stream(ready)
    sent = purchases(60)
    for start in range(0, 60, 20):
        stream.append(EVENTS, sent[start:start + 20])
    stream.append(EVENTS, sent[:20])  # the storefront sent a batch again
    result = drain(consumer(ready))
    assert (result.events, result.written) == (80, 60)
    assert stream.backlog() == 0
    assert_counted_once(ready, sent)


def test_a_consumer_stopped_between_its_writes_is_finished_by_the_next(ready):
    class FailingWrite(OnlineFeatureWriter):
        def write(self, rows):
            raise RuntimeError("killed between the log and the online store")

    stream = open_stream(ready)
    sent = purchases(30)
    stream.append(EVENTS, sent)
    broken = consumer(ready, name="broken")
    broken.online = FailingWrite(feature_store(ready), pd.Series(dtype=object))
    assert broken.run_once(0.1).failed_entries  # journal left, entry not acknowledged
    assert broken.journal.pending() is not None
    time.sleep(CLAIM_IDLE * 1.5)
    result = drain(consumer(ready, name="next"))
    assert result.events == 30 and result.written == 0  # the log had them: the journal did
    assert broken.journal.pending() is None
    assert_counted_once(ready, sent)


def test_two_consumers_split_the_stream(ready):
    stream = open_stream(ready)
    sent = purchases(200)
    for start in range(0, 200, 10):
        stream.append(EVENTS, sent[start:start + 10])
    counts = {}

    def run(name: str) -> None:
        counts[name] = drain(consumer(ready, name=name, entries_per_round=2)).events

    threads = [threading.Thread(target=run, args=(name,)) for name in ("c1", "c2")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert counts["c1"] + counts["c2"] == 200 and min(counts.values()) > 0
    assert_counted_once(ready, sent)


def test_a_record_that_keeps_failing_becomes_a_dead_letter_and_the_rest_goes_on(ready):
    stream = open_stream(ready)
    good = purchases(5)
    bad = {**purchases(1, prefix="bad")[0], "quantity": 0}
    stream.append(EVENTS, [*good[:2], bad, *good[2:]])
    worker = consumer(ready, max_deliveries=2)
    first = worker.run_once(0.1)
    assert first.failed_entries and stream.backlog() == 1
    time.sleep(CLAIM_IDLE * 1.5)
    second = worker.run_once(0.1)
    assert second.dead_letters == 1 and stream.backlog() == 0
    (letter,) = stream.dead_letters()
    assert letter.records == [bad]
    assert "quantity" in letter.reason
    assert_counted_once(ready, good)


def start_consumer(settings: Settings, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAILOR_")}
    env.update(TAILOR_DATA_DIR=str(settings.data_dir), TAILOR_FEAST_PROJECT=settings.feast_project)
    if settings.redis_url:
        env["TAILOR_REDIS_URL"] = settings.redis_url
    with open(log, "ab") as output:
        return subprocess.Popen([TAILOR, "events", "consume", "--entries-per-round", "1",
                                 "--claim-idle-seconds", str(CLAIM_IDLE)],
                                env=env, stdout=output, stderr=subprocess.STDOUT)


def test_a_consumer_killed_mid_batch_and_restarted_loses_and_repeats_nothing(ready, tmp_path):
    stream = open_stream(ready)
    sent = purchases(3000, seed=3)
    for start in range(0, len(sent), 100):
        stream.append(EVENTS, sent[start:start + 100])
    log = tmp_path / "consumer.log"
    rng = np.random.default_rng(11)
    kills = 0
    while stream.backlog() and kills < 4:
        process = start_consumer(ready, log)
        before = stream.backlog()
        deadline = time.monotonic() + 60
        while stream.backlog() == before and time.monotonic() < deadline:
            time.sleep(0.01)  # started consuming
        time.sleep(rng.uniform(0.0, 0.3))
        process.send_signal(signal.SIGKILL)
        process.wait()
        kills += 1
    process = start_consumer(ready, log)
    deadline = time.monotonic() + 120
    while stream.backlog() and time.monotonic() < deadline:
        time.sleep(0.05)
    process.terminate()
    assert process.wait(timeout=30) == 0, log.read_text()[-2000:]
    assert stream.backlog() == 0, log.read_text()[-2000:]
    assert kills >= 2
    assert_counted_once(ready, sent)


def test_redis_stopped_and_started_during_ingestion_loses_nothing_accepted(
        private_redis, tmp_path):
    settings = materialized(Settings(data_dir=tmp_path / "data", redis_url=private_redis.url,
                                     feast_project=f"t{uuid.uuid4().hex[:8]}"))
    headers = key_headers(settings, "storefront")
    sent = purchases(400, seed=5)
    accepted, refused = [], 0
    with TestClient(create_app(settings, ServingSettings())) as client:
        for number, start in enumerate(range(0, len(sent), 20)):
            if number == 5:
                private_redis.stop()
            if number == 12:
                private_redis.start()
            response = client.post("/v1/events", json=sent[start:start + 20], headers=headers)
            if response.status_code == 202:
                accepted += sent[start:start + 20]
            else:
                assert response.status_code == 503 and response.headers["Retry-After"]
                refused += 1
            if number == 8:  # the consumer meets the outage too
                with pytest.raises(StreamUnavailableError):
                    consumer(settings).run_once(0.1)
    assert refused == 7 and len(accepted) == 400 - 7 * 20
    drain(consumer(settings))
    stored = set(EventLog(settings.events_dir).read()["event_id"])
    assert {e["event_id"] for e in accepted} <= stored
    refused_ids = {e["event_id"] for e in sent} - {e["event_id"] for e in accepted}
    assert not refused_ids & stored  # a 503 wrote nothing
    assert_counted_once(settings, accepted)
