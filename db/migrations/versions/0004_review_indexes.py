"""Indexes for the review page's queries at 10,000+ suggestions: filters by status with
category or batch, and the sort by expected profit change (an expression index, ties broken
by id), so a page is read from an index instead of sorting every matching row.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels = None
depends_on = None

GAIN = sa.text("(expected_profit_suggested - expected_profit_current)")


def upgrade() -> None:
    op.create_index("ix_price_suggestions_status_category", "price_suggestions",
                    ["status", "category"])
    op.create_index("ix_price_suggestions_status_batch", "price_suggestions",
                    ["status", "batch_id"])
    op.create_index("ix_price_suggestions_status_gain", "price_suggestions",
                    [sa.text("status"), GAIN, sa.text("id")])


def downgrade() -> None:
    for name in ("ix_price_suggestions_status_gain", "ix_price_suggestions_status_batch",
                 "ix_price_suggestions_status_category"):
        op.drop_index(name, table_name="price_suggestions")
