"""Canonical records every stage shares: behavioural events and catalog items.

`Event` and `CatalogItem` validate one record (the API, the simulator); `validate_events` and
`validate_catalog` validate a whole table through the same models and return it with canonical
dtypes, or raise `InvalidRecordsError` naming the row and field of each problem.
"""

import math
from datetime import UTC, datetime
from typing import Annotated, Literal, get_args

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
    model_validator,
)

from features.errors import InputError

EventType = Literal["view", "add_to_cart", "remove_from_cart", "purchase", "return",
                    "inventory"]
EVENT_TYPES: tuple[str, ...] = get_args(EventType)
PRICED_EVENT_TYPES = frozenset({"purchase", "return"})
STOCK_EVENT_TYPES = frozenset({"inventory"})
"""Events a sales channel sends about an item (stock on hand), not a shopper's behaviour."""

UNICODE_SPACE = r"\t-\r\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
"""Whitespace as pydantic's `strip_whitespace` strips it (Unicode's White_Space)."""
SPACE = rf"{UNICODE_SPACE}\x1c-\x1f"
r"""Whitespace as the app strips it (`str.isspace`: also U+001C to U+001F), spelled out for the
published patterns: regex engines disagree on `\s` (ECMA-262's, JSON Schema's, lacks U+001C
to U+001F and U+0085 but has U+FEFF)."""
NOT_BLANK = f"[^{SPACE}]"
BLANK = f"^[{SPACE}]*$"

Id = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
               Field(json_schema_extra={"pattern": f"[^{UNICODE_SPACE}]"})]
"""An identifier: blank ones are refused (stripped, at least one character), which the
published schema says with a pattern."""
CurrencyCode = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
TS_OUT_OF_RANGE = "the timestamp in UTC falls outside years 1-9999"
Price = Annotated[float, Field(ge=0, allow_inf_nan=False)]


def _as_utc(value: datetime) -> datetime:
    """Aware timestamps are converted to UTC; naive ones are taken to be UTC already (the rule
    of `to_utc`, in plain `datetime`: this runs for every event the API takes); one whose UTC
    instant falls outside years 1-9999 is refused."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError(TS_OUT_OF_RANGE) from None


class Event(BaseModel):
    """One event: a shopper's behaviour (view, cart, purchase, return: `session_id` and
    `currency` required) or a channel's stock report (`inventory`: `stock_on_hand`
    required). `event_id` is the idempotency key of the event log: one event, one id, and a
    re-sent event keeps its `ts`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: Id
    event_type: EventType
    user_id: Id | None = None
    session_id: Id | None = None
    item_id: Id
    ts: datetime
    """When it happened; an offset-less time is UTC, and the UTC instant must fall within
    years 1-9999."""
    quantity: int = Field(default=1, ge=1)
    unit_price: Price | None = None
    currency: CurrencyCode | None = None
    channel: Id
    request_id: Id | None = None
    """The recommendation response (its `request_id`) the event follows, if any."""
    stock_on_hand: Annotated[int, Field(ge=0)] | None = None
    """Units in stock on the event's channel (`inventory` events)."""

    _utc = field_validator("ts")(_as_utc)

    @model_validator(mode="after")
    def _fields_of_the_event_type(self) -> "Event":
        kind = self.event_type
        if kind in STOCK_EVENT_TYPES:
            if self.stock_on_hand is None:
                raise ValueError(f"stock_on_hand is required for {kind} events")
            return self
        for name in ("session_id", "currency"):
            if getattr(self, name) is None:
                raise ValueError(f"{name} is required for {kind} events")
        if self.stock_on_hand is not None:
            raise ValueError(f"stock_on_hand is only for inventory events, not {kind}")
        if kind in PRICED_EVENT_TYPES and self.unit_price is None:
            raise ValueError(f"unit_price is required for {kind} events")
        return self


class CatalogItem(BaseModel):
    """One sellable item with the price rules merchandisers set for it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    item_id: Id
    title: Annotated[str, StringConstraints(strip_whitespace=True, max_length=500)]
    category: Id
    unit_cost: Price | None = None
    current_price: Annotated[float, Field(gt=0, allow_inf_nan=False)]
    currency: CurrencyCode
    min_price: Price
    max_price: Price | None = None
    stock_on_hand: Annotated[int, Field(ge=0)] | None = None
    """Units in stock across all channels; missing when stock is not tracked (a download)."""
    restock_days: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    """Days until the stock is replenished; missing: the guardrails' `restock_days`."""

    @model_validator(mode="after")
    def _price_inside_its_bounds(self) -> "CatalogItem":
        if self.current_price < self.min_price:
            raise ValueError("current_price is below min_price")
        if self.max_price is not None and self.current_price > self.max_price:
            raise ValueError("current_price is above max_price")
        return self


