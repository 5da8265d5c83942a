"""The served recorder on real streams: a SQLite file and the Redis server of the tests."""

import logging
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterator

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from features.event_log import EventLog
from features.ingest import upsert_catalog
from features.served_log import ServedLog, served_dir, served_handler, validate_served
from features.settings import Settings
from features.stream import SERVED, Entry, EventStream, RedisStream, SqliteStream
from serving.app import create_app
from serving.config import ServingSettings
from serving.recs import Recommendation, ScoredItem
from serving.recs.served import ServedRecorder
from tests.conftest import REDIS_URL, SAMPLE_CATALOG, SAMPLE_EVENTS, key_headers, live_redis

PERSONAL = Recommendation([ScoredItem("i2", 0.9, "als"), ScoredItem("i1", 0.4, "popular")],
                          "7", fallback=False)
FALLBACK = Recommendation([ScoredItem("i1", 3.0, "popular")], None, fallback=True)


@pytest.fixture(params=["sqlite", "redis"])
def stream(request, tmp_path) -> Iterator[EventStream]:
    """A real stream of each backend; the Redis one under a name of its own, deleted after."""
    if request.param == "sqlite":
        sqlite_stream = SqliteStream(tmp_path / "stream.db")
        yield sqlite_stream
        sqlite_stream.close()
        return
    client = live_redis()
    redis_stream = RedisStream(REDIS_URL, f"test-served-{uuid.uuid4().hex[:12]}")
    yield redis_stream
    redis_stream.close()
    client.delete(redis_stream.key, redis_stream.dead_key)
    client.close()


def entries_within(stream: EventStream, count: int, seconds: float) -> list[Entry]:
    """The entries read until `count` records arrived or `seconds` passed."""
    deadline = time.monotonic() + seconds
    entries: list[Entry] = []
    while sum(len(e.records) for e in entries) < count and time.monotonic() < deadline:
        entries += stream.read("test-reader", 100, block_seconds=0.05)
    return entries


def records_of(entries: list[Entry]) -> list[dict]:
    assert {entry.kind for entry in entries} <= {SERVED}
    return [record for entry in entries for record in entry.records]


def test_recorded_responses_reach_the_stream_within_a_second(stream, tmp_path):
    recorder = ServedRecorder(stream).start()
    first, second = uuid.uuid4(), uuid.uuid4()
    try:
        started = time.monotonic()
        recorder.record(first, "u1", PERSONAL)
        recorder.record(second, "guest", FALLBACK)
        records = records_of(entries_within(stream, 2, seconds=1.0))
        assert time.monotonic() - started < 1.0
    finally:
        recorder.close()

    responses = validate_served(records)
    assert [(r.request_id, r.user_id, r.model_version, r.fallback) for r in responses] == [
        (str(first), "u1", "7", False), (str(second), "guest", None, True)]
    assert [[(i.item_id, i.score, i.source) for i in r.items] for r in responses] == [
        [("i2", 0.9, "als"), ("i1", 0.4, "popular")], [("i1", 3.0, "popular")]]
    assert abs(responses[0].ts.timestamp() - time.time()) < 5
    settings = Settings(data_dir=tmp_path / "data")
    served_handler(settings)(records)  # what the stream consumer does with them
    stored = ServedLog(served_dir(settings)).read()
    assert stored.groupby("request_id")["position"].agg(list).to_dict() == {
        str(first): [1, 2], str(second): [1]}


def test_a_full_batch_is_sent_at_once_and_the_rest_at_the_interval(stream):
    recorder = ServedRecorder(stream, flush_seconds=60, batch_size=5).start()
    try:
        for _ in range(7):
            recorder.record(uuid.uuid4(), "u1", PERSONAL)
        entries = entries_within(stream, 7, seconds=1.0)
    finally:
        recorder.close()
    assert [len(entry.records) for entry in entries] == [5]
    assert [len(entry.records) for entry in entries_within(stream, 2, seconds=1.0)] == [2]


