"""initial ledger

Revision ID: 0001
Revises:
Create Date: 2026-11-26 19:45:36.166143
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "schedule",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("cron", sa.String(length=100), nullable=False),
        sa.Column("tz", sa.String(length=64), nullable=False),
        sa.Column("list_path", sa.String(), nullable=False),
        sa.Column("sender", sa.String(length=15), nullable=False),
        sa.Column("template", sa.String(), nullable=False),
        sa.Column("region", sa.String(length=2), nullable=True),
        sa.Column("window", sa.String(length=11), nullable=True),
        sa.Column("days", sa.String(length=40), nullable=True),
        sa.Column("validity", sa.Float(), nullable=True),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("last_slot", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_campaign_id", sa.Integer(), nullable=True),
        sa.Column("missed", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "suppression",
        sa.Column("mobile", sa.String(length=20), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("mobile"),
    )
    op.create_table(
        "campaign",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("sender", sa.String(length=15), nullable=False),
        sa.Column("template", sa.String(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(), nullable=True),
        sa.Column("source", sa.String(), nullable=True),
        sa.Column("region", sa.String(length=2), nullable=True),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("send_after", sa.DateTime(timezone=True), nullable=True),
        sa.Column("window", sa.String(length=11), nullable=True),
        sa.Column("days", sa.String(length=40), nullable=True),
        sa.Column("tz", sa.String(length=64), nullable=True),
        sa.Column("validity", sa.Float(), nullable=True),
        sa.Column("schedule_id", sa.Integer(), nullable=True),
        sa.Column("slot", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["schedule_id"],
            ["schedule.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("schedule_id", "slot", name="uq_campaign_slot"),
    )
    with op.batch_alter_table("campaign", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_campaign_schedule_id"), ["schedule_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_campaign_state"), ["state"], unique=False)

    op.create_table(
        "message",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("batch", sa.Integer(), nullable=False),
        sa.Column("line", sa.Integer(), nullable=False),
        sa.Column("ref", sa.String(length=32), nullable=False),
        sa.Column("raw_mobile", sa.String(length=64), nullable=False),
        sa.Column("mobile", sa.String(length=20), nullable=True),
        sa.Column("text", sa.String(), nullable=True),
        sa.Column("parts", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(), nullable=True),
        sa.Column("cost", sa.Numeric(precision=12, scale=5), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("accepted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("final_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_poll_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("send_after", sa.DateTime(timezone=True), nullable=True),
        sa.Column("poll_count", sa.Integer(), nullable=False),
        sa.Column("dlr_status", sa.String(length=32), nullable=True),
        sa.Column("dlr_raw", sa.String(), nullable=True),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaign.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("ref"),
    )
    with op.batch_alter_table("message", schema=None) as batch_op:
        batch_op.create_index(
            "ix_message_campaign_status_batch", ["campaign_id", "status", "batch"], unique=False
        )
        batch_op.create_index(
            "ix_message_status_attempt", ["status", "next_attempt_at"], unique=False
        )
        batch_op.create_index("ix_message_status_poll", ["status", "next_poll_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("message", schema=None) as batch_op:
        batch_op.drop_index("ix_message_status_poll")
        batch_op.drop_index("ix_message_status_attempt")
        batch_op.drop_index("ix_message_campaign_status_batch")

    op.drop_table("message")
    with op.batch_alter_table("campaign", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_campaign_state"))
        batch_op.drop_index(batch_op.f("ix_campaign_schedule_id"))

    op.drop_table("campaign")
    op.drop_table("suppression")
    op.drop_table("schedule")
