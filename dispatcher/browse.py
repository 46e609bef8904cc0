"""Reading the ledger a page at a time, for the API and the dashboard.

Pages are keyset pages (`id < cursor` newest first for campaigns, `id > cursor` in list
order for messages), so page 1,000 costs what page 1 does.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Generic, TypeVar

import sqlalchemy as sa

from dispatcher.reports import CampaignStatus, statuses
from workers import ledger_reads
from workers.ledger import WAITING, CampaignState, Status, campaign_table, message_table, utcnow

PROBLEM = (
    Status.INVALID,
    Status.DUPLICATE,
    Status.SUPPRESSED,
    Status.REJECTED,
    Status.FAILED,
    Status.UNDELIVERED,
    Status.EXPIRED,
    Status.UNKNOWN,
)
RATE_WINDOW = 60.0  # seconds of accepted messages that make "the send rate now"


class CursorError(ValueError):
    """A page cursor that is not one this service handed out."""


Item = TypeVar("Item")


@dataclass
class Page(Generic[Item]):
    """One page of items and the cursor of the next one (None on the last page)."""

    items: list[Item]
    next_cursor: str | None

    def as_dict(self) -> dict[str, Any]:
        items = [i.as_dict() if isinstance(i, CampaignStatus) else i for i in self.items]
        return {"items": items, "next_cursor": self.next_cursor}


def _cursor(value: str | None) -> int | None:
    if value in (None, ""):
        return None
    try:
        number = int(value)
    except ValueError:
        raise CursorError(f"cursor {value!r} is not one this service gave out") from None
    if number < 0:
        raise CursorError(f"cursor {value!r} is not one this service gave out")
    return number


def campaign_page(
    engine: sa.Engine, *, limit: int, cursor: str | None = None
) -> Page[CampaignStatus]:
    """Status objects of campaigns, newest first, `limit` at a time."""
    before = _cursor(cursor)
    stmt = sa.select(campaign_table.c.id).order_by(campaign_table.c.id.desc()).limit(limit + 1)
    if before is not None:
        stmt = stmt.where(campaign_table.c.id < before)
    with engine.connect() as conn:
        ids = list(conn.execute(stmt).scalars())
    more = len(ids) > limit
    ids = ids[:limit]
    items = statuses(engine, ids)
    return Page(items, str(ids[-1]) if more else None)


def _message(r: Any) -> dict[str, Any]:
    return {
        "id": r.id,
        "line": r.line,
        "mobile_as_given": r.raw_mobile,
        "mobile": r.mobile,
        "ref": r.ref,
        "status": r.status,
        "error": r.last_error,
        "attempts": r.attempts,
        "cost": None if r.cost is None else str(Decimal(r.cost).normalize()),
        "submitted_at": _iso(r.submitted_at),
        "accepted_at": _iso(r.accepted_at),
        "final_at": _iso(r.final_at),
    }


_MESSAGE_COLUMNS = tuple(
    message_table.c[name]
    for name in (
        "id", "line", "raw_mobile", "mobile", "ref", "status", "last_error",
        "attempts", "cost", "submitted_at", "accepted_at", "final_at",
    )
)  # fmt: skip


def message_page(
    engine: sa.Engine,
    campaign_id: int,
    *,
    limit: int,
    statuses: list[str] | None = None,
    cursor: str | None = None,
) -> Page[dict[str, Any]]:
    """A campaign's messages in list order, optionally only those in `statuses`."""
    ledger_reads.get_campaign(engine, campaign_id)
    for status in statuses or []:
        if status not in Status.__members__.values():
            known = ", ".join(s.value for s in Status)
            raise ValueError(f"status: {status!r} is not a message status ({known})")
    after = _cursor(cursor)
    stmt = (
        sa.select(*_MESSAGE_COLUMNS)
        .where(message_table.c.campaign_id == campaign_id)
        .order_by(message_table.c.id)
        .limit(limit + 1)
    )
    if statuses:
        stmt = stmt.where(message_table.c.status.in_(statuses))
    if after is not None:
        stmt = stmt.where(message_table.c.id > after)
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    more = len(rows) > limit
    rows = rows[:limit]
    return Page([_message(r) for r in rows], str(rows[-1].id) if more else None)