def test_close_sends_what_is_left(stream):
    recorder = ServedRecorder(stream, flush_seconds=60).start()
    ids = [uuid.uuid4() for _ in range(3)]
    for request_id in ids:
        recorder.record(request_id, "u1", PERSONAL)
    recorder.close()
    records = records_of(entries_within(stream, 3, seconds=1.0))
    assert [record["request_id"] for record in records] == [str(i) for i in ids]


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A Redis URL whose server accepts connections and never answers."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield f"redis://127.0.0.1:{server.getsockname()[1]}/0"


@pytest.mark.parametrize("down", ["closed port", "silent server"])
def test_a_stream_that_is_down_never_blocks_or_fails_record(down, request, caplog):
    url = "redis://127.0.0.1:1/0" if down == "closed port" else request.getfixturevalue(
        "silent_server")
    stream = RedisStream(url, f"test-served-{uuid.uuid4().hex[:12]}", timeout_seconds=0.5)
    recorder = ServedRecorder(stream, capacity=100, flush_seconds=0.05, batch_size=20).start()
    slowest = 0.0
    with caplog.at_level(logging.WARNING, logger="serving.recs.served"):
        deadline = time.monotonic() + 1.0  # several flushes fail meanwhile
        while time.monotonic() < deadline:
            started = time.perf_counter()
            recorder.record(uuid.uuid4(), "u1", PERSONAL)
            slowest = max(slowest, time.perf_counter() - started)
            time.sleep(0.0005)
        closing = time.monotonic()
        recorder.close(timeout=5)
        assert time.monotonic() - closing < 2.5
    stream.close()
    assert slowest < 0.05
    assert recorder.pending() <= 100 and recorder.dropped > 0
    assert "event stream is unavailable" in caplog.text
    assert "recommendation responses dropped" in caplog.text


def test_responses_buffered_while_the_stream_is_down_are_sent_once_it_is_back(tmp_path):
    path = tmp_path / "stream.db"
    stream = SqliteStream(path)
    breaker = sqlite3.connect(path)  # appends fail while the entries table is renamed away
    breaker.execute("ALTER TABLE entries RENAME TO entries_away")
    recorder = ServedRecorder(stream, capacity=10, flush_seconds=0.05, batch_size=4).start()
    ids = [uuid.uuid4() for _ in range(25)]
    try:
        for request_id in ids:
            recorder.record(request_id, "u1", PERSONAL)
        time.sleep(0.3)  # flushes fail meanwhile
        assert recorder.pending() == 10
        breaker.execute("ALTER TABLE entries_away RENAME TO entries")
        records = records_of(entries_within(stream, 10, seconds=2.0))
    finally:
        recorder.close()
        breaker.close()
        stream.close()
    assert [record["request_id"] for record in records] == [str(i) for i in ids[15:]]
    assert recorder.dropped == 15


def test_requests_through_the_api_are_recorded(tmp_path):
    data_dir = tmp_path / "data"
    EventLog(data_dir / "events").append(pd.DataFrame(SAMPLE_EVENTS))
    upsert_catalog(data_dir / "catalog.parquet", SAMPLE_CATALOG)
    settings = Settings(data_dir=data_dir, feast_project=f"t{uuid.uuid4().hex[:8]}")
    app = create_app(settings, ServingSettings(clock="model"))
    with TestClient(app, headers=key_headers(settings, "storefront")) as client:
        app.state.served = recorder = ServedRecorder(app.state.stream).start()
        try:
            bodies = [client.get(f"/v1/users/{user}/recommendations", params={"k": 2}).json()
                      for user in ("u1", "someone-new")]
            records = records_of(entries_within(app.state.stream, 2, seconds=1.0))
        finally:
            recorder.close()
    assert [(r["request_id"], r["user_id"], r["model_version"], r["fallback"], r["items"])
            for r in records] == [
        (body["request_id"], user, body["model_version"], body["fallback"], body["items"])
        for body, user in zip(bodies, ("u1", "someone-new"), strict=True)]
    assert [item["item_id"] for item in bodies[0]["items"]] == ["i1", "i2"]
