"""The suggestion store's queries: batches of price suggestions awaiting review.

Inputs are the optimizer's frames (`models.pricing.optimizer.SUGGESTION_COLUMNS`,
`SKIPPED_COLUMNS`; the uncertainty columns `db.schemas.UNCERTAINTY_FIELDS` may be absent,
and a missing or NaN value is stored as null); outputs are dicts shaped as the `db.schemas`
entities (`PriceSuggestion`, `SuggestionBatch`), timestamps aware UTC. `save_batch`
validates every row first (a ValueError naming the row and the field) and writes a batch in
one transaction: every row or none. The tables must exist: `db.migrate` creates and upgrades
them.
"""

import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal, get_args

import pandas as pd
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails
from sqlalchemy import Engine, Select, func, insert, select
from sqlalchemy.orm import Session

from db.channels import Destinations
from db.policy import ApprovalPolicy
from db.reviews import approve_by_policy, supersede_older
from db.schemas import (
    BOUND_FIELDS,
    RULES_TEXT,
    STATUSES,
    UNCERTAINTY_FIELDS,
    NewSuggestion,
    SkippedOffer,
)
from db.tables import PriceSuggestionRow, SkippedOfferRow, SuggestionBatchRow, where_equal
from models.pricing.optimizer import SKIPPED_COLUMNS, SUGGESTION_COLUMNS

Sort = Literal["newest", "gain_desc", "gain_asc"]
"""Orders of a suggestion listing: newest batch first, or by expected profit change."""

_PROBLEMS = {
    "finite_number": "must be finite",
    "greater_than": "must be > {gt:g}",
    "greater_than_equal": "must be >= {ge:g}",
    "less_than_equal": "must be <= {le:g}",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "string_type": "must be a non-empty string",
    "string_pattern_mismatch": "must be a non-empty string",
    "literal_error": f"names an unknown rule; known: {RULES_TEXT}",
    "list_type": "must be a list of rule names",
}
"""How a pydantic error type reads in a row error (pydantic's own message otherwise)."""


def _problem(error: ErrorDetails) -> str:
    field = str(error["loc"][0]) if error["loc"] else "?"
    template = _PROBLEMS.get(error["type"])
    problem = template.format(**error.get("ctx", {})) if template else error["msg"]
    return f"field '{field}' {problem}, got {error['input']!r}"


