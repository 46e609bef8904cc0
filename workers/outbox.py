"""The webhook outbox: each event is a row written in the same transaction as the change it
reports, so a worker that dies after the change cannot lose the event.

Every function here takes an open connection inside the caller's transaction. Events of one
campaign (or one schedule) share a lane and are delivered in id order; `url` None means the
SMS_WEBHOOK_URL setting at delivery time. Message events are batched, at most MAX_MESSAGES each.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from workers import counters
from workers.ledger import (
    FINAL,
    OutboxState,
    Status,
    campaign_table,
    message_table,
    outbox_table,
    utcnow,
)

MAX_MESSAGES = 500
FINAL_VALUES = [s.value for s in FINAL]

MESSAGE_FINAL = "message.final"
CAMPAIGN_STARTED = "campaign.started"
CAMPAIGN_PAUSED = "campaign.paused"
CAMPAIGN_RESUMED = "campaign.resumed"
CAMPAIGN_COMPLETED = "campaign.completed"
CAMPAIGN_CANCELLED = "campaign.cancelled"
SCHEDULE_FIRED = "schedule.fired"
SCHEDULE_MISSED = "schedule.missed"


def new_event_id() -> str:
    """The event's webhook-id: fixed when the event is written, the same on every retry."""
    return "msg_" + uuid.uuid4().hex


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _row(
    kind: str, lane: str, campaign_id: int | None, url: str | None, data: dict[str, Any]
) -> dict[str, Any]:
    now = utcnow()
    body = {"type": kind, "timestamp": now.isoformat(), "data": data}
    return {
        "event_id": new_event_id(),
        "type": kind,
        "lane": lane,
        "campaign_id": campaign_id,
        "url": url,
        "payload": json.dumps(body, ensure_ascii=False, separators=(",", ":"), default=str),
        "state": OutboxState.PENDING,
        "attempts": 0,
        "created_at": now,
        "next_attempt_at": now,
    }


