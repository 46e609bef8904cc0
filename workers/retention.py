"""Retention: numbers and texts of final messages are blanked once they are older than
`SMS_RETENTION`; counts, statuses, costs and times stay, so old reports still add up.

The nightly task walks one campaign at a time in id ranges of `retention_chunk` rows, each
range its own short transaction that touches only final rows, so sending never waits on it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from config import Settings
from workers.celery_app import app
from workers.ledger import FINAL, CampaignState, campaign_table, message_table, utcnow
from workers.runtime import get_runtime

log = logging.getLogger("sms.retention")
TASK = "sms.retention_sweep"
FINISHED = (CampaignState.COMPLETED, CampaignState.CANCELLED)
FINAL_VALUES = sorted(s.value for s in FINAL)

# Columns that hold a person's data: the number as given and normalised, the rendered text,
# the raw delivery report, and (when the ledger keeps them) the list's own cells.
PERSONAL_COLUMNS = ("raw_mobile", "mobile", "text", "dlr_raw", "fields", "row_data", "variables")


def personal_columns() -> dict[str, Any]:
    """Each personal column of `message` that exists, with its blank value."""
    blanks: dict[str, Any] = {}
    for name in PERSONAL_COLUMNS:
        if name in message_table.c:
            column = message_table.c[name]
            blanks[name] = None if column.nullable else ""
    return blanks


def holds_personal_data() -> sa.ColumnElement[bool]:
    """True for a row with anything still to blank (so a second sweep rewrites nothing)."""
    checks = []
    for name, blank in personal_columns().items():
        column = message_table.c[name]
        checks.append(column.is_not(None) if blank is None else column != blank)
    return sa.or_(*checks)


@dataclass
class RetentionReport:
    """What one sweep did."""

    cutoff: datetime
    rows: int = 0
    campaigns: list[int] = field(default_factory=list)  # marked "personal data removed"
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "cutoff": self.cutoff.isoformat(),
            "rows": self.rows,
            "campaigns": len(self.campaigns),
            "seconds": round(self.seconds, 3),
        }


def _candidates(conn: sa.Connection, cutoff: datetime) -> list[int]:
    # A campaign that finished before the cutoff, or one still open that started before it
    # (paused for months): its old final messages are due too.
    stmt = (
        sa.select(campaign_table.c.id)
        .where(
            campaign_table.c.personal_data_removed_at.is_(None),
            campaign_table.c.state != CampaignState.LOADING,
        )
        .where(
            sa.or_(
                sa.and_(
                    campaign_table.c.state.in_(FINISHED), campaign_table.c.finished_at < cutoff
                ),
                sa.and_(
                    campaign_table.c.state.not_in(FINISHED), campaign_table.c.created_at < cutoff
                ),
            )
        )
        .order_by(campaign_table.c.id)
    )
    return list(conn.execute(stmt).scalars())


def blank_campaign(
    engine: sa.Engine, campaign_id: int, cutoff: datetime, chunk: int, duty: float = 1.0
) -> int:
    """Blank the personal columns of a campaign's final messages older than `cutoff`.

    `duty` is the share of time spent working: 0.5 rests as long as each chunk took.
    """
    with engine.connect() as conn:
        lo, hi = conn.execute(
            sa.select(sa.func.min(message_table.c.id), sa.func.max(message_table.c.id)).where(
                message_table.c.campaign_id == campaign_id
            )
        ).one()
    if lo is None:
        return 0
    stmt = (
        sa.update(message_table)
        .where(message_table.c.id >= sa.bindparam("lo"), message_table.c.id < sa.bindparam("hi"))
        .where(message_table.c.campaign_id == campaign_id, message_table.c.status.in_(FINAL_VALUES))
        .where(sa.func.coalesce(message_table.c.final_at, message_table.c.created_at) < cutoff)
        .where(holds_personal_data())
        .values(**personal_columns())
    )
    rows = 0
    for start in range(int(lo), int(hi) + 1, chunk):
        began = time.monotonic()
        # One short transaction per range: row locks on old final rows only, held briefly.
        with engine.begin() as conn:
            rows += int(conn.execute(stmt, {"lo": start, "hi": start + chunk}).rowcount or 0)
        if duty < 1.0:
            # Leave the database (and the machine) to sending for the rest of each cycle.
            time.sleep((time.monotonic() - began) * (1.0 - duty) / duty)
    return rows


def _mark_if_clean(engine: sa.Engine, campaign_id: int, now: datetime) -> bool:
    """A finished campaign with no personal data left says so from now on."""
    left = (
        sa.select(message_table.c.id)
        .where(message_table.c.campaign_id == campaign_id, holds_personal_data())
        .exists()
    )
    with engine.begin() as conn:
        result = conn.execute(
            sa.update(campaign_table)
            .where(campaign_table.c.id == campaign_id, campaign_table.c.state.in_(FINISHED), ~left)
            .where(campaign_table.c.personal_data_removed_at.is_(None))
            .values(personal_data_removed_at=now)
        )
    return bool(result.rowcount)


def sweep_retention(
    engine: sa.Engine, settings: Settings, *, now: datetime | None = None
) -> RetentionReport:
    """Blank what is older than the retention period; safe to run twice or concurrently."""
    started = time.monotonic()
    now = now or utcnow()
    report = RetentionReport(cutoff=now - timedelta(seconds=settings.retention))
    with engine.connect() as conn:
        campaigns = _candidates(conn, report.cutoff)
    for campaign_id in campaigns:
        report.rows += blank_campaign(
            engine, campaign_id, report.cutoff, settings.retention_chunk, settings.retention_duty
        )
        if _mark_if_clean(engine, campaign_id, now):
            report.campaigns.append(campaign_id)
    report.seconds = time.monotonic() - started
    return report


@app.task(name=TASK)
def retention_sweep() -> dict[str, Any]:
    """Nightly beat task: blank numbers and texts of final messages older than SMS_RETENTION."""
    rt = get_runtime()
    report = sweep_retention(rt.engine, rt.settings)
    if report.rows:
        log.info(
            "retention: %d rows blanked, %d campaigns cleared, %.1f s",
            report.rows,
            len(report.campaigns),
            report.seconds,
        )
    return report.as_dict()
