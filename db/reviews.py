"""The review of price suggestions: decisions (approve, reject, edit; one by one or in bulk),
their append-only audit log, and superseding by newer batches.

A decision applies only to a `pending` suggestion. Its status changes with a conditional
UPDATE (`... WHERE status = 'pending'`), so of two concurrent decisions on one suggestion the
first wins and the second finds it decided (`DecisionConflict`), on SQLite and PostgreSQL
alike. Every decision writes its audit entry (`suggestion_decisions`) in the same
transaction; a bulk decision is one transaction: all of it or nothing. An edit is an approval
at another price, checked against the guardrails of its batch (`GuardrailBreach` names the
rule it breaks). Actors are API key names, `policy` (the approval policy) or `system`.

Every approval (an edit included) writes its price change into the delivery outbox
(`db.outbox.enqueue`) in the same transaction. Given the channels config
(`db.channels.Destinations`), an approval whose channel is not configured or whose item is
not mapped on it is refused (`UndeliverableError`) before anything is written; the approval
policy leaves such suggestions to a person.
"""

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import Engine, Select, and_, exists, func, insert, select, update
from sqlalchemy.orm import Session, aliased

from db.channels import Destinations
from db.outbox import Approval, enqueue
from db.policy import POLICY, ApprovalPolicy
from db.tables import (
    PriceSuggestionRow,
    SuggestionBatchRow,
    SuggestionDecisionRow,
    where_equal,
)
from models.pricing.guardrails import Guardrails

Action = Literal["approve", "reject", "edit"]
BULK_LIMIT = 5_000
"""The most suggestions one bulk decision may take (more: `TooManyForBulk`)."""
SYSTEM = "system"
STATUS_AFTER = {"approve": "approved", "reject": "rejected", "edit": "edited"}
PRICE_SLACK = 1e-9


class ReviewError(Exception):
    """A decision that cannot be applied; nothing was written."""


class SuggestionNotFound(ReviewError):
    def __init__(self, ids: Iterable[int]):
        self.ids = sorted(ids)
        listed = ", ".join(map(str, self.ids[:20])) + (" ..." if len(self.ids) > 20 else "")
        super().__init__(f"no price suggestion with id {listed}")


class DecisionConflict(ReviewError):
    """The suggestion was decided already (or superseded): only pending ones take decisions."""


class GuardrailBreach(ReviewError):
    def __init__(self, rule: str | None, message: str):
        self.rule = rule
        super().__init__(message)


class TooManyForBulk(ReviewError):
    pass


def _decided_text(row: PriceSuggestionRow) -> str:
    by = f" by {row.reviewed_by}" if row.reviewed_by else ""
    at = f" at {row.reviewed_at:%Y-%m-%d %H:%M:%S} UTC" if row.reviewed_at else ""
    return f"suggestion {row.id} is {row.status}{by}{at}; only pending suggestions take decisions"


def _effective_price(row: PriceSuggestionRow) -> float:
    """The price a channel is headed for: approved, else suggested while pending, else the
    current one."""
    if row.approved_price is not None:
        return row.approved_price
    return row.suggested_price if row.status == "pending" else row.current_price


