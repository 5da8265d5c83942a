"""The uncertainty of each price suggestion (issue #14): the interval of the expected profit
gain, the demand model's price elasticity with its interval, and the share of that estimate
from the offer's own sales. Nullable: rows of older batches, and of models without
uncertainty, keep them null.

SQLite cannot drop a column in place on every version, so both directions go through
`batch_alter_table` (adding is an ALTER TABLE there too; dropping copies the table).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels = None
depends_on = None

COLUMNS = ("expected_profit_gain_low", "expected_profit_gain_high", "elasticity",
           "elasticity_low", "elasticity_high", "evidence_share")


def upgrade() -> None:
    with op.batch_alter_table("price_suggestions") as batch:
        for name in COLUMNS:
            batch.add_column(sa.Column(name, sa.Double(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("price_suggestions") as batch:
        for name in reversed(COLUMNS):
            batch.drop_column(name)
