"""Change notices: which users' and items' online rows the stream consumer rewrote, for the
caches of the serving workers (their per-user results and their item features).

The consumer publishes one notice per batch it wrote (`publish`); each serving worker keeps
a cursor and reads what came after it (`since`). The feed is bounded (the oldest notices
are trimmed): a reader whose cursor fell behind the trimmed part gets `complete=False` and
must drop everything it cached. Same backends as the stream, chosen by the settings:
- `RedisChanges`: a capped Redis stream `<project>:changes` (a reader whose cursor is older
  than its first entry, when some were trimmed, may have missed notices);
- `SqliteChanges`: a table of the stream's SQLite file (consecutive ids: a gap is a trim).
"""

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import redis

from features.settings import Settings
from features.stream import SqliteFile

KEEP = 100_000
"""How many notices the feed keeps (about: Redis trims in whole nodes)."""


@dataclass(frozen=True)
class Changes:
    """The notices after a cursor: the users and items named, and the cursor to read on from.
    `complete` False: some notices were trimmed unread (drop every cached user and item)."""

    cursor: str
    users: frozenset[str]
    items: frozenset[str]
    complete: bool = True


class ChangeFeed(Protocol):
    def publish(self, users: Iterable[str], items: Iterable[str]) -> None:
        """Record that these users' and items' online rows were rewritten."""
        ...

    def latest(self) -> str:
        """The cursor of the newest notice (read from there: what comes next)."""
        ...

    def since(self, cursor: str, limit: int = 1000) -> Changes:
        """Up to `limit` notices after `cursor`, merged."""
        ...

    def close(self) -> None: ...


def _merge(cursor: str, notices: Iterable[tuple[Any, Any]], complete: bool) -> Changes:
    users: set[str] = set()
    items: set[str] = set()
    for named_users, named_items in notices:
        users.update(json.loads(named_users))
        items.update(json.loads(named_items))
    return Changes(cursor, frozenset(users), frozenset(items), complete)


def cursor_order(cursor: bytes | str) -> tuple[int, int]:
    """A cursor of either feed as a key that sorts notices in the order they were published
    (Redis stream ids `ms-seq`, SQLite row ids)."""
    text = cursor.decode() if isinstance(cursor, bytes) else cursor
    first, _, second = text.partition("-")
    return int(first), int(second or 0)


class RedisChanges:
    """The feed as a capped Redis stream."""

    START = "0-0"

    def __init__(self, url: str, name: str, timeout_seconds: float = 2.0,
                 retried: bool = True):
        self.key = f"{name}:changes"
        retry = {} if retried else {"retry": None}  # None: each command tried once
        # Any: redis-py types every reply as "awaitable or value" (one client class for both).
        self.client: Any = redis.Redis.from_url(url, socket_timeout=timeout_seconds,
                                                socket_connect_timeout=timeout_seconds, **retry)

    def publish(self, users: Iterable[str], items: Iterable[str]) -> None:
        self.client.xadd(self.key, {"users": json.dumps(sorted(users)),
                                    "items": json.dumps(sorted(items))},
                         maxlen=KEEP, approximate=True)

    def latest(self) -> str:
        newest = self.client.xrevrange(self.key, count=1)
        return newest[0][0].decode() if newest else self.START

    def since(self, cursor: str, limit: int = 1000) -> Changes:
        with self.client.pipeline(transaction=True) as pipe:
            pipe.xrange(self.key, min=f"({cursor}", count=limit)
            pipe.xinfo_stream(self.key)
            entries, info = pipe.execute(raise_on_error=False)
        if isinstance(info, redis.ResponseError):  # no stream: nothing published, or lost
            return Changes(self.START, frozenset(), frozenset(), complete=cursor == self.START)
        trimmed = info["entries-added"] > info["length"]
        first = info["recorded-first-entry-id"]
        if trimmed and cursor_order(cursor) < cursor_order(first):  # start again from the end
            return Changes(self.latest(), frozenset(), frozenset(), complete=False)
        last = entries[-1][0].decode() if entries else cursor
        return _merge(last, ((fields[b"users"], fields[b"items"]) for _, fields in entries),
                      complete=True)

    def close(self) -> None:
        self.client.close()


SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS changes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    users TEXT NOT NULL,
    items TEXT NOT NULL
);
"""


class SqliteChanges(SqliteFile):
    """The feed as a table of a SQLite file (the stream's); ids are consecutive."""

    def __init__(self, path: Path):
        super().__init__(path, SQLITE_SCHEMA)

    def publish(self, users: Iterable[str], items: Iterable[str]) -> None:
        connection = self._connection()
        cursor = connection.execute("INSERT INTO changes (users, items) VALUES (?, ?)",
                                    (json.dumps(sorted(users)), json.dumps(sorted(items))))
        newest = int(cursor.lastrowid or 0)
        if newest % 1000 == 0:
            connection.execute("DELETE FROM changes WHERE id <= ?", (newest - KEEP,))

    def latest(self) -> str:
        newest = self._connection().execute("SELECT max(id) FROM changes").fetchone()[0]
        return str(newest or 0)

    def since(self, cursor: str, limit: int = 1000) -> Changes:
        after = int(cursor)
        rows = self._connection().execute(
            "SELECT id, users, items FROM changes WHERE id > ? ORDER BY id LIMIT ?",
            (after, limit)).fetchall()
        trimmed = rows[0][0] != after + 1 if rows else int(self.latest()) < after
        if trimmed:  # the notices in between were trimmed (or the file was replaced)
            return Changes(self.latest(), frozenset(), frozenset(), complete=False)
        last = str(rows[-1][0]) if rows else cursor
        return _merge(last, ((users, items) for _, users, items in rows), complete=True)


def open_changes(settings: Settings, request_timeout: float | None = None) -> ChangeFeed:
    """The settings' feed: Redis when `redis_url` is set, else beside the SQLite stream.
    With `request_timeout` (the request path), Redis commands fail after that many seconds
    and are not retried."""
    if settings.redis_url:
        name = f"tailor:{settings.feast_project}"
        if request_timeout is None:
            return RedisChanges(settings.redis_url, name)
        return RedisChanges(settings.redis_url, name, request_timeout, retried=False)
    return SqliteChanges(settings.data_dir / "stream.db")