def problem_rows(engine: sa.Engine, campaign_id: int, limit: int = 10) -> list[dict[str, Any]]:
    """The first rows that were not (or could not be) delivered, in list order."""
    return message_page(engine, campaign_id, limit=limit, statuses=[s.value for s in PROBLEM]).items


def activity(engine: sa.Engine, status: CampaignStatus) -> dict[str, Any]:
    """The send rate now (accepted per second over the last minute) and an ETA for the rest."""
    rate = 0.0
    if status.state == CampaignState.RUNNING:
        since = utcnow() - timedelta(seconds=RATE_WINDOW)
        stmt = sa.select(sa.func.count()).where(
            message_table.c.campaign_id == status.campaign, message_table.c.accepted_at >= since
        )
        with engine.connect() as conn:
            rate = int(conn.execute(stmt).scalar_one()) / RATE_WINDOW
    waiting = sum(n for s, n in status.counts.items() if s in WAITING)
    eta = round(waiting / rate) if rate > 0 and waiting else None
    return {"rate": round(rate, 1), "eta_seconds": eta, "waiting": waiting}


def _minute(engine: sa.Engine, column: Any) -> Any:
    if engine.dialect.name == "sqlite":
        return sa.func.strftime("%Y-%m-%dT%H:%M", column)
    utc = sa.func.timezone("UTC", column)  # the session's zone must not move the minutes
    return sa.func.to_char(sa.func.date_trunc("minute", utc), 'YYYY-MM-DD"T"HH24:MI')


def per_minute(engine: sa.Engine, campaign_id: int, minutes: int = 60) -> list[dict[str, Any]]:
    """Messages accepted by the gateway (sent) and delivered, per minute, the last `minutes`
    minutes of the campaign's activity, oldest first; minutes without any are zeros."""
    campaign = ledger_reads.get_campaign(engine, campaign_id)
    last = (campaign.finished_at or utcnow()).replace(second=0, microsecond=0)
    first = (campaign.started_at or campaign.created_at).replace(second=0, microsecond=0)
    start = max(first, last - timedelta(minutes=minutes - 1))
    # At least ten minutes across, so a one-minute campaign is not one wide bar.
    end = max(last, start + timedelta(minutes=9))
    sent_minute = _minute(engine, message_table.c.accepted_at)
    done_minute = _minute(engine, message_table.c.final_at)
    sent = sa.select(sent_minute, sa.func.count()).where(
        message_table.c.campaign_id == campaign_id, message_table.c.accepted_at >= start
    )
    delivered = sa.select(done_minute, sa.func.count()).where(
        message_table.c.campaign_id == campaign_id,
        message_table.c.status == Status.DELIVERED,
        message_table.c.final_at >= start,
    )
    with engine.connect() as conn:
        sent_by: dict[str, int] = dict(conn.execute(sent.group_by(sent_minute)).all())
        delivered_by: dict[str, int] = dict(conn.execute(delivered.group_by(done_minute)).all())
    out = []
    at = start
    while at <= end:
        key = at.strftime("%Y-%m-%dT%H:%M")
        out.append(
            {"minute": key, "sent": sent_by.get(key, 0), "delivered": delivered_by.get(key, 0)}
        )
        at += timedelta(minutes=1)
    return out


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def suppression_page(
    engine: sa.Engine, *, limit: int, cursor: str | None = None
) -> Page[dict[str, Any]]:
    """Opted-out numbers in order, `limit` at a time (the cursor is the last number shown)."""
    from workers.ledger import suppression_table as S

    stmt = sa.select(S.c.mobile, S.c.created_at).order_by(S.c.mobile).limit(limit + 1)
    if cursor:
        stmt = stmt.where(S.c.mobile > cursor)
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    more = len(rows) > limit
    rows = rows[:limit]
    items = [{"mobile": r.mobile, "created_at": _iso(r.created_at)} for r in rows]
    return Page(items, rows[-1].mobile if more else None)