def check_edit(session: Session, row: PriceSuggestionRow, price: float) -> None:
    """Raise `GuardrailBreach` unless `price` keeps every guardrail of the suggestion's batch:
    within its stored floor and ceiling, on the price grid, within the channel spread of the
    item's other channels in the batch (at their approved, pending or current prices)."""
    if row.price_floor is None or row.price_ceiling is None:
        raise GuardrailBreach(None, f"suggestion {row.id} comes from a batch made before the "
                                    "guardrail bounds were stored; run the suggestions again "
                                    "to edit its price")
    if price < row.price_floor - PRICE_SLACK:
        raise GuardrailBreach(row.price_floor_rule, f"price {price:.2f} is below "
                              f"{row.price_floor:.2f}, the floor set by {row.price_floor_rule}")
    if price > row.price_ceiling + PRICE_SLACK:
        raise GuardrailBreach(row.price_ceiling_rule, f"price {price:.2f} is above "
                              f"{row.price_ceiling:.2f}, the ceiling set by "
                              f"{row.price_ceiling_rule}")
    guardrails_json = session.scalar(select(SuggestionBatchRow.guardrails)
                                     .where(SuggestionBatchRow.id == row.batch_id))
    guardrails = Guardrails.model_validate(json.loads(guardrails_json or "{}"))
    if not guardrails.on_grid(price, row.current_price):
        allowed = (", ".join(f".{round(e * 100):02d}" for e in guardrails.price_endings)
                   if guardrails.price_endings else f"multiples of {guardrails.price_step:g}")
        raise GuardrailBreach("price_endings", f"price {price} is off the price grid "
                                               f"(allowed: {allowed})")
    others = session.scalars(select(PriceSuggestionRow).where(
        PriceSuggestionRow.batch_id == row.batch_id, PriceSuggestionRow.item_id == row.item_id,
        PriceSuggestionRow.id != row.id)).all()
    prices = [price, *(_effective_price(other) for other in others)]
    spread = guardrails.max_channel_spread_percent / 100
    if max(prices) > min(prices) * (1 + spread) + PRICE_SLACK:
        raise GuardrailBreach("channel_spread", f"price {price:.2f} spreads item "
                              f"{row.item_id}'s channel prices ({min(prices):.2f} to "
                              f"{max(prices):.2f}) beyond "
                              f"{guardrails.max_channel_spread_percent:g}%")


def _audit(session: Session, rows: Sequence[dict[str, Any]], action: str, actor: str,
           at: datetime, reason: str | None = None) -> None:
    """Append one audit entry per decided suggestion (dicts of its row before the decision,
    `price_after` and, when the reasons differ, `reason`)."""
    status_after = STATUS_AFTER.get(action, action)
    session.execute(insert(SuggestionDecisionRow), [{
        "suggestion_id": row["id"], "batch_id": row["batch_id"], "item_id": row["item_id"],
        "channel": row["channel"], "action": status_after, "actor": actor, "decided_at": at,
        "status_before": "pending", "status_after": status_after,
        "price_before": row["suggested_price"], "price_after": row["price_after"],
        "reason": row.get("reason", reason),
    } for row in rows])


def _clean_reason(action: Action, reason: str | None) -> str | None:
    reason = reason.strip() if isinstance(reason, str) else None
    if action == "reject" and not reason:
        raise ValueError("field 'reason' is required to reject a suggestion")
    return reason or None


def decide(engine: Engine, suggestion_id: int, action: Action, actor: str,
           reason: str | None = None, price: float | None = None,
           destinations: Destinations | None = None) -> dict[str, Any]:
    """Approve, reject (with a reason) or edit (approve at `price`, checked against the
    guardrails) one pending suggestion; returns it as decided. An approval goes to the
    delivery outbox. Raises `SuggestionNotFound`, `DecisionConflict`, `GuardrailBreach`,
    `UndeliverableError` (checked against `destinations`) or ValueError (bad arguments);
    writes nothing then."""
    reason = _clean_reason(action, reason)
    if (action == "edit") != (price is not None):
        raise ValueError("field 'price' is required to edit a suggestion, and only then")
    now = datetime.now(UTC)
    with Session(engine) as session, session.begin():
        row = session.get(PriceSuggestionRow, suggestion_id)
        if row is None:
            raise SuggestionNotFound([suggestion_id])
        if row.status != "pending":
            raise DecisionConflict(_decided_text(row))
        if action == "edit":
            assert price is not None
            check_edit(session, row, price)
        if action != "reject" and destinations is not None:
            destinations.check([(row.item_id, row.channel)])
        approved = None if action == "reject" else (price if action == "edit"
                                                    else row.suggested_price)
        before = row.as_dict()
        decision = {"status": STATUS_AFTER[action], "approved_price": approved,
                    "reviewed_at": now, "reviewed_by": actor}
        won = session.execute(
            update(PriceSuggestionRow)
            .where(PriceSuggestionRow.id == suggestion_id, PriceSuggestionRow.status == "pending")
            .values(**decision).returning(PriceSuggestionRow.id)
            .execution_options(synchronize_session=False)).first() is not None
        if won:
            _audit(session, [before | {"price_after": approved}], action, actor, now, reason)
            if approved is not None:
                enqueue(session, [Approval(row.id, row.item_id, row.channel, approved)],
                        actor, now)
            return before | decision
    with Session(engine) as session:  # a concurrent decision came between the read and update
        decided = session.get(PriceSuggestionRow, suggestion_id)
        assert decided is not None
        raise DecisionConflict(_decided_text(decided))


