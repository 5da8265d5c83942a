"""The service database's tables (SQLAlchemy 2, portable across SQLite and PostgreSQL) and
the engine that opens it.

- `suggestion_batches`: one row per optimizer run (uuid `id`, `created_at`, the demand
  model's `model_version`, the `guardrails` used as JSON text, the numbers of suggestions
  and skipped offers).
- `price_suggestions`: one row per item x channel of a batch (unique per batch); `status`
  is one of `db.schemas.STATUSES`, new rows `pending`. Its uncertainty columns
  (`db.schemas.UNCERTAINTY_FIELDS`: the expected profit gain's interval, the elasticity with
  its interval, the evidence share; revision 0002) are null when the model gave none.
  Revision 0003 adds the review: the bounds the guardrails put on the price when the batch
  was made (`price_floor` / `price_ceiling` with the rule setting each; an edited price is
  checked against them), the price approved (`approved_price`: the suggested one, or a
  merchandiser's edit) and who decided (`reviewed_by`: an API key's name or `policy`).
- `skipped_offers`: the offers of a batch no price could satisfy, with the reason.
- `api_keys` (0003): the service's API keys, each with a unique `name` and a `role`
  (`db.schemas.ROLES`); only the SHA-256 of a key is stored, never the key, with its first
  characters (`key_prefix`) to tell keys apart; `revoked_at` is set when revoked.
- `suggestion_decisions` (0003): the append-only audit log of the review, one row per
  decision on a suggestion (who, when, the status and price before and after, the reason).
  Rows are only ever inserted, and carry the suggestion's batch, item and channel
  themselves (no foreign key), so they outlive a deleted batch.
- `channel_deliveries` (0005): the transactional outbox of approved prices, one row per
  approval, written in the approval's transaction (`db.outbox`). `status` is one of
  `db.schemas.DELIVERY_STATUSES`; at most one row per item x channel is `pending` (a partial
  unique index): a newer approval supersedes the undelivered older one. A delivery worker
  claims rows with a lease (`claimed_by`, `lease_until`) and retries them at
  `next_attempt_at`.
- `channel_stock` (0006): the latest stock on hand each sales channel reported for an item
  (`inventory` events; latest by the report's time, then its event id), one row per item x
  channel. A channel's report is its allocation of the item's stock.
- `item_stock` (0006): per item, the sum of its channels' latest reports (`stock_on_hand`),
  the stock its prices were last suggested with after a stock change (`priced_stock`, null
  before the first such run) and, while one is due, when that run was requested
  (`reprice_requested_at`, indexed where set). `db.stock` writes both tables.

Invariants: timestamps are stored in UTC and read back timezone-aware on every database; a
table changes only together with a migration in `db/migrations/versions/`
(`tests/test_db_migrations.py` fails otherwise). Rows are validated by `db.schemas` before
they are written here.
"""

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    DateTime,
    Dialect,
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
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from db.schemas import DELIVERY_STATUSES, ROLES, STATUSES


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and read back as an aware UTC datetime on every database
    (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("timestamps must be timezone-aware")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    def as_dict(self) -> dict[str, Any]:
        """The row's column values by attribute name."""
        return {column.key: getattr(self, column.key)
                for column in self.__mapper__.column_attrs}


class SuggestionBatchRow(Base):
    __tablename__ = "suggestion_batches"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    model_version: Mapped[str] = mapped_column(String(200))
    guardrails: Mapped[str] = mapped_column(Text)  # JSON of the Guardrails used
    suggestion_count: Mapped[int] = mapped_column(Integer)
    skipped_count: Mapped[int] = mapped_column(Integer)


class PriceSuggestionRow(Base):
    __tablename__ = "price_suggestions"
    __table_args__ = (
        UniqueConstraint("batch_id", "item_id", "channel", name="uq_price_suggestions_offer"),
        CheckConstraint(
            "status IN (" + ", ".join(f"'{status}'" for status in STATUSES) + ")",
            name="ck_price_suggestions_status",
        ),
        Index("ix_price_suggestions_status_channel", "status", "channel"),
        Index("ix_price_suggestions_offer_status", "item_id", "channel", "status"),
        Index("ix_price_suggestions_status_category", "status", "category"),
        Index("ix_price_suggestions_status_batch", "status", "batch_id"),
        Index("ix_price_suggestions_status_gain", text("status"),
              text("(expected_profit_suggested - expected_profit_current)"), text("id")),
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
    # Revision 0002: the suggestion's uncertainty, null when the model gave none.
    expected_profit_gain_low: Mapped[float | None] = mapped_column(Double)
    expected_profit_gain_high: Mapped[float | None] = mapped_column(Double)
    elasticity: Mapped[float | None] = mapped_column(Double)
    elasticity_low: Mapped[float | None] = mapped_column(Double)
    elasticity_high: Mapped[float | None] = mapped_column(Double)
    evidence_share: Mapped[float | None] = mapped_column(Double)
    # Revision 0003: the review.
    price_floor: Mapped[float | None] = mapped_column(Double)
    price_floor_rule: Mapped[str | None] = mapped_column(String(32))
    price_ceiling: Mapped[float | None] = mapped_column(Double)
    price_ceiling_rule: Mapped[str | None] = mapped_column(String(32))
    approved_price: Mapped[float | None] = mapped_column(Double)
    reviewed_by: Mapped[str | None] = mapped_column(String(200))


class SkippedOfferRow(Base):
    __tablename__ = "skipped_offers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    batch_id: Mapped[str] = mapped_column(
        ForeignKey("suggestion_batches.id", ondelete="CASCADE"), index=True)
    item_id: Mapped[str] = mapped_column(String(200))
    channel: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text)


