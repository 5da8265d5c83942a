"""The append-only event log: Parquet files partitioned by UTC date, the Feast offline source.

Layout: `<root>/date=YYYY-MM-DD/part-<digest>.parquet`. Appends never rewrite a file: each
append adds one new file per date it touches, holding only events whose `event_id` that
date's partition does not hold yet, so appending the same events twice changes nothing (an
event keeps its `ts`, hence its date, when it is sent again). Every file is written under a
temporary name and renamed into place, and a lock file serialises writers. A log object
remembers the ids of the files it has read, so a long-lived writer (the stream consumer)
reads only the files other writers added since its last append. The consumer appends a small
file per round; `compact` merges a partition's small files into one (written before they are
removed; reads take each event id once, so a stopped compaction leaves no duplicate).
"""

import fcntl
import hashlib
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from features.schemas import EVENT_ARROW_SCHEMA, EVENT_COLUMNS
from features.timestamps import to_utc

SMALL_FILE_ROWS = 100_000
"""A partition file below this many events is small: compaction merges small files."""
COMPACT_AT_FILES = 32
"""A partition is compacted once it holds this many small files."""


@dataclass(frozen=True)
class AppendResult:
    """What one append did: events written, duplicates skipped, partition files added."""

    written: int
    duplicates: int
    files: int


def write_parquet_atomic(table: pa.Table, path: Path) -> None:
    """Write `table` to `path` so readers see either the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class PartitionedLog:
    """What the date-partitioned Parquet logs share (`EventLog`, the served log): files under
    `<root>/date=YYYY-MM-DD/`, a writer lock, reads by time, and per day the set of record
    keys (`key`) stored, kept between calls so only files added since are read."""

    schema: pa.Schema
    key: str

    def __init__(self, root: Path):
        self.root = Path(root)
        self._ids_by_day: dict[str, set[str]] = {}
        self._files_read: set[Path] = set()

    @contextmanager
    def _writer_lock(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _files(self) -> list[Path]:
        return sorted(self.root.glob("date=*/*.parquet"))

    def days(self) -> list[date]:
        """The UTC days the log's partitions cover, oldest first."""
        days = set()
        for path in self._files():
            try:
                days.add(date.fromisoformat(path.parent.name.removeprefix("date=")))
            except ValueError:
                continue
        return sorted(days)

    def _dataset(self) -> ds.Dataset:
        return ds.dataset([str(p) for p in self._files()], schema=self.schema, format="parquet")

    def _table(self, start: pd.Timestamp | None, end: pd.Timestamp | None,
               columns: list[str] | None = None) -> pa.Table:
        """The rows with `start <= ts < end` (either bound optional), in file order; only
        `columns` when given."""
        condition = None
        for bound, op in ((start, "__ge__"), (end, "__lt__")):
            if bound is not None:
                term = getattr(ds.field("ts"), op)(to_utc(bound))
                condition = term if condition is None else condition & term
        if not self._files():
            empty = self.schema.empty_table()
            return empty if columns is None else empty.select(columns)
        try:
            return self._dataset().to_table(filter=condition, columns=columns)
        except FileNotFoundError:  # a compaction removed a listed file: list again
            return self._dataset().to_table(filter=condition, columns=columns)

    def _ids_of_day(self, day: str) -> set[str]:
        """The keys stored in one date partition."""
        ids = self._ids_by_day.setdefault(day, set())
        for path in (self.root / f"date={day}").glob("*.parquet"):
            if path not in self._files_read:
                ids.update(pq.read_table(path, columns=[self.key]).column(0).to_pylist())
                self._files_read.add(path)
        return ids

    def _write_day(self, day: str, table: pa.Table, ids: Sequence[str]) -> Path:
        """Add a file of `table` (the records of keys `ids`) to one date partition, named by
        a digest of the keys, atomically; returns its path."""
        digest = hashlib.sha1("\n".join(ids).encode()).hexdigest()[:16]
        path = self.root / f"date={day}" / f"part-{digest}.parquet"
        write_parquet_atomic(table, path)
        self._ids_by_day.setdefault(day, set()).update(ids)
        self._files_read.add(path)
        return path


