"""The transactional outbox of approved prices (`channel_deliveries`) and the delivery
worker's claims on it.

`enqueue` runs inside an approval's transaction (a person's or the approval policy's): the
approval and its price change commit together or not at all. The newest approval of an item
x channel wins: enqueueing supersedes the item x channel's undelivered (`pending`) row, and a
row is never claimed while another row of its item x channel holds a live lease (an older
price still in flight), so a stale price cannot land after a newer one.

Workers claim due rows of one channel with a lease (`claim`: a conditional UPDATE, with
`FOR UPDATE SKIP LOCKED` on PostgreSQL), so several workers never hold one row at once; a
worker that dies leaves its rows to be claimed again when the lease runs out. Every
acknowledgement (`settle`) applies only while the worker still holds the claim. Times are
passed in (`now`), so tests drive the clock.
"""

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, and_, case, exists, func, insert, select, tuple_, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, aliased
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_random

from db.tables import ChannelDeliveryRow, where_equal

KEY_CHUNK = 400
"""Item x channel keys per statement (bound parameters stay well under every limit)."""


class DeliveryError(Exception):
    """A delivery that cannot be retried as asked; nothing was written."""


@dataclass(frozen=True)
class Approval:
    """An approved price to deliver."""

    suggestion_id: int
    item_id: str
    channel: str
    price: float


@dataclass(frozen=True)
class Claimed:
    """A price change a worker holds: deliver `price` for `item_id` on `channel`."""

    id: int
    item_id: str
    channel: str
    price: float
    attempts: int


@dataclass(frozen=True)
class Outcome:
    """How a claimed change went: delivered, or failed with `error`; a `permanent` failure
    (the channel refused the change itself) is not retried."""

    id: int
    error: str | None = None
    permanent: bool = False


def _sqlite_locked(error: BaseException) -> bool:
    return isinstance(error, OperationalError) and "database is locked" in str(error)


_on_lock_contention = retry(retry=retry_if_exception(_sqlite_locked), reraise=True,
                               stop=stop_after_attempt(50), wait=wait_random(0.005, 0.05))
"""Retry a worker's write when SQLite refused it for another writer's lock (workers in
several processes on the embedded database); PostgreSQL never raises it."""


def _chunks(values: Sequence[Any], size: int = KEY_CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start:start + size]


def enqueue(session: Session, approvals: Iterable[Approval], actor: str, at: datetime) -> int:
    """In the caller's transaction: one pending delivery per approval (the last one per item
    x channel), superseding each item x channel's undelivered one. Returns how many."""
    newest = {(approval.item_id, approval.channel): approval for approval in approvals}
    if not newest:
        return 0
    table = ChannelDeliveryRow
    for keys in _chunks(list(newest)):
        session.execute(
            update(table)
            .where(table.status == "pending", tuple_(table.item_id, table.channel).in_(keys))
            .values(status="superseded", updated_at=at, last_error=None)
            .execution_options(synchronize_session=False))
    session.execute(insert(table), [{
        "suggestion_id": approval.suggestion_id, "item_id": approval.item_id,
        "channel": approval.channel, "price": approval.price, "approved_by": actor,
        "approved_at": at, "status": "pending", "attempts": 0, "next_attempt_at": at,
        "updated_at": at} for approval in newest.values()])
    return len(newest)


@_on_lock_contention
def claim(engine: Engine, channel: str, worker: str, now: datetime, lease_seconds: float,
          limit: int) -> list[Claimed]:
    """Claim up to `limit` due pending changes of `channel` for `worker` until now +
    `lease_seconds`, oldest first, counting an attempt on each. A change is due when its
    `next_attempt_at` has come, no live lease holds it and no other change of its item x
    channel is in flight."""
    table = ChannelDeliveryRow
    other = aliased(ChannelDeliveryRow)
    due = (
        select(table.id)
        .where(table.channel == channel, table.status == "pending",
               table.next_attempt_at <= now,
               (table.lease_until.is_(None)) | (table.lease_until <= now),
               ~exists().where(and_(other.item_id == table.item_id,
                                    other.channel == table.channel, other.id != table.id,
                                    other.lease_until > now)))
        .order_by(table.id).limit(limit)
        .with_for_update(skip_locked=True, of=table))
    until = now + timedelta(seconds=lease_seconds)
    with Session(engine) as session, session.begin():
        ids = list(session.scalars(due))
        if not ids:
            return []
        rows = session.execute(
            update(table)
            .where(table.id.in_(ids), table.status == "pending",
                   (table.lease_until.is_(None)) | (table.lease_until <= now))
            .values(claimed_by=worker, lease_until=until, attempts=table.attempts + 1,
                    updated_at=now)
            .returning(table.id, table.item_id, table.channel, table.price, table.attempts)
            .execution_options(synchronize_session=False)).all()
    return sorted((Claimed(*row) for row in rows), key=lambda change: change.id)