class ApiKeyRow(Base):
    __tablename__ = "api_keys"
    __table_args__ = (
        CheckConstraint("role IN (" + ", ".join(f"'{role}'" for role in ROLES) + ")",
                        name="ck_api_keys_role"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    key_prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class SuggestionDecisionRow(Base):
    __tablename__ = "suggestion_decisions"
    __table_args__ = (
        Index("ix_suggestion_decisions_offer", "item_id", "channel"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    suggestion_id: Mapped[int] = mapped_column(Integer, index=True)
    batch_id: Mapped[str] = mapped_column(String(36), index=True)
    item_id: Mapped[str] = mapped_column(String(200))
    channel: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(200))
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime)
    status_before: Mapped[str] = mapped_column(String(16))
    status_after: Mapped[str] = mapped_column(String(16))
    price_before: Mapped[float] = mapped_column(Double)
    price_after: Mapped[float | None] = mapped_column(Double)
    reason: Mapped[str | None] = mapped_column(Text)


class ChannelDeliveryRow(Base):
    __tablename__ = "channel_deliveries"
    __table_args__ = (
        CheckConstraint("status IN (" + ", ".join(f"'{status}'" for status in DELIVERY_STATUSES)
                        + ")", name="ck_channel_deliveries_status"),
        Index("uq_channel_deliveries_pending_offer", "item_id", "channel", unique=True,
              sqlite_where=text("status = 'pending'"),
              postgresql_where=text("status = 'pending'")),
        Index("ix_channel_deliveries_pending", "channel", "id",
              sqlite_where=text("status = 'pending'"),
              postgresql_where=text("status = 'pending'")),
        Index("ix_channel_deliveries_offer_lease", "item_id", "channel", "lease_until"),
        Index("ix_channel_deliveries_status_id", "status", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    suggestion_id: Mapped[int] = mapped_column(Integer, index=True)
    item_id: Mapped[str] = mapped_column(String(200))
    channel: Mapped[str] = mapped_column(String(200))
    price: Mapped[float] = mapped_column(Double)
    approved_by: Mapped[str] = mapped_column(String(200))
    approved_at: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    retried_by: Mapped[str | None] = mapped_column(String(200))
    retried_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ChannelStockRow(Base):
    __tablename__ = "channel_stock"
    __table_args__ = (
        CheckConstraint("stock_on_hand >= 0", name="ck_channel_stock_stock_on_hand"),
    )

    item_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    channel: Mapped[str] = mapped_column(String(200), primary_key=True)
    stock_on_hand: Mapped[int] = mapped_column(Integer)
    reported_at: Mapped[datetime] = mapped_column(UTCDateTime)  # the report's event time
    event_id: Mapped[str] = mapped_column(String(200))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ItemStockRow(Base):
    __tablename__ = "item_stock"
    __table_args__ = (
        CheckConstraint("stock_on_hand >= 0", name="ck_item_stock_stock_on_hand"),
        Index("ix_item_stock_reprice_requested", "reprice_requested_at",
              sqlite_where=text("reprice_requested_at IS NOT NULL"),
              postgresql_where=text("reprice_requested_at IS NOT NULL")),
    )

    item_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    stock_on_hand: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    priced_stock: Mapped[int | None] = mapped_column(Integer)
    priced_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reprice_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


def where_equal(query: Select[Any], table: type[Base], **filters: object) -> Select[Any]:
    """`query` narrowed to the rows of `table` whose column equals each filter given (a None
    filter is no filter)."""
    for column, value in filters.items():
        if value is not None:
            query = query.where(getattr(table, column) == value)
    return query


def _enable_sqlite_foreign_keys(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def engine_for(url: str) -> Engine:
    """An engine for a SQLAlchemy URL; SQLite connections enforce foreign keys."""
    engine = create_engine(url)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _enable_sqlite_foreign_keys)
    return engine