class EventLog(PartitionedLog):
    """Append-only, date-partitioned Parquet log of canonical events."""

    schema = EVENT_ARROW_SCHEMA
    key = "event_id"

    def read(
        self, start: pd.Timestamp | None = None, end: pd.Timestamp | None = None,
        columns: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        """Events with `start <= ts < end` (either bound optional), sorted by time and id,
        each id once (a compaction stopped between writing its file and removing the merged
        ones leaves both); only `columns` when given (less to hold for a long job)."""
        wanted = None if columns is None else list(dict.fromkeys([*columns, "event_id", "ts"]))
        table = self._table(start, end, wanted)
        if pc.count_distinct(table.column("event_id")).as_py() < table.num_rows:
            frame = table.to_pandas().drop_duplicates("event_id")
            table = pa.Table.from_pandas(frame, schema=table.schema, preserve_index=False)
        table = table.sort_by([("ts", "ascending"), ("event_id", "ascending")])
        return table.to_pandas() if columns is None else table.select(list(columns)).to_pandas()

    @staticmethod
    def _days(events: pd.DataFrame) -> pd.Series:
        """Each event's partition name, YYYY-MM-DD of its UTC time (formatted once per
        distinct day: strftime of every row costs more than the rest of an append)."""
        midnights = events["ts"].dt.floor("D")
        names = {day: day.strftime("%Y-%m-%d") for day in midnights.unique()}
        return midnights.map(names)

    def unseen(self, events: pd.DataFrame) -> pd.DataFrame:
        """The events whose id their date's partition does not hold yet (the first of ids
        repeated in `events`), ordered by time and id."""
        fresh = events.drop_duplicates("event_id").sort_values(["ts", "event_id"],
                                                               kind="stable")
        keep = np.ones(len(fresh), dtype=bool)
        days = self._days(fresh)
        for day, rows in days.groupby(days, sort=False).indices.items():
            known = self._ids_of_day(str(day))
            ids = fresh["event_id"].to_numpy()[rows]
            keep[rows] = [event_id not in known for event_id in ids]
        return fresh[keep]

    def append(self, events: pd.DataFrame) -> AppendResult:
        """Append validated canonical events (see `validate_events`), skipping ids their
        date's partition holds already."""
        with self._writer_lock():
            fresh = self.unseen(events)
            dates = self._days(fresh)
            for day, group in fresh.groupby(dates, sort=True):
                table = pa.Table.from_pandas(group.reindex(columns=list(EVENT_COLUMNS)),
                                             schema=EVENT_ARROW_SCHEMA, preserve_index=False)
                self._write_day(str(day), table, group["event_id"].tolist())
        return AppendResult(written=len(fresh), duplicates=len(events) - len(fresh),
                            files=dates.nunique())

    def compact(self, day: str) -> int:
        """Merge the small files of one date partition into one once there are
        `COMPACT_AT_FILES` of them (the stream consumer appends a file per round); returns
        how many were merged. The merged file is written before the small ones go."""
        with self._writer_lock():
            folder = self.root / f"date={day}"
            small = [path for path in sorted(folder.glob("*.parquet"))
                     if pq.read_metadata(path).num_rows < SMALL_FILE_ROWS]
            if len(small) < COMPACT_AT_FILES:
                return 0
            merged = ds.dataset([str(p) for p in small], schema=EVENT_ARROW_SCHEMA,
                                format="parquet").to_table().to_pandas()
            merged = merged.drop_duplicates("event_id").sort_values(["ts", "event_id"],
                                                                    kind="stable")
            path = self._write_day(day, pa.Table.from_pandas(
                merged, schema=EVENT_ARROW_SCHEMA, preserve_index=False),
                merged["event_id"].tolist())
            for old in small:
                if old != path:
                    old.unlink()
                    self._files_read.discard(old)
        return len(small)

