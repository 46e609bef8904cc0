"""The SQL ledger: campaigns, messages, the opt-out list and recurring schedules.

The ledger is the truth; the broker only carries notices that point into it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on every backend (SQLite keeps naive UTC text)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the ledger; use UTC-aware times")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class CampaignState(StrEnum):
    LOADING = "loading"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class Status(StrEnum):
    """A message's status. Order here is the order reports list them in."""

    QUEUED = "queued"
    SUBMITTING = "submitting"
    ACCEPTED = "accepted"
    SENT = "sent"
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    REJECTED = "rejected"
    FAILED = "failed"
    EXPIRED = "expired"
    UNKNOWN = "unknown"
    CANCELLED = "cancelled"
    INVALID = "invalid"
    DUPLICATE = "duplicate"
    SUPPRESSED = "suppressed"


WAITING = frozenset({Status.QUEUED, Status.SUBMITTING})
AT_GATEWAY = frozenset({Status.ACCEPTED, Status.SENT})
FINAL = frozenset(Status) - WAITING - AT_GATEWAY
NOT_FINAL = WAITING | AT_GATEWAY


def _dt(**kw: Any) -> Any:
    return Field(default=None, sa_type=UTCDateTime, **kw)


class Campaign(SQLModel, table=True):
    __tablename__ = "campaign"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200)
    sender: str = Field(max_length=15)
    template: str
    state: str = Field(default=CampaignState.LOADING, max_length=16, index=True)
    reason: str | None = None
    source: str | None = None
    region: str | None = Field(default=None, max_length=2)
    total: int = 0
    send_after: datetime | None = _dt()
    window: str | None = Field(default=None, max_length=11)  # "09:00-20:00"
    days: str | None = Field(default=None, max_length=40)  # "MON-FRI"
    tz: str | None = Field(default=None, max_length=64)
    validity: float | None = None  # seconds; None = the setting
    schedule_id: int | None = Field(default=None, foreign_key="schedule.id", index=True)
    slot: datetime | None = _dt()
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    started_at: datetime | None = _dt()
    finished_at: datetime | None = _dt()

    __table_args__ = (sa.UniqueConstraint("schedule_id", "slot", name="uq_campaign_slot"),)


class Message(SQLModel, table=True):
    __tablename__ = "message"

    id: int | None = Field(
        default=None, primary_key=True, sa_type=sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    )
    campaign_id: int = Field(foreign_key="campaign.id", ondelete="CASCADE")
    batch: int = 0
    line: int = 0
    ref: str = Field(max_length=32, unique=True)
    raw_mobile: str = Field(default="", max_length=64)
    mobile: str | None = Field(default=None, max_length=20)
    text: str | None = None  # None: the campaign's template, sent as it is
    parts: int = 0
    status: str = Field(default=Status.QUEUED, max_length=16)
    attempts: int = 0
    last_error: str | None = None
    cost: Decimal | None = Field(default=None, max_digits=12, decimal_places=5)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    submitted_at: datetime | None = _dt()
    accepted_at: datetime | None = _dt()
    final_at: datetime | None = _dt()
    next_attempt_at: datetime | None = _dt()
    next_poll_at: datetime | None = _dt()
    send_after: datetime | None = _dt()
    poll_count: int = 0
    dlr_status: str | None = Field(default=None, max_length=32)
    dlr_raw: str | None = None

    __table_args__ = (
        # Status before batch: the first due batches are a seek, not a scan of sent rows.
        sa.Index("ix_message_campaign_status_batch", "campaign_id", "status", "batch"),
        sa.Index("ix_message_status_poll", "status", "next_poll_at"),
        sa.Index("ix_message_status_attempt", "status", "next_attempt_at"),
    )


class Suppression(SQLModel, table=True):
    __tablename__ = "suppression"

    mobile: str = Field(primary_key=True, max_length=20)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Schedule(SQLModel, table=True):
    __tablename__ = "schedule"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100, unique=True)
    cron: str = Field(max_length=100)
    tz: str = Field(max_length=64)
    list_path: str
    sender: str = Field(max_length=15)
    template: str
    region: str | None = Field(default=None, max_length=2)
    window: str | None = Field(default=None, max_length=11)
    days: str | None = Field(default=None, max_length=40)
    validity: float | None = None
    paused: bool = False
    last_slot: datetime | None = _dt()  # the newest slot decided: fired, failed or missed
    last_campaign_id: int | None = None
    missed: int = 0
    last_error: str | None = None
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


campaign_table: sa.Table = Campaign.__table__  # type: ignore[attr-defined]
message_table: sa.Table = Message.__table__  # type: ignore[attr-defined]
suppression_table: sa.Table = Suppression.__table__  # type: ignore[attr-defined]
schedule_table: sa.Table = Schedule.__table__  # type: ignore[attr-defined]
