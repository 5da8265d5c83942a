"""The event stream between the API and the stream consumer: durable, at-least-once.

One interface, two backends, chosen by the settings like the online store:
- `RedisStream` (when `TAILOR_REDIS_URL` is set): a Redis stream read by a consumer group.
  Entries a consumer read but did not acknowledge stay pending; after `claim_idle_seconds`
  another consumer takes them over (XAUTOCLAIM), and their delivery count grows each time.
  Acknowledged entries are deleted, so the stream holds only the backlog. Durability is Redis's
  own: run it with `appendonly yes` (the consumer warns when it is off).
- `SqliteStream` (the embedded default): the same semantics in a SQLite file beside the data
  (WAL, `synchronous=FULL`: a committed append survives a crash of the machine). Claims are
  leases: a claimed entry nobody acknowledges is claimable again once its lease expires.

An entry is one append: a `kind` (`events`, or `served` for the recommendation responses the
service records) and its records (JSON objects), written all or nothing. Entries that keep
failing go to the dead letters with the reason (`dead_letter`).
"""

import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import redis

from features.settings import Settings

EVENTS: str = "events"
SERVED: str = "served"
KINDS = frozenset({EVENTS, SERVED})
GROUP = "consumers"


class StreamUnavailableError(RuntimeError):
    """The stream cannot be reached: nothing was appended, acknowledged or read."""


@dataclass(frozen=True)
class Entry:
    """One appended batch as a consumer reads it."""

    entry_id: str
    kind: str
    records: list[dict]
    deliveries: int
    """How many times the entry has been handed to a consumer, this time included."""


@dataclass(frozen=True)
class DeadLetter:
    entry_id: str
    kind: str
    records: list[dict]
    reason: str
    failed_at: float


class EventStream(Protocol):
    """What the API appends to and the consumers read from."""

    def append(self, kind: str, records: Sequence[dict]) -> str:
        """Append one entry durably; its id. `StreamUnavailableError` when unreachable."""
        ...

    def read(self, consumer: str, count: int, block_seconds: float) -> list[Entry]:
        """Up to `count` entries for `consumer`: stale entries other consumers left first,
        then new ones, waiting up to `block_seconds` when there are none."""
        ...

    def ack(self, entry_ids: Sequence[str]) -> None:
        """Mark entries processed (they are never handed out again)."""
        ...

    def dead_letter(self, entry: Entry, records: Sequence[dict], reason: str) -> None:
        """Keep `records` of `entry` as dead letters with `reason`."""
        ...

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The dead letters, oldest first."""
        ...

    def backlog(self) -> int:
        """Entries appended and not yet acknowledged."""
        ...

    def close(self) -> None:
        ...


def _dumps(kind: str, records: Sequence[dict]) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown entry kind {kind!r}; expected one of {sorted(KINDS)}")
    return json.dumps(list(records), separators=(",", ":"), default=str)


def consumer_name() -> str:
    """A name unique to this process (host and pid): a restarted consumer is a new one."""
    return f"{socket.gethostname()}-{os.getpid()}"


class RedisStream:
    """The stream as a Redis stream with one consumer group."""

    def __init__(self, url: str, name: str, claim_idle_seconds: float = 30.0,
                 timeout_seconds: float = 2.0):
        self.key = f"{name}:stream"
        self.dead_key = f"{name}:stream:dead"
        self.claim_idle_ms = int(claim_idle_seconds * 1000)
        # Any: redis-py types every reply as "awaitable or value" (one client class for both).
        self.client: Any = redis.Redis.from_url(url, socket_timeout=timeout_seconds,
                                                socket_connect_timeout=timeout_seconds)
        self._group_ready = False

    def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            self.client.xgroup_create(self.key, GROUP, id="0", mkstream=True)
        except redis.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise
        self._group_ready = True

    def persistent(self) -> bool:
        """Whether Redis writes appends to its append-only file."""
        return self.client.config_get("appendonly").get("appendonly") == "yes"

    def append(self, kind: str, records: Sequence[dict]) -> str:
        data = _dumps(kind, records)
        try:
            entry_id = self.client.xadd(self.key, {"kind": kind, "records": data})
        except redis.RedisError as error:
            raise StreamUnavailableError(f"Redis stream unavailable: {error}") from error
        return entry_id.decode()

    def read(self, consumer: str, count: int, block_seconds: float) -> list[Entry]:
        try:
            self._ensure_group()
            _, claimed, _ = self.client.xautoclaim(self.key, GROUP, consumer,
                                                    self.claim_idle_ms, "0-0", count=count)
            entries = self._entries(claimed, redelivered=True)
            if len(entries) < count:
                block = max(int(block_seconds * 1000), 1) if not entries else None
                reply = self.client.xreadgroup(GROUP, consumer, {self.key: ">"},
                                               count=count - len(entries), block=block)
                for _, messages in reply or []:
                    entries += self._entries(messages, redelivered=False)
        except redis.RedisError as error:
            raise StreamUnavailableError(f"Redis stream unavailable: {error}") from error
        return entries

    def _entries(self, messages: list, redelivered: bool) -> list[Entry]:
        messages = [(entry_id, fields) for entry_id, fields in messages if fields]
        deliveries = {}
        if redelivered and messages:
            for pending in self.client.xpending_range(
                    self.key, GROUP, min=messages[0][0], max=messages[-1][0],
                    count=len(messages) * 2):
                deliveries[pending["message_id"]] = pending["times_delivered"]
        return [Entry(entry_id.decode(), fields[b"kind"].decode(),
                      json.loads(fields[b"records"]), deliveries.get(entry_id, 1))
                for entry_id, fields in messages]

    def ack(self, entry_ids: Sequence[str]) -> None:
        if not entry_ids:
            return
        try:
            with self.client.pipeline(transaction=True) as pipe:
                pipe.xack(self.key, GROUP, *entry_ids)
                pipe.xdel(self.key, *entry_ids)
                pipe.execute()
        except redis.RedisError as error:
            raise StreamUnavailableError(f"Redis stream unavailable: {error}") from error

    def dead_letter(self, entry: Entry, records: Sequence[dict], reason: str) -> None:
        self.client.xadd(self.dead_key, {"entry_id": entry.entry_id, "kind": entry.kind,
                                         "records": _dumps(entry.kind, records),
                                         "reason": reason, "failed_at": repr(time.time())})

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        return [DeadLetter(fields[b"entry_id"].decode(), fields[b"kind"].decode(),
                           json.loads(fields[b"records"]), fields[b"reason"].decode(),
                           float(fields[b"failed_at"]))
                for _, fields in self.client.xrange(self.dead_key, count=limit)]

    def backlog(self) -> int:
        try:
            return int(self.client.xlen(self.key))
        except redis.RedisError as error:
            raise StreamUnavailableError(f"Redis stream unavailable: {error}") from error

    def close(self) -> None:
        self.client.close()


SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    records TEXT NOT NULL,
    consumer TEXT,
    lease_until REAL NOT NULL DEFAULT 0,
    deliveries INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS entries_claimable ON entries (lease_until, id);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    entry_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    records TEXT NOT NULL,
    reason TEXT NOT NULL,
    failed_at REAL NOT NULL
);
"""
POLL_SECONDS = 0.02
"""How often a reader waiting on an empty SQLite stream looks again."""


