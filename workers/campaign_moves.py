"""Campaign state changes (start, pause, resume, cancel, complete, discard a load) and the bulk
moves of waiting messages that go with them and with the sweep (cancelled, expired, skipped).

Which campaign state may follow which is `lifecycle.CAMPAIGN_MOVES`; the guards here ask it.
"""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from config import UserError
from workers import outbox
from workers.ledger import (
    NOT_FINAL,
    WAITING,
    CampaignState,
    Status,
    campaign_table,
    message_table,
    utcnow,
)
from workers.ledger_reads import CampaignNotFound
from workers.lifecycle import CAMPAIGN_MOVES, campaign_sources

campaigns = campaign_table
messages = message_table


class CampaignStateError(UserError, RuntimeError):
    """The campaign is in a state that does not allow the change asked for."""


def pause_running(engine: sa.Engine, reason: str, campaign_id: int | None = None) -> list[int]:
    """Pause one running (or scheduled) campaign, or all running ones; returns those paused.

    An account-wide pause (no id) leaves out campaigns with nothing left to send: they
    finish on their own.
    """
    stmt = sa.update(campaigns).values(state=CampaignState.PAUSED, reason=reason)
    if campaign_id is None:
        waiting = (
            sa.select(messages.c.id)
            .where(
                messages.c.campaign_id == campaigns.c.id,
                messages.c.status.in_([s.value for s in WAITING]),
            )
            .exists()
        )
        stmt = stmt.where(campaigns.c.state == CampaignState.RUNNING, waiting)
    else:
        stmt = stmt.where(
            campaigns.c.id == campaign_id,
            campaigns.c.state.in_(campaign_sources(CampaignState.PAUSED)),
        )
    with engine.begin() as conn:
        paused = list(conn.execute(stmt.returning(campaigns.c.id)).scalars())
        outbox.campaign_events(conn, outbox.CAMPAIGN_PAUSED, paused, reason=reason)  # webhook
        return paused


def resume(engine: sa.Engine, campaign_id: int) -> CampaignState:
    """Paused -> running (or back to scheduled if its start time is still ahead)."""
    now = utcnow()
    with engine.begin() as conn:
        row = conn.execute(
            sa.select(campaigns.c.state, campaigns.c.send_after, campaigns.c.started_at).where(
                campaigns.c.id == campaign_id
            )
        ).first()
        if row is None:
            raise CampaignNotFound(f"no campaign {campaign_id}")
        if row.state != CampaignState.PAUSED:
            raise CampaignStateError(f"campaign {campaign_id} is {row.state}, not paused")
        scheduled = row.started_at is None and row.send_after is not None and row.send_after > now
        state = CampaignState.SCHEDULED if scheduled else CampaignState.RUNNING
        move = sa.update(campaigns).where(campaigns.c.id == campaign_id)
        if state is CampaignState.RUNNING:
            move = move.where(campaigns.c.state == CampaignState.PAUSED).values(
                started_at=sa.func.coalesce(campaigns.c.started_at, now)
            )
        conn.execute(move.values(state=state, reason=None))
        # Messages that were held back by a retry timer can go at once after a resume.
        conn.execute(
            sa.update(messages)
            .where(messages.c.campaign_id == campaign_id, messages.c.status == Status.QUEUED)
            .where(messages.c.next_attempt_at.is_not(None))
            .values(next_attempt_at=None)
        )
        outbox.campaign_events(conn, outbox.CAMPAIGN_RESUMED, [campaign_id])  # webhook
    return state


def cancel(engine: sa.Engine, campaign_id: int) -> int:
    """Cancel a campaign: every message not yet handed to the gateway becomes cancelled."""
    now = utcnow()
    with outbox.transaction(engine) as conn:
        row = conn.execute(
            sa.select(campaigns.c.state).where(campaigns.c.id == campaign_id)
        ).first()
        if row is None:
            raise CampaignNotFound(f"no campaign {campaign_id}")
        if CampaignState.CANCELLED not in CAMPAIGN_MOVES[CampaignState(row.state)]:
            raise CampaignStateError(f"campaign {campaign_id} is already {row.state}")
        conn.execute(
            sa.update(campaigns)
            .where(campaigns.c.id == campaign_id)
            .values(state=CampaignState.CANCELLED, reason="cancelled", finished_at=now)
        )
        result = conn.execute(
            sa.update(messages)
            .where(messages.c.campaign_id == campaign_id, messages.c.status == Status.QUEUED)
            .values(status=Status.CANCELLED, final_at=now, last_error="cancelled")
        )
        outbox.finals_at(conn, now, messages.c.campaign_id == campaign_id)  # webhook
        outbox.campaign_events(conn, outbox.CAMPAIGN_CANCELLED, [campaign_id])  # webhook
    return int(result.rowcount or 0)


