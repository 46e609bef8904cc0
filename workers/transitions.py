"""State transitions of the ledger: each function is one statement or one transaction.

Claims move rows out of a state with a guard on the state they leave, so two workers (or a
worker and the sweeper) can never both act on one message.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from workers.ledger import (
    NOT_FINAL,
    CampaignState,
    Status,
    campaign_table,
    message_table,
    utcnow,
)

C = campaign_table
M = message_table


class CampaignNotFound(LookupError):
    """No campaign has that id."""


class CampaignStateError(RuntimeError):
    """The campaign is in a state that does not allow the change asked for."""


# --- claims for sending ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Claimed:
    """A message claimed for one send attempt."""

    id: int
    mobile: str
    text: str | None
    ref: str
    attempts: int


def _due(now: datetime) -> sa.ColumnElement[bool]:
    return sa.and_(
        M.c.status == Status.QUEUED,
        sa.or_(M.c.next_attempt_at.is_(None), M.c.next_attempt_at <= now),
        sa.or_(M.c.send_after.is_(None), M.c.send_after <= now),
    )


def claim_batch(
    engine: sa.Engine, campaign_id: int, batch: int, *, limit: int, lease: float
) -> list[Claimed]:
    """Move a batch's due messages from queued to submitting, one attempt spent each."""
    now = utcnow()
    running = sa.select(C.c.id).where(C.c.id == campaign_id, C.c.state == CampaignState.RUNNING)
    pick = (
        sa.select(M.c.id)
        .where(M.c.campaign_id == campaign_id, M.c.batch == batch, _due(now))
        .where(M.c.campaign_id.in_(running))
        .order_by(M.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    stmt = (
        sa.update(M)
        .where(M.c.id.in_(pick.scalar_subquery()), M.c.status == Status.QUEUED)
        .values(
            status=Status.SUBMITTING,
            attempts=M.c.attempts + 1,
            submitted_at=now,
            next_attempt_at=now + timedelta(seconds=lease),
        )
        .returning(M.c.id, M.c.mobile, M.c.text, M.c.ref, M.c.attempts)
    )
    with engine.begin() as conn:
        rows = conn.execute(stmt).all()
    return sorted((Claimed(*row) for row in rows), key=lambda c: c.id)


def due_batches(engine: sa.Engine, campaign_id: int, *, limit: int) -> list[int]:
    """The first batches of a campaign that hold due waiting messages.

    A loose index scan: one short seek per batch found, however many rows were sent before.
    """
    now = utcnow()
    after = sa.bindparam("after", type_=sa.Integer)
    stmt = sa.select(sa.func.min(M.c.batch)).where(
        M.c.campaign_id == campaign_id, M.c.batch > after, _due(now)
    )
    found: list[int] = []
    with engine.connect() as conn:
        while len(found) < limit:
            batch = conn.execute(stmt, {"after": found[-1] if found else -1}).scalar()
            if batch is None:
                break
            found.append(int(batch))
    return found


def campaigns_in_state(engine: sa.Engine, state: CampaignState) -> list[int]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(C.c.id).where(C.c.state == state)).scalars())


# --- recording outcomes ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Change:
    """The new values of one message's columns after an attempt or a report.

    `refund` gives back the attempt its claim spent (account problems, not sent at all).
    """

    id: int
    status: Status
    expect: Status = Status.SUBMITTING  # the status the change was decided from
    refund: int = 0
    last_error: str | None = None
    next_attempt_at: datetime | None = None
    next_poll_at: datetime | None = None
    accepted_at: datetime | None = None
    final_at: datetime | None = None
    cost: Decimal | None = None
    poll_count_add: int = 0
    dlr_status: str | None = None
    dlr_raw: str | None = None
    send_after: datetime | None = None


