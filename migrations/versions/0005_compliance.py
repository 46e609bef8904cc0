"""opt-out provenance, purpose and consent, retention

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

QUEUED_ONLY = sa.text("status = 'queued'")
WINDOW_WAIT = sa.text("status = 'queued' AND send_after IS NOT NULL")


def _rename_old_suppression() -> None:
    op.rename_table("suppression", "suppression_old")
    if op.get_bind().dialect.name == "postgresql":
        # PostgreSQL names the key's index after the table; the new table wants that name.
        op.execute(
            "ALTER TABLE suppression_old RENAME CONSTRAINT suppression_pkey TO suppression_old_pkey"
        )


def upgrade() -> None:
    # The opt-out list gets an id (an erased number is kept only as a keyed hash, so the
    # number can no longer be the key), and where each opt-out came from.
    _rename_old_suppression()
    op.create_table(
        "suppression",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("mobile", sa.String(length=20), nullable=True),
        sa.Column("digest", sa.String(length=64), nullable=True),
        sa.Column("source", sa.String(length=200), server_default="cli", nullable=False),
        sa.Column("reason", sa.String(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("mobile", name="uq_suppression_mobile"),
        sa.UniqueConstraint("digest", name="uq_suppression_digest"),
    )
    op.execute(
        "INSERT INTO suppression (mobile, source, created_at)"
        " SELECT mobile, 'cli', created_at FROM suppression_old ORDER BY created_at, mobile"
    )
    op.drop_table("suppression_old")

    with op.batch_alter_table("campaign", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("purpose", sa.String(length=16), server_default="service", nullable=False)
        )
        batch_op.add_column(sa.Column("consent_column", sa.String(length=200), nullable=True))
        batch_op.add_column(
            sa.Column("personal_data_removed_at", sa.DateTime(timezone=True), nullable=True)
        )
    with op.batch_alter_table("schedule", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("purpose", sa.String(length=16), server_default="service", nullable=False)
        )
        batch_op.add_column(sa.Column("consent_column", sa.String(length=200), nullable=True))
    with op.batch_alter_table("message", schema=None) as batch_op:
        batch_op.create_index(
            "ix_message_queued_mobile",
            ["mobile"],
            unique=False,
            postgresql_where=QUEUED_ONLY,
            sqlite_where=QUEUED_ONLY,
        )
        batch_op.create_index(
            "ix_message_window_wait",
            ["campaign_id"],
            unique=False,
            postgresql_where=WINDOW_WAIT,
            sqlite_where=WINDOW_WAIT,
        )


def downgrade() -> None:
    with op.batch_alter_table("message", schema=None) as batch_op:
        batch_op.drop_index("ix_message_window_wait")
        batch_op.drop_index("ix_message_queued_mobile")
    with op.batch_alter_table("schedule", schema=None) as batch_op:
        batch_op.drop_column("consent_column")
        batch_op.drop_column("purpose")
    with op.batch_alter_table("campaign", schema=None) as batch_op:
        batch_op.drop_column("personal_data_removed_at")
        batch_op.drop_column("consent_column")
        batch_op.drop_column("purpose")
    # Hashed opt-outs cannot go back to a list keyed by the number: they are dropped.
    op.rename_table("suppression", "suppression_new")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "ALTER TABLE suppression_new RENAME CONSTRAINT suppression_pkey TO suppression_new_pkey"
        )
    op.create_table(
        "suppression",
        sa.Column("mobile", sa.String(length=20), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("mobile"),
    )
    op.execute(
        "INSERT INTO suppression (mobile, created_at)"
        " SELECT mobile, created_at FROM suppression_new WHERE mobile IS NOT NULL"
    )
    op.drop_table("suppression_new")
