"""drop ix_message_status_poll: ix_message_poll_due (0009) serves the poll tick

Every loaded row paid for an entry in an index no query used any more: the poll tick reads
`ix_message_poll_due` (rows at the gateway, in `next_poll_at` order), and look-ups of unknown
outcomes read `ix_message_status_attempt`.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_message_status_poll", table_name="message")


def downgrade() -> None:
    op.create_index("ix_message_status_poll", "message", ["status", "next_poll_at"])
