"""The append-only event log: Parquet files partitioned by UTC date, the Feast offline source.

Layout: `<root>/date=YYYY-MM-DD/part-<digest>.parquet`. Appends never rewrite a file: each
append adds one new file per date it touches, holding only events whose `event_id` the log
does not hold yet, so appending the same events twice changes nothing. Every file is written
under a temporary name and renamed into place, and a lock file serialises writers.
"""

import fcntl
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from features.schemas import EVENT_ARROW_SCHEMA, EVENT_COLUMNS
from features.timestamps import to_utc


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


class EventLog:
    """Append-only, date-partitioned Parquet log of canonical events."""

    def __init__(self, root: Path):
        self.root = Path(root)

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
        return ds.dataset(
            [str(p) for p in self._files()], schema=EVENT_ARROW_SCHEMA, format="parquet"
        )

    def event_ids(self) -> set[str]:
        """Every event id in the log."""
        if not self._files():
            return set()
        return set(self._dataset().to_table(columns=["event_id"]).column(0).to_pylist())

    def read(
        self, start: pd.Timestamp | None = None, end: pd.Timestamp | None = None
    ) -> pd.DataFrame:
        """Events with `start <= ts < end` (either bound optional), sorted by time and id."""
        if not self._files():
            return pa.Table.from_pylist([], schema=EVENT_ARROW_SCHEMA).to_pandas()
        condition = None
        for bound, op in ((start, "__ge__"), (end, "__lt__")):
            if bound is not None:
                term = getattr(ds.field("ts"), op)(to_utc(bound))
                condition = term if condition is None else condition & term
        table = self._dataset().to_table(filter=condition)
        table = table.sort_by([("ts", "ascending"), ("event_id", "ascending")])
        return table.to_pandas()

    def append(self, events: pd.DataFrame) -> AppendResult:
        """Append validated canonical events (see `validate_events`), skipping known ids."""
        with self._writer_lock():
            known = self.event_ids()
            fresh = events.drop_duplicates("event_id")
            fresh = fresh[~fresh["event_id"].isin(known)]
            fresh = fresh.sort_values(["ts", "event_id"], kind="stable")
            dates = fresh["ts"].dt.strftime("%Y-%m-%d")
            files = 0
            for date, day in fresh.groupby(dates, sort=True):
                table = pa.Table.from_pandas(
                    day[list(EVENT_COLUMNS)], schema=EVENT_ARROW_SCHEMA, preserve_index=False
                )
                digest = hashlib.sha1("\n".join(day["event_id"]).encode()).hexdigest()[:16]
                write_parquet_atomic(table, self.root / f"date={date}" / f"part-{digest}.parquet")
                files += 1
        return AppendResult(written=len(fresh), duplicates=len(events) - len(fresh), files=files)