def _change_statement() -> sa.Update:
    def p(name: str, column: str) -> sa.BindParameter[Any]:
        # Typed binds: inside coalesce() SQLAlchemy cannot infer the column's type itself.
        return sa.bindparam(name, type_=M.c[column].type)

    return (
        sa.update(M)
        # Only from the status the change was decided on: a report look-up that raced a
        # send (or the other way round) changes nothing.
        .where(M.c.id == sa.bindparam("_id"), M.c.status == p("_expect", "status"))
        .values(
            status=p("_status", "status"),
            attempts=M.c.attempts - p("_refund", "attempts"),
            last_error=p("_last_error", "last_error"),
            next_attempt_at=p("_next_attempt_at", "next_attempt_at"),
            next_poll_at=p("_next_poll_at", "next_poll_at"),
            accepted_at=sa.func.coalesce(M.c.accepted_at, p("_accepted_at", "accepted_at")),
            final_at=p("_final_at", "final_at"),
            cost=sa.func.coalesce(p("_cost", "cost"), M.c.cost),
            poll_count=M.c.poll_count + p("_poll_count_add", "poll_count"),
            dlr_status=sa.func.coalesce(p("_dlr_status", "dlr_status"), M.c.dlr_status),
            dlr_raw=sa.func.coalesce(p("_dlr_raw", "dlr_raw"), M.c.dlr_raw),
            send_after=sa.func.coalesce(p("_send_after", "send_after"), M.c.send_after),
        )
    )


def _params(change: Change) -> dict[str, Any]:
    return {
        "_id": change.id,
        "_expect": str(change.expect),
        "_status": str(change.status),
        "_refund": change.refund,
        "_last_error": change.last_error,
        "_next_attempt_at": change.next_attempt_at,
        "_next_poll_at": change.next_poll_at,
        "_accepted_at": change.accepted_at,
        "_final_at": change.final_at,
        "_cost": change.cost,
        "_poll_count_add": change.poll_count_add,
        "_dlr_status": change.dlr_status,
        "_dlr_raw": change.dlr_raw,
        "_send_after": change.send_after,
    }


_CHANGE = _change_statement()


def apply_changes(engine: sa.Engine, changes: Sequence[Change]) -> None:
    """Write many outcomes in one transaction; rows that left the expected state are skipped."""
    if not changes:
        return
    with engine.begin() as conn:
        conn.execute(_CHANGE, [_params(c) for c in changes])


def renew_lease(engine: sa.Engine, ids: Sequence[int], lease: float) -> set[int]:
    """Push the lease of messages a batch still holds; returns the ids still held."""
    if not ids:
        return set()
    until = utcnow() + timedelta(seconds=lease)
    with engine.begin() as conn:
        kept = conn.execute(
            sa.update(M)
            .where(M.c.id.in_(list(ids)), M.c.status == Status.SUBMITTING)
            .values(next_attempt_at=until)
            .returning(M.c.id)
        ).scalars()
        return set(kept)


# --- claims for tracking --------------------------------------------------------------------


