"""The transactional outbox of approved prices: `channel_deliveries`, one row per approval,
at most one `pending` row per item x channel (a partial unique index), indexed for the
delivery worker's claims (a channel's pending rows in id order, so a claim reads its batch
without sorting the backlog; live leases of an offer) and the listing of dead letters.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision: str | None = "0004"
branch_labels = None
depends_on = None

UTC_TIMESTAMP = sa.DateTime(timezone=True)  # `db.tables.UTCDateTime` stores this type
PENDING = sa.text("status = 'pending'")


def upgrade() -> None:
    op.create_table(
        "channel_deliveries",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("suggestion_id", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.String(length=200), nullable=False),
        sa.Column("channel", sa.String(length=200), nullable=False),
        sa.Column("price", sa.Double(), nullable=False),
        sa.Column("approved_by", sa.String(length=200), nullable=False),
        sa.Column("approved_at", UTC_TIMESTAMP, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_at", UTC_TIMESTAMP, nullable=False),
        sa.Column("claimed_by", sa.String(length=200), nullable=True),
        sa.Column("lease_until", UTC_TIMESTAMP, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("delivered_at", UTC_TIMESTAMP, nullable=True),
        sa.Column("updated_at", UTC_TIMESTAMP, nullable=False),
        sa.Column("retried_by", sa.String(length=200), nullable=True),
        sa.Column("retried_at", UTC_TIMESTAMP, nullable=True),
        sa.CheckConstraint("status IN ('pending', 'delivered', 'failed', 'superseded')",
                           name="ck_channel_deliveries_status"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_channel_deliveries_suggestion_id", "channel_deliveries",
                    ["suggestion_id"])
    op.create_index("uq_channel_deliveries_pending_offer", "channel_deliveries",
                    ["item_id", "channel"], unique=True, sqlite_where=PENDING,
                    postgresql_where=PENDING)
    op.create_index("ix_channel_deliveries_pending", "channel_deliveries", ["channel", "id"],
                    sqlite_where=PENDING, postgresql_where=PENDING)
    op.create_index("ix_channel_deliveries_offer_lease", "channel_deliveries",
                    ["item_id", "channel", "lease_until"])
    op.create_index("ix_channel_deliveries_status_id", "channel_deliveries", ["status", "id"])


def downgrade() -> None:
    op.drop_table("channel_deliveries")
