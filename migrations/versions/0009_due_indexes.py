"""partial indexes for the ticks: report look-ups due in time order, deadlines of waiting rows

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

# Only rows at the gateway: the poll tick reads the first due ones in `next_poll_at` order
# and stops, instead of sorting every due row of both statuses.
AT_GATEWAY = sa.text("status IN ('accepted', 'sent')")
# Only waiting rows that have a deadline: the sweep tick no longer visits every queued row.
QUEUED_DEADLINE = sa.text("status = 'queued' AND deadline IS NOT NULL")


def upgrade() -> None:
    op.create_index(
        "ix_message_poll_due",
        "message",
        ["next_poll_at"],
        postgresql_where=AT_GATEWAY,
        sqlite_where=AT_GATEWAY,
    )
    op.create_index(
        "ix_message_queued_deadline",
        "message",
        ["deadline"],
        postgresql_where=QUEUED_DEADLINE,
        sqlite_where=QUEUED_DEADLINE,
    )


def downgrade() -> None:
    op.drop_index("ix_message_queued_deadline", table_name="message")
    op.drop_index("ix_message_poll_due", table_name="message")
