"""The SQL ledger: campaigns, messages, the opt-out list and recurring schedules.

The ledger is the truth; the broker only carries notices that point into it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, TypeVar

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


E = TypeVar("E", bound=StrEnum)


class EnumText(TypeDecorator[E]):
    """A StrEnum column kept as plain text: no database enum type to migrate when one grows.

    Rows come back as the enum, so code compares members, and a value the enum does not know
    fails when written instead of landing in the ledger.
    """

    impl = sa.String
    cache_ok = True

    def __init__(self, enum: type[E], length: int) -> None:
        super().__init__(length)
        self.enum = enum

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> str | None:
        return None if value is None else self.enum(value).value

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> E | None:
        return None if value is None else self.enum(value)


class Purpose(StrEnum):
    """Why a campaign may be sent: marketing needs each row's consent, service does not."""

    MARKETING = "marketing"
    SERVICE = "service"


class OutboxState(StrEnum):
    """A webhook event's delivery: pending until the receiver took it, or it was given up."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"
    SKIPPED = "skipped"  # no webhook URL was configured when its turn came


class Priority(StrEnum):
    """A campaign's lane: due `high` messages go before `normal` ones, `normal` before `low`."""

    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


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
    NO_CONSENT = "no_consent"  # a marketing campaign's row without a yes in its consent column
    SKIPPED = "skipped"  # its own send time (from the row) had passed: never sent late


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
    state: CampaignState = Field(
        default=CampaignState.LOADING, sa_type=EnumText(CampaignState, 16), index=True
    )
    reason: str | None = None
    source: str | None = None
    region: str | None = Field(default=None, max_length=2)
    total: int = 0
    send_after: datetime | None = _dt()
    window: str | None = Field(default=None, max_length=11)  # "09:00-20:00"
    days: str | None = Field(default=None, max_length=40)  # "MON-FRI"
    tz: str | None = Field(default=None, max_length=64)
    validity: float | None = None  # seconds; None = the setting
    webhook_url: str | None = None  # None: the SMS_WEBHOOK_URL setting (issue 12)
    schedule_id: int | None = Field(default=None, foreign_key="schedule.id", index=True)
    slot: datetime | None = _dt()
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    started_at: datetime | None = _dt()
    finished_at: datetime | None = _dt()
    # Compliance: why we may send (marketing needs consent), and when retention or erasure
    # blanked the campaign's numbers and texts.
    purpose: Purpose = Field(
        default=Purpose.SERVICE,
        sa_type=EnumText(Purpose, 16),
        sa_column_kwargs={"server_default": "service"},
    )
    consent_column: str | None = Field(default=None, max_length=200)
    personal_data_removed_at: datetime | None = _dt()
    # Lanes and budgets: the campaign's lane, and the most it may cost (None: no limit).
    priority: Priority = Field(
        default=Priority.NORMAL,
        sa_type=EnumText(Priority, 8),
        sa_column_kwargs={"server_default": "normal"},
    )
    max_cost: Decimal | None = Field(default=None, max_digits=12, decimal_places=5)

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
    status: Status = Field(default=Status.QUEUED, sa_type=EnumText(Status, 16))
    attempts: int = 0
    # The token of the batch run that holds this message while it is `submitting`; a
    # revoked claim keeps its token behind a `~`, so a late writer can be told apart.
    claim: str | None = Field(default=None, max_length=40)
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
    # A message is never sent after this (a reminder after its appointment is worse than none).
    deadline: datetime | None = _dt()
    # A schedule's dedupe key (e.g. a booking id): one reminder per key across firings.
    dedupe_key: str | None = Field(default=None, max_length=200)

    __table_args__ = (
        # Only rows that have a key (a schedule's dedupe column): a plain load adds nothing.
        sa.Index(
            "ix_message_dedupe_key",
            "dedupe_key",
            postgresql_where=sa.text("dedupe_key IS NOT NULL"),
            sqlite_where=sa.text("dedupe_key IS NOT NULL"),
        ),
        # Status before batch: the first due batches are a seek, not a scan of sent rows.
        sa.Index("ix_message_campaign_status_batch", "campaign_id", "status", "batch"),
        sa.Index("ix_message_status_attempt", "status", "next_attempt_at"),
        # Cost by campaign at scrape time from the index alone (metrics, issue 12).
        sa.Index(
            "ix_message_campaign_cost",
            "campaign_id",
            "cost",
            postgresql_where=sa.text("cost IS NOT NULL"),
            sqlite_where=sa.text("cost IS NOT NULL"),
        ),
        # A new opt-out finds that number's waiting messages at once; only queued rows are
        # in it, so it stays small however big the ledger grows.
        sa.Index(
            "ix_message_queued_mobile",
            "mobile",
            postgresql_where=sa.text("status = 'queued'"),
            sqlite_where=sa.text("status = 'queued'"),
        ),
        # `status` counts messages held for their send window; only those rows are in it.
        sa.Index(
            "ix_message_window_wait",
            "campaign_id",
            postgresql_where=sa.text("status = 'queued' AND send_after IS NOT NULL"),
            sqlite_where=sa.text("status = 'queued' AND send_after IS NOT NULL"),
        ),
        # The poll tick takes the first due look-ups in time order and stops (no sort of
        # every due row), however many messages wait at the gateway.
        sa.Index(
            "ix_message_poll_due",
            "next_poll_at",
            postgresql_where=sa.text("status IN ('accepted', 'sent')"),
            sqlite_where=sa.text("status IN ('accepted', 'sent')"),
        ),
        # The sweep tick finds waiting messages past their deadline without visiting every
        # queued row of a big running campaign (most have no deadline).
        sa.Index(
            "ix_message_queued_deadline",
            "deadline",
            postgresql_where=sa.text("status = 'queued' AND deadline IS NOT NULL"),
            sqlite_where=sa.text("status = 'queued' AND deadline IS NOT NULL"),
        ),
    )


