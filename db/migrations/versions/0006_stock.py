"""Stock on hand reported by the sales channels: `channel_stock`, the latest report per item
x channel, and `item_stock`, per item the sum of its channels' reports, the stock its prices
were last suggested with and the durable mark of a repricing it asks for (indexed where set).

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision: str | None = "0005"
branch_labels = None
depends_on = None

UTC_TIMESTAMP = sa.DateTime(timezone=True)  # `db.tables.UTCDateTime` stores this type
REQUESTED = sa.text("reprice_requested_at IS NOT NULL")


def upgrade() -> None:
    op.create_table(
        "channel_stock",
        sa.Column("item_id", sa.String(length=200), nullable=False),
        sa.Column("channel", sa.String(length=200), nullable=False),
        sa.Column("stock_on_hand", sa.Integer(), nullable=False),
        sa.Column("reported_at", UTC_TIMESTAMP, nullable=False),
        sa.Column("event_id", sa.String(length=200), nullable=False),
        sa.Column("recorded_at", UTC_TIMESTAMP, nullable=False),
        sa.CheckConstraint("stock_on_hand >= 0", name="ck_channel_stock_stock_on_hand"),
        sa.PrimaryKeyConstraint("item_id", "channel"),
    )
    op.create_table(
        "item_stock",
        sa.Column("item_id", sa.String(length=200), nullable=False),
        sa.Column("stock_on_hand", sa.Integer(), nullable=False),
        sa.Column("updated_at", UTC_TIMESTAMP, nullable=False),
        sa.Column("priced_stock", sa.Integer(), nullable=True),
        sa.Column("priced_at", UTC_TIMESTAMP, nullable=True),
        sa.Column("reprice_requested_at", UTC_TIMESTAMP, nullable=True),
        sa.CheckConstraint("stock_on_hand >= 0", name="ck_item_stock_stock_on_hand"),
        sa.PrimaryKeyConstraint("item_id"),
    )
    op.create_index("ix_item_stock_reprice_requested", "item_stock", ["reprice_requested_at"],
                    sqlite_where=REQUESTED, postgresql_where=REQUESTED)


def downgrade() -> None:
    op.drop_table("item_stock")
    op.drop_table("channel_stock")