def _pending_matching(channel: str | None, category: str | None,
                      batch_id: str | None) -> Select[int]:
    return where_equal(select(PriceSuggestionRow.id), PriceSuggestionRow, status="pending",
                       channel=channel, category=category, batch_id=batch_id)


def decide_many(engine: Engine, action: Literal["approve", "reject"], actor: str,
                ids: Sequence[int] | None = None, *, channel: str | None = None,
                category: str | None = None, batch_id: str | None = None,
                reason: str | None = None,
                destinations: Destinations | None = None) -> list[int]:
    """Approve or reject many pending suggestions in one transaction: the given `ids` (every
    one must exist and be pending, else nothing is decided) or, without ids, every pending
    suggestion matching the filters. Approvals go to the delivery outbox; one that
    `destinations` cannot deliver refuses the whole request (`UndeliverableError`). Returns
    the ids decided. At most `BULK_LIMIT` (`TooManyForBulk` beyond)."""
    reason = _clean_reason(action, reason)
    now = datetime.now(UTC)
    with Session(engine) as session, session.begin():
        if ids is not None:
            wanted = sorted(set(ids))
            if len(wanted) > BULK_LIMIT:
                raise TooManyForBulk(f"{len(wanted)} ids given; at most {BULK_LIMIT} per request")
            found = {row.id: row for row in session.scalars(
                select(PriceSuggestionRow).where(PriceSuggestionRow.id.in_(wanted)))}
            if missing := set(wanted) - set(found):
                raise SuggestionNotFound(missing)
            if decided := [found[i] for i in wanted if found[i].status != "pending"]:
                raise DecisionConflict("; ".join(_decided_text(row) for row in decided[:10]))
        else:
            matching = _pending_matching(channel, category, batch_id)
            count = session.scalar(select(func.count()).select_from(matching.subquery())) or 0
            if count > BULK_LIMIT:
                raise TooManyForBulk(f"the filters match {count} pending suggestions; at most "
                                     f"{BULK_LIMIT} per request: narrow them")
            wanted = list(session.scalars(matching))
        if not wanted:
            return []
        if action == "approve" and destinations is not None:
            destinations.check([(item_id, channel) for item_id, channel in session.execute(
                select(PriceSuggestionRow.item_id, PriceSuggestionRow.channel)
                .where(PriceSuggestionRow.id.in_(wanted)))])
        approved = None if action == "reject" else PriceSuggestionRow.suggested_price
        result = session.execute(
            update(PriceSuggestionRow)
            .where(PriceSuggestionRow.id.in_(wanted), PriceSuggestionRow.status == "pending")
            .values(status=STATUS_AFTER[action], approved_price=approved, reviewed_at=now,
                    reviewed_by=actor)
            .returning(PriceSuggestionRow.id, PriceSuggestionRow.batch_id,
                       PriceSuggestionRow.item_id, PriceSuggestionRow.channel,
                       PriceSuggestionRow.suggested_price)
            .execution_options(synchronize_session=False))
        rows = [dict(row._mapping) for row in result]
        if ids is not None and len(rows) != len(wanted):  # a concurrent decision won one
            raise DecisionConflict("some of the suggestions were decided meanwhile; "
                                   "nothing was changed, try again")
        _audit(session, [row | {"price_after": None if action == "reject"
                                else row["suggested_price"]} for row in rows],
               action, actor, now, reason)
        if action == "approve":
            enqueue(session, [Approval(row["id"], row["item_id"], row["channel"],
                                       row["suggested_price"]) for row in rows], actor, now)
        return sorted(row["id"] for row in rows)