@_on_lock_contention
def renew(engine: Engine, ids: Sequence[int], worker: str, now: datetime,
          lease_seconds: float) -> set[int]:
    """Extend `worker`'s live leases on `ids`; returns the ids it still holds (a lease that
    ran out may have been claimed by another worker: do not send those)."""
    table = ChannelDeliveryRow
    until = now + timedelta(seconds=lease_seconds)
    held: set[int] = set()
    with Session(engine) as session, session.begin():
        for chunk in _chunks(list(ids)):
            held.update(session.scalars(
                update(table)
                .where(table.id.in_(chunk), table.claimed_by == worker, table.lease_until > now)
                .values(lease_until=until)
                .returning(table.id)
                .execution_options(synchronize_session=False)))
    return held


def redelivery_delay(attempts: int, initial_seconds: float, max_seconds: float,
                     rng: random.Random) -> float:
    """Seconds before attempt `attempts + 1`: exponential in the attempts made, capped, with
    full jitter (uniform between half and all of it, so retries of one outage spread)."""
    delay = min(max_seconds, initial_seconds * 2 ** max(attempts - 1, 0))
    return delay * rng.uniform(0.5, 1.0)


@_on_lock_contention
def settle(engine: Engine, outcomes: Sequence[Outcome], worker: str, now: datetime, *,
           max_attempts: int, initial_seconds: float, max_seconds: float,
           rng: random.Random) -> dict[str, int]:
    """Record how `worker`'s claimed changes went and release them: delivered; or failed,
    retried after `redelivery_delay`, until `max_attempts` attempts or a permanent failure
    make it a dead letter (`failed`, with the reason). A change superseded meanwhile keeps
    that status. Changes no longer held by `worker` are left alone. Returns counts."""
    table = ChannelDeliveryRow
    counts = {"delivered": 0, "retrying": 0, "failed": 0}
    held = (table.claimed_by == worker)
    released = {"claimed_by": None, "lease_until": None, "updated_at": now}
    with Session(engine) as session, session.begin():
        delivered = [outcome.id for outcome in outcomes if outcome.error is None]
        for chunk in _chunks(delivered):
            counts["delivered"] += len(session.scalars(
                update(table).where(table.id.in_(chunk), held)
                .values(status=case((table.status == "pending", "delivered"),
                                    else_=table.status),
                        delivered_at=now, last_error=None, **released)
                .returning(table.id).execution_options(synchronize_session=False)).all())
        failed = {outcome.id: outcome for outcome in outcomes if outcome.error is not None}
        attempts = dict(session.execute(select(table.id, table.attempts).where(
            table.id.in_(list(failed)), held)).all()) if failed else {}
        for delivery_id, made in attempts.items():
            outcome = failed[delivery_id]
            dead = outcome.permanent or made >= max_attempts
            retry_at = now + timedelta(seconds=redelivery_delay(
                made, initial_seconds, max_seconds, rng))
            status = "failed" if dead else "pending"
            session.execute(
                update(table).where(table.id == delivery_id, held)
                .values(status=case((table.status == "pending", status), else_=table.status),
                        last_error=outcome.error, next_attempt_at=retry_at, **released)
                .execution_options(synchronize_session=False))
            counts["failed" if dead else "retrying"] += 1
    return counts


