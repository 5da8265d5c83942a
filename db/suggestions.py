"""The suggestion store: batches of price suggestions awaiting review, in the service database.

Three tables (SQLAlchemy 2, portable across SQLite and PostgreSQL):
- `suggestion_batches`: one row per optimizer run: a uuid `id`, `created_at` (UTC), the
  `model_version` of the demand model, the `guardrails` used (JSON text) and the numbers of
  suggestions and skipped offers.
- `price_suggestions`: one row per item x channel of a batch (unique per batch): prices,
  expected units, revenue and profit at the current and at the suggested price, `bound_by`
  (the rules that changed the decision, a JSON list), the explanation, a review `status`
  (`pending`, `approved`, `rejected` or `edited`; new rows are `pending`) and `reviewed_at`.
- `skipped_offers`: the offers no price could satisfy, with the reason.

`save_batch` writes a batch in one transaction: every row or none. Timestamps are stored in
UTC and read back timezone-aware.
"""

import json
import math
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from sqlalchemy import (
    JSON,
    CheckConstraint,
    DateTime,
    Double,
    Engine,
    ForeignKey,
    Index,
    Integer,
    Select,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    create_engine,
    event,
    func,
    insert,
    select,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from models.pricing.optimizer import RULES, SKIPPED_COLUMNS, SUGGESTION_COLUMNS

STATUSES = ("pending", "approved", "rejected", "edited")
PRICE_FIELDS = ("current_price", "suggested_price")
EXPECTATION_FIELDS = (
    "expected_units_current", "expected_units_suggested", "expected_revenue_current",
    "expected_revenue_suggested", "expected_profit_current", "expected_profit_suggested",
)
NONNEGATIVE_FIELDS = EXPECTATION_FIELDS[:4]  # units and revenue; profit may be negative
TEXT_FIELDS = ("item_id", "channel", "model_version", "explanation")


class UTCDateTime(TypeDecorator):
    """A timestamp stored in UTC and read back as an aware UTC datetime on every database
    (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("timestamps must be timezone-aware")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class SuggestionBatch(Base):
    __tablename__ = "suggestion_batches"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    model_version: Mapped[str] = mapped_column(String(200))
    guardrails: Mapped[str] = mapped_column(Text)  # JSON of the Guardrails used
    suggestion_count: Mapped[int] = mapped_column(Integer)
    skipped_count: Mapped[int] = mapped_column(Integer)


class PriceSuggestion(Base):
    __tablename__ = "price_suggestions"
    __table_args__ = (
        UniqueConstraint("batch_id", "item_id", "channel", name="uq_price_suggestions_offer"),
        CheckConstraint(
            "status IN (" + ", ".join(f"'{status}'" for status in STATUSES) + ")",
            name="ck_price_suggestions_status",
        ),
        Index("ix_price_suggestions_status_channel", "status", "channel"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    batch_id: Mapped[str] = mapped_column(
        ForeignKey("suggestion_batches.id", ondelete="CASCADE"), index=True)
    item_id: Mapped[str] = mapped_column(String(200))
    channel: Mapped[str] = mapped_column(String(200))
    category: Mapped[str | None] = mapped_column(String(200))
    current_price: Mapped[float] = mapped_column(Double)
    suggested_price: Mapped[float] = mapped_column(Double)
    expected_units_current: Mapped[float] = mapped_column(Double)
    expected_units_suggested: Mapped[float] = mapped_column(Double)
    expected_revenue_current: Mapped[float] = mapped_column(Double)
    expected_revenue_suggested: Mapped[float] = mapped_column(Double)
    expected_profit_current: Mapped[float] = mapped_column(Double)
    expected_profit_suggested: Mapped[float] = mapped_column(Double)
    bound_by: Mapped[list[str]] = mapped_column(JSON)
    explanation: Mapped[str] = mapped_column(Text)
    model_version: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="pending", server_default="pending")
    reviewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class SkippedOffer(Base):
    __tablename__ = "skipped_offers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    batch_id: Mapped[str] = mapped_column(
        ForeignKey("suggestion_batches.id", ondelete="CASCADE"), index=True)
    item_id: Mapped[str] = mapped_column(String(200))
    channel: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text)


def _enable_sqlite_foreign_keys(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def engine_for(url: str) -> Engine:
    """An engine for a SQLAlchemy URL; SQLite connections enforce foreign keys."""
    engine = create_engine(url)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _enable_sqlite_foreign_keys)
    return engine


def create_schema(engine: Engine) -> None:
    """Create the store's tables that do not exist yet (safe to call again)."""
    Base.metadata.create_all(engine)


# ------------------------------------------------------------------------------ validation


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _check_columns(frame: pd.DataFrame, columns, kind: str) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise ValueError(f"{kind} lack the column(s): {', '.join(missing)}")


def _number(value, field: str, row: int, nonnegative: bool = False, positive: bool = False):
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"suggestion row {row}: field '{field}' must be a number, "
                         f"got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"suggestion row {row}: field '{field}' must be finite, got {number}")
    if positive and number <= 0:
        raise ValueError(f"suggestion row {row}: field '{field}' must be > 0, got {number}")
    if nonnegative and number < 0:
        raise ValueError(f"suggestion row {row}: field '{field}' must be >= 0, got {number}")
    return number


def _text(value, field: str, where: str, optional: bool = False) -> str | None:
    if _missing(value) and optional:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: field '{field}' must be a non-empty string, got {value!r}")
    return value


def _bound_by(value, row: int) -> list[str]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise ValueError(f"suggestion row {row}: field 'bound_by' is not a JSON list") from None
    if _missing(value):
        return []
    rules = list(value) if not isinstance(value, Mapping) else None
    if rules is None or not all(isinstance(rule, str) for rule in rules):
        raise ValueError(f"suggestion row {row}: field 'bound_by' must be a list of rule names")
    unknown = [rule for rule in rules if rule not in RULES]
    if unknown:
        raise ValueError(f"suggestion row {row}: field 'bound_by' names unknown rule(s) "
                         f"{unknown}; known: {', '.join(RULES)}")
    return rules


def _suggestion_rows(frame: pd.DataFrame, categories: Mapping[str, str] | None,
                     batch_id: str, created_at: datetime) -> list[dict[str, Any]]:
    _check_columns(frame, SUGGESTION_COLUMNS, "suggestions")
    rows = []
    for number, record in enumerate(frame[list(SUGGESTION_COLUMNS)].to_dict("records")):
        where = f"suggestion row {number}"
        row = {field: _text(record[field], field, where) for field in TEXT_FIELDS}
        for field in PRICE_FIELDS:
            row[field] = _number(record[field], field, number, positive=True)
        for field in EXPECTATION_FIELDS:
            row[field] = _number(record[field], field, number,
                                 nonnegative=field in NONNEGATIVE_FIELDS)
        row["bound_by"] = _bound_by(record["bound_by"], number)
        category = (categories or {}).get(row["item_id"])
        row["category"] = _text(category, "category", where, optional=True)
        row.update(batch_id=batch_id, status="pending", reviewed_at=None, created_at=created_at)
        rows.append(row)
    return rows


def _skipped_rows(frame: pd.DataFrame | None, batch_id: str) -> list[dict[str, Any]]:
    if frame is None:
        return []
    _check_columns(frame, SKIPPED_COLUMNS, "skipped offers")
    return [
        {field: _text(record[field], field, f"skipped row {number}")
         for field in SKIPPED_COLUMNS} | {"batch_id": batch_id}
        for number, record in enumerate(frame[list(SKIPPED_COLUMNS)].to_dict("records"))
    ]


def _guardrails_json(guardrails: Mapping[str, Any]) -> str:
    if not isinstance(guardrails, Mapping):
        raise ValueError("guardrails must be a mapping of guardrail fields (e.g. "
                         f"Guardrails.model_dump(mode='json')), got {type(guardrails).__name__}")
    try:
        return json.dumps(dict(guardrails), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ValueError(f"guardrails must be JSON-serialisable: {error}") from None


# ---------------------------------------------------------------------------- reads, writes


def save_batch(
    engine: Engine, suggestions_df: pd.DataFrame, skipped_df: pd.DataFrame | None,
    model_version: str, guardrails_dict: Mapping[str, Any],
    categories: Mapping[str, str] | None = None,
) -> str:
    """Store an optimizer result as a new batch of `pending` suggestions; returns the batch id.

    `suggestions_df` has the optimizer's `SUGGESTION_COLUMNS`, `skipped_df` its
    `SKIPPED_COLUMNS`; `categories` maps item ids to categories. Rows are validated first
    (ValueError naming the row and field); the batch is written in one transaction, so a
    failure (e.g. an item x channel repeated in the batch) leaves nothing behind.
    """
    model_version = _text(model_version, "model_version", "batch")
    guardrails = _guardrails_json(guardrails_dict)
    batch_id = str(uuid.uuid4())
    created_at = datetime.now(UTC)
    rows = _suggestion_rows(suggestions_df, categories, batch_id, created_at)
    skipped = _skipped_rows(skipped_df, batch_id)
    with Session(engine) as session, session.begin():
        session.add(SuggestionBatch(
            id=batch_id, created_at=created_at, model_version=model_version,
            guardrails=guardrails, suggestion_count=len(rows), skipped_count=len(skipped)))
        session.flush()
        if rows:
            session.execute(insert(PriceSuggestion), rows)
        if skipped:
            session.execute(insert(SkippedOffer), skipped)
    return batch_id


def _suggestion_dict(suggestion: PriceSuggestion) -> dict[str, Any]:
    return {column.key: getattr(suggestion, column.key)
            for column in PriceSuggestion.__mapper__.column_attrs}


def _optional_text(value, field: str) -> str | None:
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise ValueError(f"filter '{field}' must be a non-empty string or None, got {value!r}")
    return value


def _matching(status: str | None, channel: str | None, category: str | None,
              batch_id: str | None) -> Select:
    """Suggestions (joined to their batch) matching every filter given."""
    if status is not None and status not in STATUSES:
        raise ValueError(f"filter 'status' must be one of {', '.join(STATUSES)}, got {status!r}")
    query = select(PriceSuggestion).join(SuggestionBatch,
                                         SuggestionBatch.id == PriceSuggestion.batch_id)
    if status is not None:
        query = query.where(PriceSuggestion.status == status)
    for field, value in {"channel": channel, "category": category, "batch_id": batch_id}.items():
        if _optional_text(value, field) is not None:
            query = query.where(getattr(PriceSuggestion, field) == value)
    return query


def list_suggestions(
    engine: Engine, status: str | None = None, channel: str | None = None,
    category: str | None = None, batch_id: str | None = None,
    limit: int | None = None, offset: int = 0,
) -> list[dict[str, Any]]:
    """Suggestions matching every filter given, newest batch first, then by item and channel;
    `limit` rows at most after skipping `offset` (the database pages, not Python).

    Each is a dict of the `price_suggestions` columns (`bound_by` a list, times aware UTC).
    """
    query = _matching(status, channel, category, batch_id).order_by(
        SuggestionBatch.created_at.desc(), SuggestionBatch.id, PriceSuggestion.item_id,
        PriceSuggestion.channel).offset(offset).limit(limit)
    with Session(engine) as session:
        return [_suggestion_dict(row) for row in session.scalars(query)]


def count_suggestions(
    engine: Engine, status: str | None = None, channel: str | None = None,
    category: str | None = None, batch_id: str | None = None,
) -> int:
    """How many suggestions match every filter given (the total behind a page)."""
    matching = _matching(status, channel, category, batch_id).subquery()
    with Session(engine) as session:
        return session.scalar(select(func.count()).select_from(matching))


def get_batch(engine: Engine, batch_id: str) -> dict[str, Any] | None:
    """A batch with its guardrails (a dict), counts, suggestions per status and skipped
    offers; None when there is no such batch."""
    _text(batch_id, "batch_id", "get_batch")
    with Session(engine) as session:
        batch = session.get(SuggestionBatch, batch_id)
        if batch is None:
            return None
        by_status = {status: count for status, count in session.execute(
            select(PriceSuggestion.status, func.count())
            .where(PriceSuggestion.batch_id == batch_id)
            .group_by(PriceSuggestion.status)
        )}
        skipped = session.scalars(
            select(SkippedOffer).where(SkippedOffer.batch_id == batch_id)
            .order_by(SkippedOffer.item_id, SkippedOffer.channel)
        ).all()
        return {
            "id": batch.id,
            "created_at": batch.created_at,
            "model_version": batch.model_version,
            "guardrails": json.loads(batch.guardrails),
            "suggestion_count": batch.suggestion_count,
            "skipped_count": batch.skipped_count,
            "status_counts": {status: int(by_status.get(status, 0)) for status in STATUSES},
            "skipped": [{"item_id": s.item_id, "channel": s.channel, "reason": s.reason}
                        for s in skipped],
        }