class CampaignTally(SQLModel, table=True):
    """Per-status message counts and cost of each campaign, kept by triggers on `message`.

    Rows are deltas, appended and never updated, so no writer ever waits on another for them;
    a tick folds each campaign's deltas into one row per status. `status` of a campaign of a
    million messages then reads a handful of rows instead of a million.
    """

    __tablename__ = "campaign_tally"

    id: int | None = Field(
        default=None, primary_key=True, sa_type=sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    )
    campaign_id: int = Field(index=True)  # no foreign key: deltas of a deleted campaign fold away
    status: Status = Field(sa_type=EnumText(Status, 16))
    n: int = 0
    cost: Decimal = Field(default=Decimal(0), max_digits=16, decimal_places=5)


class Suppression(SQLModel, table=True):
    """One opt-out: a number in clear, or (after erasure) only its keyed hash."""

    __tablename__ = "suppression"

    id: int | None = Field(default=None, primary_key=True)
    mobile: str | None = Field(default=None, max_length=20)
    digest: str | None = Field(default=None, max_length=64)  # HMAC-SHA256 hex of the number
    source: str = Field(default="cli", max_length=200, sa_column_kwargs={"server_default": "cli"})
    reason: str | None = None
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)

    __table_args__ = (
        sa.UniqueConstraint("mobile", name="uq_suppression_mobile"),
        sa.UniqueConstraint("digest", name="uq_suppression_digest"),
    )


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
    purpose: Purpose = Field(
        default=Purpose.SERVICE,
        sa_type=EnumText(Purpose, 16),
        sa_column_kwargs={"server_default": "service"},
    )
    consent_column: str | None = Field(default=None, max_length=200)
    priority: Priority = Field(
        default=Priority.HIGH,
        sa_type=EnumText(Priority, 8),
        sa_column_kwargs={"server_default": "high"},
    )
    # Further `send` options the schedule fires with, as JSON (send-at column, offsets,
    # dedupe column, cost cap, ...): new options need no new column.
    options: str | None = None
    paused: bool = False
    last_slot: datetime | None = _dt()  # the newest slot decided: fired, failed or missed
    last_campaign_id: int | None = None
    missed: int = 0
    last_error: str | None = None
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class ApiToken(SQLModel, table=True):
    """A token for the HTTP API: the ledger keeps only a hash of its secret part."""

    __tablename__ = "api_token"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100, unique=True)
    key_id: str = Field(max_length=16, unique=True)  # the public part, to find the row
    secret_hash: str = Field(max_length=64)  # sha256 of the secret part, hex
    read_only: bool = False
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class IdempotencyKey(SQLModel, table=True):
    """The first reply to a POST carrying an `Idempotency-Key`, replayed for repeats."""

    __tablename__ = "idempotency_key"

    id: int | None = Field(default=None, primary_key=True)
    token: str = Field(max_length=100)  # keys are per token: two clients may pick the same
    key: str = Field(max_length=200)
    fingerprint: str = Field(max_length=64)  # sha256 of method, path and body
    status_code: int = 0  # 0 while the first request is still being handled
    body: str | None = None
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)

    __table_args__ = (sa.UniqueConstraint("token", "key", name="uq_idempotency_token_key"),)


class OutboxEvent(SQLModel, table=True):
    """A webhook event, written in the same transaction as the change it reports (issue 12).

    `lane` orders delivery (one campaign's or one schedule's events go in id order); `url`
    None means the SMS_WEBHOOK_URL setting at delivery time.
    """

    __tablename__ = "outbox"

    id: int | None = Field(
        default=None, primary_key=True, sa_type=sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    )
    event_id: str = Field(max_length=40, unique=True)  # the stable webhook-id
    type: str = Field(max_length=40)
    lane: str = Field(max_length=40)
    campaign_id: int | None = Field(default=None, index=True)
    url: str | None = None
    payload: str
    state: OutboxState = Field(default=OutboxState.PENDING, sa_type=EnumText(OutboxState, 16))
    attempts: int = 0
    last_error: str | None = None
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    next_attempt_at: datetime | None = _dt()
    delivered_at: datetime | None = _dt()

    __table_args__ = (
        sa.Index("ix_outbox_state_lane", "state", "lane", "id"),
        sa.Index("ix_outbox_created", "created_at"),
    )


campaign_table: sa.Table = Campaign.__table__  # type: ignore[attr-defined]
message_table: sa.Table = Message.__table__  # type: ignore[attr-defined]
campaign_tally_table: sa.Table = CampaignTally.__table__  # type: ignore[attr-defined]
suppression_table: sa.Table = Suppression.__table__  # type: ignore[attr-defined]
schedule_table: sa.Table = Schedule.__table__  # type: ignore[attr-defined]
api_token_table: sa.Table = ApiToken.__table__  # type: ignore[attr-defined]
idempotency_table: sa.Table = IdempotencyKey.__table__  # type: ignore[attr-defined]
outbox_table: sa.Table = OutboxEvent.__table__  # type: ignore[attr-defined]
