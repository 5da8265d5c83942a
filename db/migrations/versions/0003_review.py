"""The review: API keys, the audit log of decisions, and per suggestion its guardrail bounds,
approved price and reviewer; the status `superseded` (a newer batch priced the offer).

The status check is replaced in batch mode: SQLite rebuilds the table (the named constraint
is declared again by `table_args`, so the rebuilt table carries only the new one).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels = None
depends_on = None

UTC_TIMESTAMP = sa.DateTime(timezone=True)  # `db.tables.UTCDateTime` stores this type
STATUS_CHECK = "ck_price_suggestions_status"
OLD_STATUSES = ("pending", "approved", "rejected", "edited")
NEW_STATUSES = (*OLD_STATUSES, "superseded")
REVIEW_COLUMNS: dict[str, sa.types.TypeEngine] = {
    "price_floor": sa.Double(),
    "price_floor_rule": sa.String(length=32),
    "price_ceiling": sa.Double(),
    "price_ceiling_rule": sa.String(length=32),
    "approved_price": sa.Double(),
    "reviewed_by": sa.String(length=200),
}


def _status_check(statuses: tuple[str, ...]) -> str:
    return "status IN (" + ", ".join(f"'{status}'" for status in statuses) + ")"


def _replace_status_check(statuses: tuple[str, ...]) -> None:
    with op.batch_alter_table("price_suggestions") as batch:
        batch.drop_constraint(STATUS_CHECK, type_="check")
        batch.create_check_constraint(STATUS_CHECK, _status_check(statuses))


def upgrade() -> None:
    with op.batch_alter_table("price_suggestions") as batch:
        for name, kind in REVIEW_COLUMNS.items():
            batch.add_column(sa.Column(name, kind, nullable=True))
    _replace_status_check(NEW_STATUSES)
    op.create_index("ix_price_suggestions_offer_status", "price_suggestions",
                    ["item_id", "channel", "status"])
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("key_prefix", sa.String(length=16), nullable=False),
        sa.Column("created_at", UTC_TIMESTAMP, nullable=False),
        sa.Column("revoked_at", UTC_TIMESTAMP, nullable=True),
        sa.CheckConstraint("role IN ('storefront', 'merchandiser', 'admin')",
                           name="ck_api_keys_role"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
        sa.UniqueConstraint("key_hash"),
    )
    op.create_table(
        "suggestion_decisions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("suggestion_id", sa.Integer(), nullable=False),
        sa.Column("batch_id", sa.String(length=36), nullable=False),
        sa.Column("item_id", sa.String(length=200), nullable=False),
        sa.Column("channel", sa.String(length=200), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("decided_at", UTC_TIMESTAMP, nullable=False),
        sa.Column("status_before", sa.String(length=16), nullable=False),
        sa.Column("status_after", sa.String(length=16), nullable=False),
        sa.Column("price_before", sa.Double(), nullable=False),
        sa.Column("price_after", sa.Double(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_suggestion_decisions_suggestion_id", "suggestion_decisions",
                    ["suggestion_id"])
    op.create_index("ix_suggestion_decisions_batch_id", "suggestion_decisions", ["batch_id"])
    op.create_index("ix_suggestion_decisions_offer", "suggestion_decisions",
                    ["item_id", "channel"])


def downgrade() -> None:
    op.drop_table("suggestion_decisions")
    op.drop_table("api_keys")
    op.drop_index("ix_price_suggestions_offer_status", table_name="price_suggestions")
    op.execute("UPDATE price_suggestions SET status = 'rejected' WHERE status = 'superseded'")
    _replace_status_check(OLD_STATUSES)
    with op.batch_alter_table("price_suggestions") as batch:
        for name in reversed(REVIEW_COLUMNS):
            batch.drop_column(name)