def claim_lookups(engine: sa.Engine, *, limit: int, lease: float) -> list[int]:
    """Lease messages whose report (or unknown-outcome look-up) is due; returns their ids.

    The lease pushes `next_poll_at` (or `next_attempt_at` for `submitting`) forward, so a
    lost notice only delays the next look-up by one lease.
    """
    now = utcnow()
    until = now + timedelta(seconds=lease)
    ids: list[int] = []
    polls = (
        sa.select(M.c.id)
        .where(M.c.status.in_([Status.ACCEPTED, Status.SENT]), M.c.next_poll_at <= now)
        .order_by(M.c.next_poll_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    stuck = (
        sa.select(M.c.id)
        .where(M.c.status == Status.SUBMITTING, M.c.next_attempt_at <= now)
        .order_by(M.c.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    with engine.begin() as conn:
        ids += conn.execute(
            sa.update(M)
            .where(M.c.id.in_(polls.scalar_subquery()), M.c.status.in_(["accepted", "sent"]))
            .values(next_poll_at=until)
            .returning(M.c.id)
        ).scalars()
        room = limit - len(ids)
        if room > 0:
            ids += conn.execute(
                sa.update(M)
                .where(M.c.id.in_(stuck.limit(room).scalar_subquery()))
                .where(M.c.status == Status.SUBMITTING)
                .values(next_attempt_at=until)
                .returning(M.c.id)
            ).scalars()
    return ids


@dataclass(frozen=True, slots=True)
class Tracked:
    """What a report look-up needs to know about one message."""

    id: int
    campaign_id: int
    mobile: str
    ref: str
    status: Status
    attempts: int
    poll_count: int
    submitted_at: datetime | None
    accepted_at: datetime | None
    validity: float | None


def load_tracked(engine: sa.Engine, ids: Sequence[int]) -> list[Tracked]:
    stmt = (
        sa.select(
            M.c.id,
            M.c.campaign_id,
            M.c.mobile,
            M.c.ref,
            M.c.status,
            M.c.attempts,
            M.c.poll_count,
            M.c.submitted_at,
            M.c.accepted_at,
            C.c.validity,
        )
        .join(C, C.c.id == M.c.campaign_id)
        .where(M.c.id.in_(list(ids)), M.c.status.in_([s.value for s in NOT_FINAL]))
    )
    with engine.connect() as conn:
        return [Tracked(r[0], r[1], r[2], r[3], Status(r[4]), *r[5:]) for r in conn.execute(stmt)]


# --- campaigns ------------------------------------------------------------------------------


def get_campaign(engine: sa.Engine, campaign_id: int) -> sa.Row[Any]:
    with engine.connect() as conn:
        row = conn.execute(sa.select(C).where(C.c.id == campaign_id)).first()
    if row is None:
        raise CampaignNotFound(f"no campaign {campaign_id}")
    return row


def status_counts(engine: sa.Engine, campaign_id: int) -> dict[str, int]:
    stmt = (
        sa.select(M.c.status, sa.func.count())
        .where(M.c.campaign_id == campaign_id)
        .group_by(M.c.status)
    )
    with engine.connect() as conn:
        return {status: n for status, n in conn.execute(stmt)}


def campaign_cost(engine: sa.Engine, campaign_id: int) -> Decimal:
    stmt = sa.select(sa.func.coalesce(sa.func.sum(M.c.cost), 0)).where(
        M.c.campaign_id == campaign_id
    )
    with engine.connect() as conn:
        return Decimal(str(conn.execute(stmt).scalar_one()))


def waiting_for_window(engine: sa.Engine, campaign_id: int) -> int:
    now = utcnow()
    stmt = sa.select(sa.func.count()).where(
        M.c.campaign_id == campaign_id, M.c.status == Status.QUEUED, M.c.send_after > now
    )
    with engine.connect() as conn:
        return int(conn.execute(stmt).scalar_one())


def pause_running(engine: sa.Engine, reason: str, campaign_id: int | None = None) -> list[int]:
    """Pause one running (or scheduled) campaign, or all running ones; returns those paused."""
    stmt = sa.update(C).values(state=CampaignState.PAUSED, reason=reason)
    if campaign_id is None:
        stmt = stmt.where(C.c.state == CampaignState.RUNNING)
    else:
        stmt = stmt.where(
            C.c.id == campaign_id,
            C.c.state.in_([CampaignState.RUNNING, CampaignState.SCHEDULED]),
        )
    with engine.begin() as conn:
        return list(conn.execute(stmt.returning(C.c.id)).scalars())


def resume(engine: sa.Engine, campaign_id: int) -> CampaignState:
    """Paused -> running (or back to scheduled if its start time is still ahead)."""
    now = utcnow()
    with engine.begin() as conn:
        row = conn.execute(
            sa.select(C.c.state, C.c.send_after, C.c.started_at).where(C.c.id == campaign_id)
        ).first()
        if row is None:
            raise CampaignNotFound(f"no campaign {campaign_id}")
        if row.state != CampaignState.PAUSED:
            raise CampaignStateError(f"campaign {campaign_id} is {row.state}, not paused")
        scheduled = row.started_at is None and row.send_after is not None and row.send_after > now
        state = CampaignState.SCHEDULED if scheduled else CampaignState.RUNNING
        conn.execute(
            sa.update(C)
            .where(C.c.id == campaign_id, C.c.state == CampaignState.PAUSED)
            .values(state=state, reason=None, started_at=sa.func.coalesce(C.c.started_at, now))
            if state is CampaignState.RUNNING
            else sa.update(C).where(C.c.id == campaign_id).values(state=state, reason=None)
        )
        # Messages that were held back by a retry timer can go at once after a resume.
        conn.execute(
            sa.update(M)
            .where(M.c.campaign_id == campaign_id, M.c.status == Status.QUEUED)
            .where(M.c.next_attempt_at.is_not(None))
            .values(next_attempt_at=None)
        )
    return state


def cancel(engine: sa.Engine, campaign_id: int) -> int:
    """Cancel a campaign: every message not yet handed to the gateway becomes cancelled."""
    now = utcnow()
    with engine.begin() as conn:
        row = conn.execute(sa.select(C.c.state).where(C.c.id == campaign_id)).first()
        if row is None:
            raise CampaignNotFound(f"no campaign {campaign_id}")
        if row.state in (CampaignState.COMPLETED, CampaignState.CANCELLED):
            raise CampaignStateError(f"campaign {campaign_id} is already {row.state}")
        conn.execute(
            sa.update(C)
            .where(C.c.id == campaign_id)
            .values(state=CampaignState.CANCELLED, reason="cancelled", finished_at=now)
        )
        result = conn.execute(
            sa.update(M)
            .where(M.c.campaign_id == campaign_id, M.c.status == Status.QUEUED)
            .values(status=Status.CANCELLED, final_at=now, last_error="cancelled")
        )
    return int(result.rowcount or 0)


def start_due_scheduled(engine: sa.Engine) -> list[int]:
    """Scheduled campaigns whose start time has come become running."""
    now = utcnow()
    stmt = (
        sa.update(C)
        .where(C.c.state == CampaignState.SCHEDULED, C.c.send_after <= now)
        .values(state=CampaignState.RUNNING, started_at=now)
        .returning(C.c.id)
    )
    with engine.begin() as conn:
        return list(conn.execute(stmt).scalars())


def discard_loading(engine: sa.Engine, campaign_id: int) -> None:
    """Remove a campaign that did not finish loading, with every row written so far."""
    with engine.begin() as conn:
        conn.execute(sa.delete(M).where(M.c.campaign_id == campaign_id))
        conn.execute(sa.delete(C).where(C.c.id == campaign_id, C.c.state == CampaignState.LOADING))


def discard_abandoned_loads(engine: sa.Engine, older_than: float) -> list[int]:
    """Loads whose producer died (killed mid-list) are removed; they never sent anything."""
    cutoff = utcnow() - timedelta(seconds=older_than)
    with engine.connect() as conn:
        ids = list(
            conn.execute(
                sa.select(C.c.id).where(C.c.state == CampaignState.LOADING, C.c.created_at < cutoff)
            ).scalars()
        )
    for campaign_id in ids:
        discard_loading(engine, campaign_id)
    return ids


def cancel_leftovers(engine: sa.Engine) -> int:
    """Messages of cancelled campaigns that came back from a batch unsent become cancelled."""
    now = utcnow()
    cancelled = sa.select(C.c.id).where(C.c.state == CampaignState.CANCELLED)
    with engine.begin() as conn:
        result = conn.execute(
            sa.update(M)
            .where(M.c.status == Status.QUEUED, M.c.campaign_id.in_(cancelled))
            .values(status=Status.CANCELLED, final_at=now, last_error="cancelled")
        )
    return int(result.rowcount or 0)


def complete_finished(engine: sa.Engine) -> list[int]:
    """Running campaigns whose every message is final become completed."""
    cancel_leftovers(engine)
    now = utcnow()
    open_messages = (
        sa.select(M.c.id)
        .where(M.c.campaign_id == C.c.id, M.c.status.in_([s.value for s in NOT_FINAL]))
        .exists()
    )
    stmt = (
        sa.update(C)
        .where(C.c.state == CampaignState.RUNNING, ~open_messages)
        .values(state=CampaignState.COMPLETED, finished_at=now)
        .returning(C.c.id)
    )
    with engine.begin() as conn:
        return list(conn.execute(stmt).scalars())