EVENT_LIST: TypeAdapter[list[Event]] = TypeAdapter(list[Event])
"""Validates a list of event records at once (the API's batches, the stream's entries)."""
EVENT_COLUMNS: tuple[str, ...] = tuple(Event.model_fields)
CATALOG_COLUMNS: tuple[str, ...] = tuple(CatalogItem.model_fields)
OPTIONAL_EVENT_COLUMNS = ("request_id", "stock_on_hand")  # an events file may leave them out
OPTIONAL_CATALOG_COLUMNS = ("stock_on_hand", "restock_days")  # a catalog file may leave them out

EVENT_ARROW_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("event_type", pa.string()),
        ("user_id", pa.string()),
        ("session_id", pa.string()),
        ("item_id", pa.string()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("quantity", pa.int32()),
        ("unit_price", pa.float64()),
        ("currency", pa.string()),
        ("channel", pa.string()),
        ("request_id", pa.string()),
        ("stock_on_hand", pa.int64()),
    ]
)
"""Log files written before `request_id` and `stock_on_hand` existed read them as missing."""
CATALOG_ARROW_SCHEMA = pa.schema(
    [
        ("item_id", pa.string()),
        ("title", pa.string()),
        ("category", pa.string()),
        ("unit_cost", pa.float64()),
        ("current_price", pa.float64()),
        ("currency", pa.string()),
        ("min_price", pa.float64()),
        ("max_price", pa.float64()),
        ("stock_on_hand", pa.int64()),
        ("restock_days", pa.float64()),
    ]
)

MAX_REPORTED_ERRORS = 10


class InvalidRecordsError(InputError):
    """Raised when records break the canonical schema; nothing has been written."""

    def __init__(self, kind: str, problems: list[str], total: int):
        self.problems = problems
        self.total = total
        shown = "\n".join(f"  - {p}" for p in problems)
        more = f"\n  ... and {total - len(problems)} more" if total > len(problems) else ""
        super().__init__(f"{total} invalid {kind} record(s):\n{shown}{more}")


def _check_columns(frame: pd.DataFrame, expected: tuple[str, ...], kind: str,
                   optional: tuple[str, ...] = ()) -> None:
    missing = [c for c in expected if c not in frame.columns and c not in optional]
    unknown = [c for c in frame.columns if c not in expected]
    problems = [f"missing column '{c}'" for c in missing]
    problems += [f"unknown column '{c}'" for c in unknown]
    if problems:
        raise InvalidRecordsError(kind, problems, len(problems))


def _records(frame: pd.DataFrame) -> list[dict]:
    """Rows as dicts, with empty strings and NaN/NaT read as missing values."""

    def clean(value):
        if value is None or value is pd.NaT:
            return None
        if isinstance(value, str) and not value.strip():
            return None
        if isinstance(value, float) and math.isnan(value):
            return None
        return value

    columns = list(frame.columns)
    return [
        {c: v for c, v in zip(columns, map(clean, row), strict=True) if v is not None}
        for row in frame.itertuples(index=False, name=None)
    ]


def _validate(frame: pd.DataFrame, model: type[BaseModel], kind: str, schema: pa.Schema,
              optional: tuple[str, ...] = ()):
    _check_columns(frame, tuple(model.model_fields), kind, optional)
    adapter: TypeAdapter[list[BaseModel]] = TypeAdapter(list[model])  # type: ignore[valid-type]
    try:
        rows = adapter.validate_python(_records(frame.reindex(columns=list(model.model_fields))))
    except ValidationError as error:
        problems = []
        for detail in error.errors()[:MAX_REPORTED_ERRORS]:
            row, *field = detail["loc"]
            name = ".".join(str(part) for part in field) or "record"
            problems.append(f"row {row}, field '{name}': {detail['msg']}")
        raise InvalidRecordsError(kind, problems, error.error_count()) from None
    return pa.Table.from_pylist([r.model_dump() for r in rows], schema=schema).to_pandas()


def validate_events(frame: pd.DataFrame) -> pd.DataFrame:
    """Validate a table of events against `Event`; return it with canonical dtypes."""
    return _validate(frame, Event, "event", EVENT_ARROW_SCHEMA, OPTIONAL_EVENT_COLUMNS)


def validate_catalog(frame: pd.DataFrame) -> pd.DataFrame:
    """Validate a catalog table against `CatalogItem`; item ids must be unique."""
    catalog = _validate(frame, CatalogItem, "catalog", CATALOG_ARROW_SCHEMA,
                        OPTIONAL_CATALOG_COLUMNS)
    duplicated = catalog.index[catalog["item_id"].duplicated()].tolist()
    if duplicated:
        problems = [f"row {r}, field 'item_id': duplicate item id" for r in duplicated]
        raise InvalidRecordsError("catalog", problems[:MAX_REPORTED_ERRORS], len(problems))
    return catalog