def _validated(model: type[BaseModel], record: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The record validated by `model` (ValueError naming `where` and each bad field)."""
    try:
        return model.model_validate(record).model_dump()
    except ValidationError as error:
        problems = "; ".join(_problem(detail) for detail in error.errors())
        raise ValueError(f"{where}: {problems}") from None


def _check_columns(frame: pd.DataFrame, columns: tuple[str, ...], kind: str) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise ValueError(f"{kind} lack the column(s): {', '.join(missing)}")


def _suggestion_rows(frame: pd.DataFrame, categories: Mapping[str, str] | None,
                     batch_id: str, created_at: datetime) -> list[dict[str, Any]]:
    optional = (*UNCERTAINTY_FIELDS, *BOUND_FIELDS)
    required = tuple(column for column in SUGGESTION_COLUMNS if column not in optional)
    _check_columns(frame, required, "suggestions")
    columns = [*required, *(column for column in optional if column in frame.columns)]
    rows = []
    for number, record in enumerate(frame[columns].to_dict("records")):
        category = (categories or {}).get(record["item_id"])
        row = _validated(NewSuggestion, {**record, "category": category},
                         f"suggestion row {number}")
        rows.append(row | {"batch_id": batch_id, "status": "pending", "reviewed_at": None,
                           "created_at": created_at})
    return rows


def _skipped_rows(frame: pd.DataFrame | None, batch_id: str) -> list[dict[str, Any]]:
    if frame is None:
        return []
    _check_columns(frame, SKIPPED_COLUMNS, "skipped offers")
    return [_validated(SkippedOffer, record, f"skipped row {number}") | {"batch_id": batch_id}
            for number, record in enumerate(frame[list(SKIPPED_COLUMNS)].to_dict("records"))]


def _guardrails_json(guardrails: Mapping[str, Any]) -> str:
    if not isinstance(guardrails, Mapping):
        raise ValueError("guardrails must be a mapping of guardrail fields (e.g. "
                         f"Guardrails.model_dump(mode='json')), got {type(guardrails).__name__}")
    try:
        return json.dumps(dict(guardrails), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ValueError(f"guardrails must be JSON-serialisable: {error}") from None


def _text(value: object, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} must be a non-empty string, got {value!r}")
    return value


# ---------------------------------------------------------------------------- reads, writes


def save_batch(
    engine: Engine, suggestions_df: pd.DataFrame, skipped_df: pd.DataFrame | None,
    model_version: str, guardrails_dict: Mapping[str, Any],
    categories: Mapping[str, str] | None = None, approval_policy: ApprovalPolicy | None = None,
    destinations: Destinations | None = None,
) -> str:
    """Store an optimizer result as a new batch of `pending` suggestions; returns the batch id.

    `suggestions_df` has the optimizer's `SUGGESTION_COLUMNS` (the `UNCERTAINTY_FIELDS` may
    be absent or NaN: stored as null), `skipped_df` its `SKIPPED_COLUMNS`; `categories` maps
    item ids to categories. Rows are validated first (ValueError naming the row and field,
    e.g. an interval's low end above its high end); the batch is written in one
    transaction, so a failure (e.g. an item x channel repeated in the batch) leaves nothing
    behind. In the same transaction the older pending suggestions of the batch's item x
    channels become `superseded` (`db.reviews.supersede_older`), each with an audit entry,
    and, with an `approval_policy`, the suggestions inside its envelope are approved by it
    (`db.reviews.approve_by_policy`; those `destinations` cannot deliver wait for a
    person), their prices put in the delivery outbox.
    """
    model_version = _text(model_version, "batch: field 'model_version'")
    guardrails = _guardrails_json(guardrails_dict)
    batch_id = str(uuid.uuid4())
    created_at = datetime.now(UTC)
    rows = _suggestion_rows(suggestions_df, categories, batch_id, created_at)
    skipped = _skipped_rows(skipped_df, batch_id)
    with Session(engine) as session, session.begin():
        session.add(SuggestionBatchRow(
            id=batch_id, created_at=created_at, model_version=model_version,
            guardrails=guardrails, suggestion_count=len(rows), skipped_count=len(skipped)))
        session.flush()
        if rows:
            session.execute(insert(PriceSuggestionRow), rows)
        if skipped:
            session.execute(insert(SkippedOfferRow), skipped)
        supersede_older(session, batch_id, created_at)
        if approval_policy is not None:
            approve_by_policy(session, approval_policy, batch_id, created_at, destinations)
    return batch_id


def _matching(status: str | None, channel: str | None, category: str | None,
              batch_id: str | None, item_id: str | None = None) -> Select[PriceSuggestionRow]:
    """Suggestions (joined to their batch) matching every filter given."""
    if status is not None and status not in STATUSES:
        raise ValueError(f"filter 'status' must be one of {', '.join(STATUSES)}, got {status!r}")
    for field, value in {"channel": channel, "category": category, "batch_id": batch_id,
                         "item_id": item_id}.items():
        if value is not None:
            _text(value, f"filter '{field}'")
    query = select(PriceSuggestionRow).join(
        SuggestionBatchRow, SuggestionBatchRow.id == PriceSuggestionRow.batch_id)
    return where_equal(query, PriceSuggestionRow, status=status, channel=channel,
                       category=category, batch_id=batch_id, item_id=item_id)


def _order(sort: Sort) -> tuple:
    """ORDER BY of a listing; the gain orders follow `ix_price_suggestions_status_gain`
    (ties: the later stored first)."""
    if sort == "newest":
        return (SuggestionBatchRow.created_at.desc(), SuggestionBatchRow.id,
                PriceSuggestionRow.item_id, PriceSuggestionRow.channel)
    gain = PriceSuggestionRow.expected_profit_suggested - PriceSuggestionRow.expected_profit_current
    if sort == "gain_desc":
        return (gain.desc(), PriceSuggestionRow.id.desc())
    if sort == "gain_asc":
        return (gain.asc(), PriceSuggestionRow.id.asc())
    raise ValueError(f"field 'sort' must be one of {', '.join(get_args(Sort))}, got {sort!r}")


def list_suggestions(
    engine: Engine, status: str | None = None, channel: str | None = None,
    category: str | None = None, batch_id: str | None = None,
    limit: int | None = None, offset: int = 0, sort: Sort = "newest",
    item_id: str | None = None,
) -> list[dict[str, Any]]:
    """Suggestions matching every filter given, in `sort` order (`newest`: newest batch first,
    then by item and channel; `gain_desc` / `gain_asc`: by expected profit change, ties the
    later stored first / last); `limit` rows at most after skipping `offset` (the database
    pages, not Python).

    Each is a dict of the `PriceSuggestion` fields (`bound_by` a list, times aware UTC).
    """
    page = _matching(status, channel, category, batch_id, item_id).with_only_columns(
        PriceSuggestionRow.id).order_by(*_order(sort)).offset(offset).limit(limit)
    with Session(engine) as session:  # the page's ids first: the sort skips wide rows
        ids = list(session.scalars(page))
        rows = {row.id: row for row in session.scalars(
            select(PriceSuggestionRow).where(PriceSuggestionRow.id.in_(ids)))}
        return [rows[id_].as_dict() for id_ in ids]


def count_suggestions(
    engine: Engine, status: str | None = None, channel: str | None = None,
    category: str | None = None, batch_id: str | None = None,
) -> int:
    """How many suggestions match every filter given (the total behind a page)."""
    matching = _matching(status, channel, category, batch_id).subquery()
    with Session(engine) as session:
        return session.scalar(select(func.count()).select_from(matching)) or 0


def filter_choices(engine: Engine, status: str | None = None) -> dict[str, list]:
    """The values the filters can take among the suggestions with `status` (any when None):
    `channel` and `category` (sorted names) and `batch` (dicts of `id`, `created_at`,
    `model_version` and `count`, newest first). Each is read from a (status, field) index."""
    if status is not None and status not in STATUSES:
        raise ValueError(f"filter 'status' must be one of {', '.join(STATUSES)}, got {status!r}")

    def having_status(query: Select) -> Select:
        return where_equal(query, PriceSuggestionRow, status=status)

    with Session(engine) as session:
        values: dict[str, list] = {field: list(session.scalars(having_status(
            select(column).where(column.is_not(None)).distinct().order_by(column))))
            for field, column in (("channel", PriceSuggestionRow.channel),
                                  ("category", PriceSuggestionRow.category))}
        counts = having_status(select(PriceSuggestionRow.batch_id, func.count().label("count"))
                               ).group_by(PriceSuggestionRow.batch_id).subquery()
        batches = session.execute(
            select(SuggestionBatchRow.id, SuggestionBatchRow.created_at,
                   SuggestionBatchRow.model_version, counts.c.count)
            .join(counts, counts.c.batch_id == SuggestionBatchRow.id)
            .order_by(SuggestionBatchRow.created_at.desc()))
        values["batch"] = [{"id": id_, "created_at": created_at, "model_version": version,
                            "count": count} for id_, created_at, version, count in batches]
    return values


def get_batch(engine: Engine, batch_id: str) -> dict[str, Any] | None:
    """A batch shaped as `SuggestionBatch`: its guardrails (a dict), counts, suggestions per
    status and skipped offers; None when there is no such batch."""
    _text(batch_id, "get_batch: field 'batch_id'")
    with Session(engine) as session:
        batch = session.get(SuggestionBatchRow, batch_id)
        if batch is None:
            return None
        by_status: dict[str, int] = {status: count for status, count in session.execute(
            select(PriceSuggestionRow.status, func.count())
            .where(PriceSuggestionRow.batch_id == batch_id)
            .group_by(PriceSuggestionRow.status)
        )}
        skipped = session.scalars(
            select(SkippedOfferRow).where(SkippedOfferRow.batch_id == batch_id)
            .order_by(SkippedOfferRow.item_id, SkippedOfferRow.channel)
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