@_on_lock_contention
def release(engine: Engine, ids: Sequence[int], worker: str, now: datetime) -> None:
    """Give back `worker`'s claims on `ids` untried (e.g. its channel's breaker opened before
    they were sent): the attempt counted by the claim is taken back."""
    table = ChannelDeliveryRow
    with Session(engine) as session, session.begin():
        for chunk in _chunks(list(ids)):
            session.execute(
                update(table).where(table.id.in_(chunk), table.claimed_by == worker)
                .values(claimed_by=None, lease_until=None, updated_at=now,
                        attempts=func.max(table.attempts - 1, 0)
                        if engine.dialect.name == "sqlite"
                        else func.greatest(table.attempts - 1, 0))
                .execution_options(synchronize_session=False))


@_on_lock_contention
def retry_failed(engine: Engine, delivery_id: int, actor: str, now: datetime) -> dict[str, Any]:
    """Put a dead letter back in the queue with a fresh retry budget, recording who did
    (`retried_by`, `retried_at`); returns it. Raises
    `LookupError` when there is no such delivery and `DeliveryError` when it is not failed or
    a newer approval of its item x channel exists (retrying would send a stale price)."""
    table = ChannelDeliveryRow
    with Session(engine) as session, session.begin():
        row = session.get(table, delivery_id)
        if row is None:
            raise LookupError(f"no channel delivery with id {delivery_id}")
        if row.status != "failed":
            raise DeliveryError(f"delivery {delivery_id} is {row.status}; only failed "
                                "deliveries can be retried")
        newer = session.scalar(select(table.id).where(
            table.item_id == row.item_id, table.channel == row.channel, table.id > row.id,
            table.status != "superseded").limit(1))
        if newer is not None:
            raise DeliveryError(f"delivery {delivery_id} is out of date: delivery {newer} "
                                f"carries a newer approved price of item {row.item_id} on "
                                f"channel {row.channel}")
        row.status, row.attempts, row.next_attempt_at, row.updated_at = "pending", 0, now, now
        row.retried_by, row.retried_at = actor, now
        session.flush()
        return row.as_dict()


def _matching(status: str | None, channel: str | None, item_id: str | None,
              suggestion_id: int | None) -> Any:
    return where_equal(select(ChannelDeliveryRow), ChannelDeliveryRow, status=status,
                       channel=channel, item_id=item_id, suggestion_id=suggestion_id)


def list_deliveries(engine: Engine, status: str | None = None, channel: str | None = None,
                    item_id: str | None = None, suggestion_id: int | None = None,
                    limit: int | None = None, offset: int = 0) -> list[dict[str, Any]]:
    """Deliveries matching every filter given, newest first (paged in the database)."""
    query = _matching(status, channel, item_id, suggestion_id).order_by(
        ChannelDeliveryRow.id.desc()).offset(offset).limit(limit)
    with Session(engine) as session:
        return [row.as_dict() for row in session.scalars(query)]


def count_deliveries(engine: Engine, status: str | None = None, channel: str | None = None,
                     item_id: str | None = None, suggestion_id: int | None = None) -> int:
    """How many deliveries match every filter given."""
    matching = _matching(status, channel, item_id, suggestion_id).subquery()
    with Session(engine) as session:
        return session.scalar(select(func.count()).select_from(matching)) or 0


def deliveries_of(engine: Engine, suggestion_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    """The newest delivery of each of `suggestion_ids` that has one."""
    table = ChannelDeliveryRow
    wanted = sorted(set(suggestion_ids))
    found: dict[int, dict[str, Any]] = {}
    with Session(engine) as session:
        for chunk in _chunks(wanted):
            for row in session.scalars(select(table).where(table.suggestion_id.in_(chunk))
                                       .order_by(table.id)):
                found[row.suggestion_id] = row.as_dict()
    return found


def status_counts(engine: Engine) -> dict[tuple[str, str], int]:
    """Deliveries per (channel, status)."""
    table = ChannelDeliveryRow
    with Session(engine) as session:
        return {(channel, status): count for channel, status, count in session.execute(
            select(table.channel, table.status, func.count())
            .group_by(table.channel, table.status))}
