"""The stream consumer: events from the stream into the event log and the online features.

Each round reads up to `entries_per_round` entries (stale ones other consumers left first),
and for the `events` entries, under one lock shared by every consumer of the data directory:
1. picks the events the log does not hold yet (a redelivered entry adds nothing),
2. computes the online feature rows those events lead to (`features.online_updates`),
3. writes both to a journal file, then appends the events to the log and writes the rows,
4. deletes the journal.
A consumer killed anywhere in 3 leaves the journal; the next round (any consumer's) redoes
it first, and both writes are idempotent (the log skips known ids, the rows are absolute
values), so no event is lost or counted twice. Then `after_events` sees the whole batch and
the kind handlers their records (`served`): both must be idempotent, as a batch may come
again; only then are the entries acknowledged.

A round that fails is retried entry by entry; an entry that keeps failing
(`max_deliveries`) is split into its records, and each record that fails alone goes to the
dead letters with the reason, so one bad event does not hold the others back.
"""

import fcntl
import logging
import os
import pickle
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
import pyarrow as pa

from features.changes import ChangeFeed
from features.event_log import EventLog
from features.schemas import EVENT_ARROW_SCHEMA, EVENT_LIST
from features.stream import EVENTS, Entry, EventStream, StreamUnavailableError, consumer_name

logger = logging.getLogger(__name__)

Handler = Callable[[list[dict]], None]
"""Takes the records of entries of one kind (`served`)."""


class OnlinePlan(Protocol):
    def changed(self) -> tuple[list[str], list[str]]:
        """The users and items whose rows the plan writes."""
        ...


class OnlineWriter(Protocol):
    """Computes the online rows events lead to (reading the current ones), and writes them."""

    def plan(self, events: pd.DataFrame) -> OnlinePlan: ...

    def write(self, plan: Any) -> None: ...


def events_frame(records: Sequence[dict]) -> pd.DataFrame:
    """Stream records (events as the API dumps them: ISO timestamps) as canonical events;
    a record another producer wrote that breaks the schema raises `ValidationError`."""
    EVENT_LIST.validate_python(records)
    rows = [{**record, "ts": datetime.fromisoformat(record["ts"])} for record in records]
    return pa.Table.from_pylist(rows, schema=EVENT_ARROW_SCHEMA).to_pandas()