def _insert(conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
    if rows:
        conn.execute(sa.insert(outbox_table), rows)


# --- message.final --------------------------------------------------------------------------


_MESSAGE_COLUMNS = (
    message_table.c.id,
    message_table.c.campaign_id,
    message_table.c.line,
    message_table.c.mobile,
    message_table.c.ref,
    message_table.c.status,
    message_table.c.last_error,
    message_table.c.cost,
    message_table.c.attempts,
    message_table.c.poll_count,
    message_table.c.created_at,
    message_table.c.submitted_at,
    message_table.c.accepted_at,
    message_table.c.final_at,
    campaign_table.c.webhook_url,
)


def _message(row: Any) -> dict[str, Any]:
    return {
        "campaign": row.campaign_id,
        "line": row.line,
        "mobile": row.mobile,
        "ref": row.ref,
        "status": row.status,
        "error": row.last_error,
        "cost": None if row.cost is None else str(Decimal(row.cost).normalize()),
        "attempts": row.attempts,
        "created_at": _iso(row.created_at),
        "submitted_at": _iso(row.submitted_at),
        "accepted_at": _iso(row.accepted_at),
        "final_at": _iso(row.final_at),
    }


# --- metrics that count only what committed -------------------------------------------------

_HELD = "sms.counted_on_commit"


@contextmanager
def transaction(engine: sa.Engine) -> Iterator[sa.Connection]:
    """`engine.begin()`, whose metric bumps land only once the transaction has committed.

    A commit that fails leaves the rows as they were; they are made final again later, and a
    bump made before the failure would count them twice.
    """
    held: list[tuple[Callable[..., None], tuple[Any, ...]]] = []
    with engine.begin() as conn:
        conn.info[_HELD] = held
        try:
            yield conn
        finally:
            conn.info.pop(_HELD, None)
    for bump, args in held:  # reached only when the commit went through
        bump(*args)


def _count(conn: sa.Connection, bump: Callable[..., None], *args: Any) -> None:
    # Outside `transaction` (a caller with its own connection): counted at once, as before.
    held = conn.info.get(_HELD)
    if held is None:
        bump(*args)
    else:
        held.append((bump, args))


def _messages_final(conn: sa.Connection, rows: Sequence[Any]) -> int:
    """message.final events for these rows (sorted by campaign, then id), and the metrics."""
    events: list[dict[str, Any]] = []
    by_campaign: dict[int, list[Any]] = {}
    for row in rows:
        by_campaign.setdefault(row.campaign_id, []).append(row)
        _count(conn, counters.bump, counters.FINALIZED, row.status)
        if row.accepted_at is not None and row.final_at is not None:
            seconds = (row.final_at - row.accepted_at).total_seconds()
            _count(conn, counters.observe, counters.ACCEPTED_TO_FINAL, seconds)
            _count(conn, counters.observe, counters.POLLS_PER_MESSAGE, row.poll_count)
    for campaign_id, group in by_campaign.items():
        group.sort(key=lambda r: r.id)
        for start in range(0, len(group), MAX_MESSAGES):
            chunk = group[start : start + MAX_MESSAGES]
            data = {"campaign": campaign_id, "messages": [_message(r) for r in chunk]}
            events.append(
                _row(
                    MESSAGE_FINAL,
                    f"campaign:{campaign_id}",
                    campaign_id,
                    chunk[0].webhook_url,
                    data,
                )
            )
    _insert(conn, events)
    return len(rows)


def _select_messages(where: Iterable[sa.ColumnElement[bool]]) -> sa.Select[Any]:
    return (
        sa.select(*_MESSAGE_COLUMNS)
        .join(campaign_table, campaign_table.c.id == message_table.c.campaign_id)
        .where(*where)
        .order_by(message_table.c.campaign_id, message_table.c.id)
    )


def after_changes(conn: sa.Connection, changes: Sequence[Any]) -> None:
    """Call inside `apply_changes`' transaction: events for the messages that became final.

    A change that a guard skipped left the row as it was; only rows whose `final_at` is the
    one this change wrote were made final by it, so an event is never written twice.
    """
    finals = {c.id: c.final_at for c in changes if c.status in FINAL and c.final_at is not None}
    accepted = {
        c.id: c.accepted_at
        for c in changes
        if c.accepted_at is not None and c.status in (Status.ACCEPTED, Status.SENT)
    }
    if finals:
        rows = conn.execute(_select_messages([message_table.c.id.in_(list(finals))])).all()
        _messages_final(conn, [r for r in rows if r.final_at == finals[r.id]])
    if accepted:
        # Time from the campaign's start to acceptance, counted once: the first acceptance.
        rows = conn.execute(
            sa.select(message_table.c.id, message_table.c.accepted_at, campaign_table.c.started_at)
            .join(campaign_table, campaign_table.c.id == message_table.c.campaign_id)
            .where(message_table.c.id.in_(list(accepted)))
        ).all()
        for row in rows:
            if row.accepted_at == accepted[row.id] and row.started_at is not None:
                seconds = (row.accepted_at - row.started_at).total_seconds()
                _count(conn, counters.observe, counters.SEND_TO_ACCEPTED, seconds)


def finals_at(conn: sa.Connection, final_at: datetime, *where: sa.ColumnElement[bool]) -> int:
    """After a bulk update that stamped `final_at`: events for the rows it made final."""
    rows = conn.execute(
        _select_messages(
            [message_table.c.final_at == final_at, message_table.c.status.in_(FINAL_VALUES), *where]
        )
    ).all()
    return _messages_final(conn, rows)


def finals_of_load(conn: sa.Connection, campaign_id: int) -> int:
    """When a load is committed: events for the rows that were final from the start."""
    waiting = [s.value for s in Status if s.value not in FINAL_VALUES]
    rows = conn.execute(
        _select_messages(
            [message_table.c.campaign_id == campaign_id, message_table.c.status.not_in(waiting)]
        )
    ).all()
    return _messages_final(conn, rows)


# --- campaign and schedule events -----------------------------------------------------------


def _counts(conn: sa.Connection, campaign_id: int) -> dict[str, int]:
    stmt = (
        sa.select(message_table.c.status, sa.func.count())
        .where(message_table.c.campaign_id == campaign_id)
        .group_by(message_table.c.status)
    )
    return {status: n for status, n in conn.execute(stmt)}


def campaign_events(
    conn: sa.Connection,
    kind: str,
    campaign_ids: Iterable[int],
    *,
    counts: bool = False,
    **extra: Any,
) -> None:
    """One event per campaign (`campaign.started`, `.paused` with `reason=`, ...)."""
    ids = list(campaign_ids)
    if not ids:
        return
    rows = conn.execute(
        sa.select(
            campaign_table.c.id,
            campaign_table.c.name,
            campaign_table.c.state,
            campaign_table.c.reason,
            campaign_table.c.webhook_url,
        ).where(campaign_table.c.id.in_(ids))
    ).all()
    events = []
    for row in sorted(rows, key=lambda r: r.id):
        data: dict[str, Any] = {"campaign": row.id, "name": row.name, "state": row.state}
        data.update(extra)
        if counts:
            by_status = _counts(conn, row.id)
            data["counts"] = by_status
            data["total"] = sum(by_status.values())
        events.append(_row(kind, f"campaign:{row.id}", row.id, row.webhook_url, data))
    _insert(conn, events)


def schedule_event(conn: sa.Connection, kind: str, schedule_id: int, **data: Any) -> None:
    """`schedule.fired` (campaign, slot) or `schedule.missed` (slots, reason)."""
    data = {"schedule_id": schedule_id, **data}
    _insert(conn, [_row(kind, f"schedule:{schedule_id}", None, None, data)])