def supersede_older(session: Session, batch_id: str, at: datetime) -> int:
    """In the caller's transaction: the pending suggestions of other batches for an item x
    channel that batch `batch_id` prices become `superseded`, each with an audit entry by
    `system`. Returns how many."""
    newer = aliased(PriceSuggestionRow)
    result = session.execute(
        update(PriceSuggestionRow)
        .where(PriceSuggestionRow.status == "pending", PriceSuggestionRow.batch_id != batch_id,
               exists().where(and_(newer.batch_id == batch_id,
                                   newer.item_id == PriceSuggestionRow.item_id,
                                   newer.channel == PriceSuggestionRow.channel)))
        .values(status="superseded", reviewed_at=at, reviewed_by=SYSTEM)
        .returning(PriceSuggestionRow.id, PriceSuggestionRow.batch_id,
                   PriceSuggestionRow.item_id, PriceSuggestionRow.channel,
                   PriceSuggestionRow.suggested_price)
        .execution_options(synchronize_session=False))
    rows = [dict(row._mapping) | {"price_after": None} for row in result]
    if rows:
        _audit(session, rows, "superseded", SYSTEM, at, f"superseded by batch {batch_id}")
    return len(rows)


def approve_by_policy(session: Session, policy: ApprovalPolicy, batch_id: str,
                      at: datetime, destinations: Destinations | None = None) -> int:
    """In the caller's transaction: approve the pending suggestions of batch `batch_id` that
    `policy` approves and `destinations` can deliver (the others wait for a person), each
    with an audit entry by `policy` saying why, and put their prices in the delivery outbox.
    Returns how many."""
    approved = []
    for row in session.scalars(select(PriceSuggestionRow).where(
            PriceSuggestionRow.batch_id == batch_id, PriceSuggestionRow.status == "pending")):
        reason = policy.approves(row)
        if destinations is not None and destinations.problem(row.item_id, row.channel):
            reason = None
        if reason is not None:
            approved.append(row.as_dict() | {"price_after": row.suggested_price,
                                             "reason": reason})
    if approved:
        session.execute(
            update(PriceSuggestionRow)
            .where(PriceSuggestionRow.id.in_([row["id"] for row in approved]))
            .values(status="approved", approved_price=PriceSuggestionRow.suggested_price,
                    reviewed_at=at, reviewed_by=POLICY)
            .execution_options(synchronize_session=False))
        _audit(session, approved, "approve", POLICY, at)
        enqueue(session, [Approval(row["id"], row["item_id"], row["channel"],
                                   row["suggested_price"]) for row in approved], POLICY, at)
    return len(approved)


def get_suggestion(engine: Engine, suggestion_id: int) -> dict[str, Any] | None:
    """One suggestion shaped as `PriceSuggestion`, None when there is none."""
    with Session(engine) as session:
        row = session.get(PriceSuggestionRow, suggestion_id)
        return None if row is None else row.as_dict()


def _decisions_matching(item_id: str | None, channel: str | None, batch_id: str | None,
                        suggestion_id: int | None) -> Select[SuggestionDecisionRow]:
    return where_equal(select(SuggestionDecisionRow), SuggestionDecisionRow, item_id=item_id,
                       channel=channel, batch_id=batch_id, suggestion_id=suggestion_id)


def list_decisions(engine: Engine, item_id: str | None = None, channel: str | None = None,
                   batch_id: str | None = None, suggestion_id: int | None = None,
                   limit: int | None = None, offset: int = 0) -> list[dict[str, Any]]:
    """Audit entries matching every filter given, newest first (paged in the database)."""
    query = _decisions_matching(item_id, channel, batch_id, suggestion_id).order_by(
        SuggestionDecisionRow.decided_at.desc(), SuggestionDecisionRow.id.desc()
    ).offset(offset).limit(limit)
    with Session(engine) as session:
        return [row.as_dict() for row in session.scalars(query)]


def count_decisions(engine: Engine, item_id: str | None = None, channel: str | None = None,
                    batch_id: str | None = None, suggestion_id: int | None = None) -> int:
    """How many audit entries match every filter given."""
    matching = _decisions_matching(item_id, channel, batch_id, suggestion_id).subquery()
    with Session(engine) as session:
        return session.scalar(select(func.count()).select_from(matching)) or 0
