"""lanes, per-row send times and deadlines, dedupe keys, cost caps

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("campaign") as batch:
        batch.add_column(
            sa.Column("priority", sa.String(length=8), server_default="normal", nullable=False)
        )
        batch.add_column(sa.Column("max_cost", sa.Numeric(12, 5), nullable=True))
    with op.batch_alter_table("message") as batch:
        batch.add_column(sa.Column("deadline", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("dedupe_key", sa.String(length=200), nullable=True))
    op.create_index(
        "ix_message_dedupe_key",
        "message",
        ["dedupe_key"],
        postgresql_where=sa.text("dedupe_key IS NOT NULL"),
        sqlite_where=sa.text("dedupe_key IS NOT NULL"),
    )
    with op.batch_alter_table("schedule") as batch:
        batch.add_column(
            sa.Column("priority", sa.String(length=8), server_default="high", nullable=False)
        )
        batch.add_column(sa.Column("options", sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("schedule") as batch:
        batch.drop_column("options")
        batch.drop_column("priority")
    op.drop_index("ix_message_dedupe_key", table_name="message")
    with op.batch_alter_table("message") as batch:
        batch.drop_column("dedupe_key")
        batch.drop_column("deadline")
    with op.batch_alter_table("campaign") as batch:
        batch.drop_column("max_cost")
        batch.drop_column("priority")
