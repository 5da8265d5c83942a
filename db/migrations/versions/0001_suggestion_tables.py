"""The suggestion tables: batches, price suggestions and skipped offers.

Exactly what `Base.metadata.create_all` made before migrations existed, so such a database
is stamped at this revision as it is.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels = None
depends_on = None

UTC_TIMESTAMP = sa.DateTime(timezone=True)  # `db.tables.UTCDateTime` stores this type


def upgrade() -> None:
    op.create_table(
        "suggestion_batches",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("created_at", UTC_TIMESTAMP, nullable=False),
        sa.Column("model_version", sa.String(length=200), nullable=False),
        sa.Column("guardrails", sa.Text(), nullable=False),
        sa.Column("suggestion_count", sa.Integer(), nullable=False),
        sa.Column("skipped_count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_suggestion_batches_created_at", "suggestion_batches", ["created_at"])

    op.create_table(
        "price_suggestions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("batch_id", sa.String(length=36), nullable=False),
        sa.Column("item_id", sa.String(length=200), nullable=False),
        sa.Column("channel", sa.String(length=200), nullable=False),
        sa.Column("category", sa.String(length=200), nullable=True),
        sa.Column("current_price", sa.Double(), nullable=False),
        sa.Column("suggested_price", sa.Double(), nullable=False),
        sa.Column("expected_units_current", sa.Double(), nullable=False),
        sa.Column("expected_units_suggested", sa.Double(), nullable=False),
        sa.Column("expected_revenue_current", sa.Double(), nullable=False),
        sa.Column("expected_revenue_suggested", sa.Double(), nullable=False),
        sa.Column("expected_profit_current", sa.Double(), nullable=False),
        sa.Column("expected_profit_suggested", sa.Double(), nullable=False),
        sa.Column("bound_by", sa.JSON(), nullable=False),
        sa.Column("explanation", sa.Text(), nullable=False),
        sa.Column("model_version", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="pending", nullable=False),
        sa.Column("reviewed_at", UTC_TIMESTAMP, nullable=True),
        sa.Column("created_at", UTC_TIMESTAMP, nullable=False),
        sa.CheckConstraint("status IN ('pending', 'approved', 'rejected', 'edited')",
                           name="ck_price_suggestions_status"),
        sa.ForeignKeyConstraint(["batch_id"], ["suggestion_batches.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("batch_id", "item_id", "channel", name="uq_price_suggestions_offer"),
    )
    op.create_index("ix_price_suggestions_batch_id", "price_suggestions", ["batch_id"])
    op.create_index("ix_price_suggestions_status_channel", "price_suggestions",
                    ["status", "channel"])

    op.create_table(
        "skipped_offers",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("batch_id", sa.String(length=36), nullable=False),
        sa.Column("item_id", sa.String(length=200), nullable=False),
        sa.Column("channel", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["batch_id"], ["suggestion_batches.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_skipped_offers_batch_id", "skipped_offers", ["batch_id"])


def downgrade() -> None:
    op.drop_table("skipped_offers")
    op.drop_table("price_suggestions")
    op.drop_table("suggestion_batches")