@contextmanager
def online_writes(events_dir: Path) -> Iterator[None]:
    """The lock around writes to the online features of the data directory whose event log
    is `events_dir`: every consumer's batch, and materializations (`tailor features
    materialize`), which would otherwise interleave their reads and writes."""
    events_dir.mkdir(parents=True, exist_ok=True)
    with open(events_dir / ".consumer.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@dataclass
class RoundResult:
    """What one round did."""

    entries: int = 0
    events: int = 0
    written: int = 0
    dead_letters: int = 0
    failed_entries: list[str] = field(default_factory=list)


class Journal:
    """The writes of the batch in progress, kept until both are done."""

    def __init__(self, path: Path):
        self.path = path

    def save(self, events: pd.DataFrame, plan: Any) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as handle:
            pickle.dump((events, plan), handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)

    def pending(self) -> tuple[pd.DataFrame, Any] | None:
        if not self.path.exists():
            return None
        with open(self.path, "rb") as handle:
            return pickle.load(handle)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


class Consumer:
    """One consumer of the stream (several may run, in one group)."""

    def __init__(self, stream: EventStream, log: EventLog, online: OnlineWriter,
                 handlers: Mapping[str, Handler] | None = None,
                 after_events: Callable[[pd.DataFrame], None] | None = None,
                 name: str | None = None, changes: ChangeFeed | None = None,
                 entries_per_round: int = 50, max_deliveries: int = 5):
        self.stream = stream
        self.log = log
        self.online = online
        self.handlers = dict(handlers or {})
        self.after_events = after_events
        self.name = name or consumer_name()
        self.changes = changes
        self.entries_per_round = entries_per_round
        self.max_deliveries = max_deliveries
        self.journal = Journal(log.root / ".online-journal.pkl")

    def _redo_journal(self) -> None:
        pending = self.journal.pending()
        if pending is not None:
            events, plan = pending
            logger.warning("finishing the writes of %d events a stopped consumer left",
                           len(events))
            self.log.append(events)
            self._write_online(plan)
            self.journal.clear()

    def _write_online(self, plan: OnlinePlan) -> None:
        """Write the rows, then tell the serving caches whose rows changed (before the
        journal is cleared: a consumer stopped in between notifies again on redo)."""
        self.online.write(plan)
        if self.changes is not None:
            users, items = plan.changed()
            if users or items:
                self.changes.publish(users, items)

    def _store_events(self, records: list[dict]) -> int:
        """Append the events to the log and the online features; how many were new."""
        events = events_frame(records)
        with online_writes(self.log.root):
            self._redo_journal()
            fresh = self.log.unseen(events)
            if not fresh.empty:
                plan = self.online.plan(fresh)
                self.journal.save(fresh, plan)
                self.log.append(fresh)
                self._write_online(plan)
                self.journal.clear()
                for day in fresh["ts"].dt.floor("D").unique():
                    self.log.compact(f"{day:%Y-%m-%d}")
        if self.after_events is not None:
            self.after_events(events)
        return len(fresh)

    def _process(self, entries: Sequence[Entry], result: RoundResult) -> None:
        """Everything the entries hold, all or nothing (their writes are idempotent)."""
        by_kind: dict[str, list[dict]] = {}
        for entry in entries:
            if entry.kind != EVENTS and entry.kind not in self.handlers:
                raise ValueError(f"no handler for entries of kind {entry.kind!r}")
            by_kind.setdefault(entry.kind, []).extend(entry.records)
        for kind, records in by_kind.items():
            if kind == EVENTS:
                result.written += self._store_events(records)
                result.events += len(records)
            else:
                self.handlers[kind](records)

    def _dead_letter_records(self, entry: Entry, result: RoundResult) -> None:
        """Process an entry that keeps failing record by record; dead-letter what fails."""
        for record in entry.records:
            try:
                single = Entry(entry.entry_id, entry.kind, [record], entry.deliveries)
                self._process([single], result)
            except Exception as error:
                reason = f"{type(error).__name__}: {error}"
                logger.error("dead letter from entry %s: %s", entry.entry_id, reason)
                self.stream.dead_letter(entry, [record], reason)
                result.dead_letters += 1

    def run_once(self, block_seconds: float = 1.0) -> RoundResult:
        """Read and process one round of entries; acknowledge what was processed."""
        result = RoundResult()
        entries = self.stream.read(self.name, self.entries_per_round, block_seconds)
        result.entries = len(entries)
        if not entries:
            return result
        try:
            self._process(entries, result)
            done = list(entries)
        except Exception:
            logger.exception("a round of %d entries failed; retrying them one by one",
                             len(entries))
            done = []
            for entry in entries:
                try:
                    self._process([entry], result)
                except Exception:
                    if entry.deliveries < self.max_deliveries:
                        logger.exception("entry %s failed (delivery %d of %d); it will be "
                                         "delivered again", entry.entry_id, entry.deliveries,
                                         self.max_deliveries)
                        result.failed_entries.append(entry.entry_id)
                        continue
                    self._dead_letter_records(entry, result)
                done.append(entry)
        self.stream.ack([entry.entry_id for entry in done])
        return result

    def run(self, stop: threading.Event, block_seconds: float = 1.0,
            on_round: Callable[[RoundResult], None] | None = None) -> None:
        """Consume until `stop` is set; waits out an unreachable stream."""
        pause = 0.5
        while not stop.is_set():
            try:
                result = self.run_once(block_seconds)
            except StreamUnavailableError as error:
                logger.warning("%s; trying again in %.1f s", error, pause)
                stop.wait(pause)
                pause = min(pause * 2, 10.0)
                continue
            pause = 0.5
            if on_round is not None:
                on_round(result)
            if result.failed_entries:
                time.sleep(min(1.0, block_seconds))