def start_due_scheduled(engine: sa.Engine) -> list[int]:
    """Scheduled campaigns whose start time has come become running."""
    now = utcnow()
    stmt = (
        sa.update(campaigns)
        .where(campaigns.c.state == CampaignState.SCHEDULED, campaigns.c.send_after <= now)
        .values(state=CampaignState.RUNNING, started_at=now)
        .returning(campaigns.c.id)
    )
    with engine.begin() as conn:
        started = list(conn.execute(stmt).scalars())
        outbox.campaign_events(conn, outbox.CAMPAIGN_STARTED, started)  # webhook
        return started


def discard_loading(engine: sa.Engine, campaign_id: int) -> None:
    """Remove a campaign that did not finish loading, with every row written so far."""
    with engine.begin() as conn:
        conn.execute(sa.delete(messages).where(messages.c.campaign_id == campaign_id))
        conn.execute(
            sa.delete(campaigns).where(
                campaigns.c.id == campaign_id, campaigns.c.state == CampaignState.LOADING
            )
        )


def discard_abandoned_loads(engine: sa.Engine, older_than: float) -> list[int]:
    """Loads whose producer died (killed mid-list) are removed; they never sent anything."""
    cutoff = utcnow() - timedelta(seconds=older_than)
    with engine.connect() as conn:
        ids = list(
            conn.execute(
                sa.select(campaigns.c.id).where(
                    campaigns.c.state == CampaignState.LOADING, campaigns.c.created_at < cutoff
                )
            ).scalars()
        )
    for campaign_id in ids:
        discard_loading(engine, campaign_id)
    return ids


def cancel_leftovers(engine: sa.Engine) -> int:
    """Messages of cancelled campaigns that came back from a batch unsent become cancelled."""
    now = utcnow()
    cancelled = sa.select(campaigns.c.id).where(campaigns.c.state == CampaignState.CANCELLED)
    with outbox.transaction(engine) as conn:
        result = conn.execute(
            sa.update(messages)
            .where(messages.c.status == Status.QUEUED, messages.c.campaign_id.in_(cancelled))
            .values(status=Status.CANCELLED, final_at=now, last_error="cancelled")
        )
        if result.rowcount:
            outbox.finals_at(conn, now, messages.c.campaign_id.in_(cancelled))  # webhook
    return int(result.rowcount or 0)


def expire_waiting(engine: sa.Engine, default_validity: float) -> int:
    """Waiting messages of running campaigns past their validity become `expired`.

    The clock starts when the message could first be sent (the campaign's start, or its
    window), so an outage never fails a message before its validity ends.
    """
    now = utcnow()
    validity = sa.func.coalesce(campaigns.c.validity, default_validity)
    expired = 0
    with outbox.transaction(engine) as conn:
        rows = conn.execute(
            sa.select(campaigns.c.id, campaigns.c.started_at, validity).where(
                campaigns.c.state == CampaignState.RUNNING, campaigns.c.started_at.is_not(None)
            )
        ).all()
        for campaign_id, started_at, seconds in rows:
            cutoff = now - timedelta(seconds=float(seconds))
            if started_at > cutoff:
                continue
            result = conn.execute(
                sa.update(messages)
                .where(messages.c.campaign_id == campaign_id, messages.c.status == Status.QUEUED)
                .where(sa.or_(messages.c.send_after.is_(None), messages.c.send_after <= cutoff))
                .values(
                    status=Status.EXPIRED,
                    final_at=now,
                    last_error="not sent within the validity period",
                )
            )
            expired += int(result.rowcount or 0)
            if result.rowcount:
                outbox.finals_at(conn, now, messages.c.campaign_id == campaign_id)  # webhook
    return expired


def skip_past_deadline(engine: sa.Engine) -> int:
    """Waiting messages whose own deadline passed become `skipped`: never sent late."""
    now = utcnow()
    with outbox.transaction(engine) as conn:
        result = conn.execute(
            sa.update(messages)
            .where(
                messages.c.status == Status.QUEUED,
                messages.c.deadline.is_not(None),
                messages.c.deadline <= now,
            )
            .values(
                status=Status.SKIPPED,
                final_at=now,
                last_error="its send time passed before it could be sent",
            )
        )
        if result.rowcount:
            outbox.finals_at(conn, now, messages.c.status == Status.SKIPPED)  # webhook
    return int(result.rowcount or 0)


def complete_finished(engine: sa.Engine) -> list[int]:
    """Running (or paused) campaigns whose every message is final become completed."""
    now = utcnow()
    open_messages = (
        sa.select(messages.c.id)
        .where(
            messages.c.campaign_id == campaigns.c.id,
            messages.c.status.in_([s.value for s in NOT_FINAL]),
        )
        .exists()
    )
    stmt = (
        sa.update(campaigns)
        .where(campaigns.c.state.in_(campaign_sources(CampaignState.COMPLETED)), ~open_messages)
        .values(state=CampaignState.COMPLETED, finished_at=now)
        .returning(campaigns.c.id)
    )
    with engine.begin() as conn:
        done = list(conn.execute(stmt).scalars())
        outbox.campaign_events(conn, outbox.CAMPAIGN_COMPLETED, done, counts=True)  # webhook
        return done
