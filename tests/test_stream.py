"""The event stream on both backends (a real Redis and the SQLite file): appends are whole,
entries go to one consumer at a time, unacknowledged ones are taken over after the claim
idle time with their delivery count, acknowledged ones never come back."""

import time
import uuid

import pytest
import redis

from features.stream import (
    EVENTS,
    SERVED,
    RedisStream,
    SqliteStream,
    StreamUnavailableError,
)
from tests.conftest import REDIS_URL

CLAIM_IDLE = 0.3


@pytest.fixture(params=["sqlite", "redis"])
def stream(request, tmp_path):
    if request.param == "sqlite":
        opened = SqliteStream(tmp_path / "stream.db", claim_idle_seconds=CLAIM_IDLE)
        yield opened
        opened.close()
        return
    name = f"t{uuid.uuid4().hex[:12]}"
    opened = RedisStream(REDIS_URL, name, claim_idle_seconds=CLAIM_IDLE)
    yield opened
    client = redis.Redis.from_url(REDIS_URL)
    client.delete(opened.key, opened.dead_key)
    opened.close()


def records(*ids: str) -> list[dict]:
    return [{"event_id": event_id, "n": index} for index, event_id in enumerate(ids)]


def test_an_entry_is_read_whole_and_once_until_acknowledged(stream):
    first = stream.append(EVENTS, records("a", "b"))
    stream.append(SERVED, records("r"))
    got = stream.read("c1", 10, 0.1)
    head = got[0]
    assert (head.entry_id, head.kind, head.records, head.deliveries) == (
        first, EVENTS, records("a", "b"), 1)
    assert [e.kind for e in got] == [EVENTS, SERVED]
    assert stream.read("c2", 10, 0.05) == []  # leased to c1
    stream.ack([e.entry_id for e in got])
    time.sleep(CLAIM_IDLE * 2)
    assert stream.read("c2", 10, 0.05) == []
    assert stream.backlog() == 0


def test_entries_a_consumer_left_are_taken_over_with_their_delivery_count(stream):
    stream.append(EVENTS, records("a"))
    (left,) = stream.read("crashed", 10, 0.1)
    assert stream.read("c2", 10, 0.05) == []
    time.sleep(CLAIM_IDLE * 1.5)
    (taken,) = stream.read("c2", 10, 0.1)
    assert (taken.entry_id, taken.records, taken.deliveries) == (left.entry_id, left.records, 2)
    stream.ack([taken.entry_id])
    assert stream.backlog() == 0


def test_two_consumers_split_the_entries(stream):
    for n in range(6):
        stream.append(EVENTS, records(f"e{n}"))
    one = stream.read("c1", 3, 0.1)
    two = stream.read("c2", 10, 0.1)
    ids = [e.entry_id for e in one + two]
    assert len(one) == 3 and len(two) == 3 and len(set(ids)) == 6


def test_a_read_waits_for_an_append(stream):
    started = time.monotonic()
    assert stream.read("c1", 10, 0.2) == []
    assert time.monotonic() - started >= 0.15
    stream.append(EVENTS, records("late"))
    assert [e.records for e in stream.read("c1", 10, 1.0)] == [records("late")]


def test_dead_letters_keep_the_records_and_the_reason(stream):
    stream.append(EVENTS, records("a", "b"))
    (entry,) = stream.read("c1", 10, 0.1)
    stream.dead_letter(entry, entry.records[1:], "ValueError: bad b")
    (dead,) = stream.dead_letters()
    assert (dead.entry_id, dead.kind, dead.records, dead.reason) == (
        entry.entry_id, EVENTS, records("a", "b")[1:], "ValueError: bad b")


def test_an_unknown_kind_is_refused(stream):
    with pytest.raises(ValueError, match="unknown entry kind"):
        stream.append("clicks", records("a"))
    assert stream.backlog() == 0


def test_an_unreachable_redis_raises_stream_unavailable():
    closed = RedisStream("redis://127.0.0.1:1/0", "nowhere", timeout_seconds=0.2)
    with pytest.raises(StreamUnavailableError):
        closed.append(EVENTS, records("a"))
    with pytest.raises(StreamUnavailableError):
        closed.read("c1", 10, 0.1)
    with pytest.raises(StreamUnavailableError):
        closed.ack(["1-0"])

