"""Change notices on both backends (a real Redis and the SQLite file): readers get what was
published after their cursor, merged; a reader that fell behind a trim is told to drop
everything."""

import sqlite3
import uuid

import pytest
import redis

from features.changes import RedisChanges, SqliteChanges
from tests.conftest import REDIS_URL


@pytest.fixture(params=["sqlite", "redis"])
def feed(request, tmp_path):
    if request.param == "sqlite":
        opened = SqliteChanges(tmp_path / "stream.db")
        yield opened
        opened.close()
        return
    opened = RedisChanges(REDIS_URL, f"t{uuid.uuid4().hex[:12]}")
    yield opened
    opened.client.delete(opened.key)
    opened.close()


def test_readers_get_what_came_after_their_cursor_merged(feed):
    start = feed.latest()
    assert feed.since(start).users == frozenset()
    feed.publish(["u1", "u2"], ["i1"])
    feed.publish(["u2"], ["i2", "i3"])

    changes = feed.since(start)
    assert changes.complete
    assert (changes.users, changes.items) == ({"u1", "u2"}, {"i1", "i2", "i3"})
    assert changes.cursor == feed.latest()

    feed.publish([], ["i4"])
    later = feed.since(changes.cursor)
    assert (later.users, later.items, later.complete) == (frozenset(), {"i4"}, True)
    assert feed.since(later.cursor).items == frozenset()


def test_a_limit_reads_the_rest_next_time(feed):
    start = feed.latest()
    for user in ("a", "b", "c"):
        feed.publish([user], [])
    first = feed.since(start, limit=2)
    assert first.users == {"a", "b"}
    assert feed.since(first.cursor, limit=2).users == {"c"}


def test_a_reader_behind_trimmed_notices_is_told_to_drop_everything(feed):
    start = feed.latest()
    for user in ("a", "b", "c"):
        feed.publish([user], [])
    if isinstance(feed, RedisChanges):
        redis.Redis.from_url(REDIS_URL).xtrim(feed.key, maxlen=1, approximate=False)
    else:
        with sqlite3.connect(feed.path) as connection:
            connection.execute("DELETE FROM changes WHERE id < (SELECT max(id) FROM changes)")

    behind = feed.since(start)
    assert not behind.complete
    assert behind.cursor == feed.latest()  # read on from what is there now
    feed.publish(["d"], [])
    assert feed.since(behind.cursor).users == {"d"}


def test_a_replaced_sqlite_file_is_an_incomplete_read(tmp_path):
    feed = SqliteChanges(tmp_path / "stream.db")
    feed.publish(["a"], [])
    cursor = feed.latest()
    feed.close()
    (tmp_path / "stream.db").unlink()
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"stream.db{suffix}").unlink(missing_ok=True)

    replaced = SqliteChanges(tmp_path / "stream.db")
    assert not replaced.since(cursor).complete
