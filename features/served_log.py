"""The served log: every recommendation response the service answered, for attribution.

Record format (one per response, as the service appends it to the stream, kind `served`):
`{"request_id": str, "ts": ISO 8601 time, "user_id": str, "model_version": str | null,
"fallback": bool, "items": [{"item_id": str, "score": float, "source": str}, ...]}`, the
items best first (`ServedResponse` validates it, `served_record` builds it).

Stored one row per recommended item (`SERVED_COLUMNS`; `position` 1 is the top item) in
Parquet files partitioned by the response's UTC date, `<root>/date=YYYY-MM-DD/part-*.parquet`,
as the event log is: appends add files and never rewrite one, a response whose `request_id`
its date's partition holds already is skipped (a re-sent record keeps its `ts`), files are
written under a temporary name and renamed, a lock file serialises writers. A response with
no items has nothing to attribute and writes no row.
"""

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Annotated

import pandas as pd
import pyarrow as pa
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    field_validator,
)

from features.event_log import PartitionedLog
from features.schemas import MAX_REPORTED_ERRORS, Id, InvalidRecordsError
from features.settings import Settings
from features.timestamps import to_utc

SERVED_ARROW_SCHEMA = pa.schema(
    [
        ("request_id", pa.string()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("user_id", pa.string()),
        ("model_version", pa.string()),
        ("fallback", pa.bool_()),
        ("position", pa.int32()),
        ("item_id", pa.string()),
        ("source", pa.string()),
        ("score", pa.float64()),
    ]
)
SERVED_COLUMNS: tuple[str, ...] = tuple(SERVED_ARROW_SCHEMA.names)


class ServedItem(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    item_id: Id
    score: Annotated[float, Field(allow_inf_nan=False)]
    source: Id
    """The candidate source that proposed the item (`repurchase`, `covisit`, `als`,
    `next_order`, `popular`)."""


class ServedResponse(BaseModel):
    """One recommendation response as the service records it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    request_id: Id
    ts: datetime
    user_id: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    """As the API took it (not stripped)."""
    model_version: Id | None
    fallback: bool
    items: list[ServedItem]

    @field_validator("ts")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return to_utc(value).to_pydatetime()


_RESPONSES = TypeAdapter(list[ServedResponse])


def served_record(request_id: str, ts: datetime, user_id: str, model_version: str | None,
                  fallback: bool, items: Iterable[tuple[str, float, str]]) -> dict:
    """The record of one response (items as `(item_id, score, source)`, best first), ready
    for JSON."""
    return {"request_id": request_id, "ts": ts.isoformat(), "user_id": user_id,
            "model_version": model_version, "fallback": fallback,
            "items": [{"item_id": item_id, "score": float(score), "source": source}
                      for item_id, score, source in items]}


def validate_served(records: Sequence[dict]) -> list[ServedResponse]:
    """The records as `ServedResponse`s, or `InvalidRecordsError` naming each problem."""
    try:
        return _RESPONSES.validate_python(list(records))
    except ValidationError as error:
        problems = []
        for detail in error.errors()[:MAX_REPORTED_ERRORS]:
            row, *field = detail["loc"]
            name = ".".join(str(part) for part in field) or "record"
            problems.append(f"record {row}, field '{name}': {detail['msg']}")
        raise InvalidRecordsError("served", problems, error.error_count()) from None


def served_dir(settings: Settings) -> Path:
    """Where the settings' served log lives: `<data dir>/served`."""
    return settings.data_dir / "served"


class ServedLog(PartitionedLog):
    """Append-only, date-partitioned Parquet log of recommendation responses."""

    schema = SERVED_ARROW_SCHEMA
    key = "request_id"

    def read(self, start: datetime | None = None, end: datetime | None = None) -> pd.DataFrame:
        """Served items of the responses with `start <= ts < end` (either bound optional),
        by time, request and position."""
        table = self._table(None if start is None else to_utc(start),
                            None if end is None else to_utc(end))
        return table.sort_by([("ts", "ascending"), ("request_id", "ascending"),
                              ("position", "ascending")]).to_pandas()

    def append(self, records: Sequence[dict]) -> int:
        """Validate `records` (all or nothing: `InvalidRecordsError`) and store the responses
        their date's partition does not hold yet; how many were stored."""
        responses = [r for r in validate_served(records) if r.items]
        by_day: dict[str, dict[str, ServedResponse]] = {}
        for response in responses:
            by_day.setdefault(f"{response.ts:%Y-%m-%d}", {}).setdefault(response.request_id,
                                                                         response)
        written = 0
        with self._writer_lock():
            for day, chosen in sorted(by_day.items()):
                known = self._ids_of_day(day)
                fresh = sorted((r for r in chosen.values() if r.request_id not in known),
                               key=lambda r: (r.ts, r.request_id))
                if not fresh:
                    continue
                rows = [{"request_id": r.request_id, "ts": r.ts, "user_id": r.user_id,
                         "model_version": r.model_version, "fallback": r.fallback,
                         "position": position, "item_id": item.item_id,
                         "source": item.source, "score": item.score}
                        for r in fresh for position, item in enumerate(r.items, start=1)]
                self._write_day(day, pa.Table.from_pylist(rows, schema=SERVED_ARROW_SCHEMA),
                                [r.request_id for r in fresh])
                written += len(fresh)
        return written


def served_handler(settings: Settings) -> Callable[[list[dict]], None]:
    """The stream consumer's handler of `served` entries: their records go to the settings'
    served log (one `ServedLog` for the consumer's life: it remembers the files it read)."""
    log = ServedLog(served_dir(settings))

    def store(records: list[dict]) -> None:
        log.append(records)

    return store