class SqliteFile:
    """A SQLite file holding `schema` (WAL, `synchronous=FULL`), one connection per thread,
    in autocommit mode."""

    def __init__(self, path: Path, schema: str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._connection().executescript(schema)

    def _connection(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(self.path, timeout=30.0, isolation_level=None,
                                         check_same_thread=False)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=FULL")
            self._local.connection = connection
        return connection

    def close(self) -> None:
        """Close this thread's connection."""
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None


class SqliteStream(SqliteFile):
    """The stream as a table of a SQLite file; claims are leases of `claim_idle_seconds`."""

    def __init__(self, path: Path, claim_idle_seconds: float = 30.0):
        super().__init__(path, SQLITE_SCHEMA)
        self.lease_seconds = claim_idle_seconds

    def append(self, kind: str, records: Sequence[dict]) -> str:
        data = _dumps(kind, records)
        try:
            cursor = self._connection().execute(
                "INSERT INTO entries (kind, records) VALUES (?, ?)", (kind, data))
        except sqlite3.Error as error:
            raise StreamUnavailableError(f"the stream file {self.path} failed: {error}") from error
        return str(cursor.lastrowid)

    def _claim(self, consumer: str, count: int) -> list[Entry]:
        connection = self._connection()
        now = time.time()
        connection.execute("BEGIN IMMEDIATE")
        try:
            rows = connection.execute(
                "SELECT id, kind, records, deliveries FROM entries WHERE lease_until < ? "
                "ORDER BY id LIMIT ?", (now, count)).fetchall()
            connection.executemany(
                "UPDATE entries SET consumer = ?, lease_until = ?, deliveries = deliveries + 1 "
                "WHERE id = ?", [(consumer, now + self.lease_seconds, row[0]) for row in rows])
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        return [Entry(str(entry_id), kind, json.loads(records), deliveries + 1)
                for entry_id, kind, records, deliveries in rows]

    def read(self, consumer: str, count: int, block_seconds: float) -> list[Entry]:
        deadline = time.monotonic() + block_seconds
        while True:
            entries = self._claim(consumer, count)
            if entries or time.monotonic() >= deadline:
                return entries
            time.sleep(POLL_SECONDS)

    def ack(self, entry_ids: Sequence[str]) -> None:
        self._connection().executemany("DELETE FROM entries WHERE id = ?",
                                       [(int(entry_id),) for entry_id in entry_ids])

    def dead_letter(self, entry: Entry, records: Sequence[dict], reason: str) -> None:
        self._connection().execute(
            "INSERT INTO dead_letters (entry_id, kind, records, reason, failed_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (entry.entry_id, entry.kind, _dumps(entry.kind, records), reason, time.time()))

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        rows = self._connection().execute(
            "SELECT entry_id, kind, records, reason, failed_at FROM dead_letters ORDER BY id "
            "LIMIT ?", (limit,)).fetchall()
        return [DeadLetter(entry_id, kind, json.loads(records), reason, failed_at)
                for entry_id, kind, records, reason, failed_at in rows]

    def backlog(self) -> int:
        return int(self._connection().execute("SELECT count(*) FROM entries").fetchone()[0])


def open_stream(settings: Settings, claim_idle_seconds: float = 30.0) -> EventStream:
    """The settings' stream: Redis when `redis_url` is set, else the SQLite file
    `<data dir>/stream.db`."""
    if settings.redis_url:
        return RedisStream(settings.redis_url, f"tailor:{settings.feast_project}",
                           claim_idle_seconds)
    return SqliteStream(settings.data_dir / "stream.db", claim_idle_seconds)
