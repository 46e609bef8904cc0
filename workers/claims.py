"""Claims and outcomes: workers take messages out of the ledger and write back what came of them.

A claim moves rows out of a status with a guard on the status it leaves, so two workers (or a
worker and the sweeper) can never both act on one message; an outcome (`lifecycle.Change`)
applies only while the row still has the status it was decided from, and only while it
carries the claim it names. Each function is one statement or one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from workers import fencing, outbox
from workers.ledger import CampaignState, Status, campaign_table, message_table, utcnow
from workers.lifecycle import Change, Claimed, Tracked

campaigns = campaign_table
messages = message_table


def _due(now: datetime) -> sa.ColumnElement[bool]:
    return sa.and_(
        messages.c.status == Status.QUEUED,
        sa.or_(messages.c.next_attempt_at.is_(None), messages.c.next_attempt_at <= now),
        sa.or_(messages.c.send_after.is_(None), messages.c.send_after <= now),
        # Past its deadline a message is never sent; sweep marks it `skipped`.
        sa.or_(messages.c.deadline.is_(None), messages.c.deadline > now),
    )


def claim_batch(
    engine: sa.Engine,
    campaign_id: int,
    batch: int,
    *,
    limit: int,
    lease: float,
    token: str | None = None,
) -> list[Claimed]:
    """Move a batch's due messages from queued to submitting, one attempt spent each.

    `token` marks the rows as this batch run's: renewals and outcome writes must match it, so
    a run that lost its claim (paused past its lease) can change nothing.
    """
    now = utcnow()
    running = sa.select(campaigns.c.id).where(
        campaigns.c.id == campaign_id, campaigns.c.state == CampaignState.RUNNING
    )
    pick = (
        sa.select(messages.c.id)
        .where(messages.c.campaign_id == campaign_id, messages.c.batch == batch, _due(now))
        .where(messages.c.campaign_id.in_(running))
        .order_by(messages.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    stmt = (
        sa.update(messages)
        .where(messages.c.id.in_(pick.scalar_subquery()), messages.c.status == Status.QUEUED)
        .values(
            status=Status.SUBMITTING,
            attempts=messages.c.attempts + 1,
            submitted_at=now,
            next_attempt_at=now + timedelta(seconds=lease),
            claim=token,
        )
        .returning(
            messages.c.id,
            messages.c.mobile,
            messages.c.text,
            messages.c.ref,
            messages.c.attempts,
            messages.c.parts,
        )
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
    stmt = sa.select(sa.func.min(messages.c.batch)).where(
        messages.c.campaign_id == campaign_id, messages.c.batch > after, _due(now)
    )
    found: list[int] = []
    with engine.connect() as conn:
        while len(found) < limit:
            batch = conn.execute(stmt, {"after": found[-1] if found else -1}).scalar()
            if batch is None:
                break
            found.append(int(batch))
    return found


def _change_statement() -> sa.Update:
    def p(name: str, column: str) -> sa.BindParameter[Any]:
        # Typed binds: inside coalesce() SQLAlchemy cannot infer the column's type itself.
        return sa.bindparam(name, type_=messages.c[column].type)

    return (
        sa.update(messages)
        # Only from the status the change was decided on: a report look-up that raced a
        # send (or the other way round) changes nothing.
        .where(messages.c.id == sa.bindparam("_id"), messages.c.status == p("_expect", "status"))
        .where(
            sa.or_(
                p("_claim", "claim").is_(None),
                messages.c.claim == p("_claim", "claim"),
                messages.c.claim == "~" + p("_claim", "claim"),
            )
        )
        .values(
            status=p("_status", "status"),
            claim=sa.case(
                (p("_status", "status") == Status.SUBMITTING.value, p("_keep_claim", "claim")),
                else_=None,
            ),
            attempts=messages.c.attempts - p("_refund", "attempts"),
            last_error=p("_last_error", "last_error"),
            next_attempt_at=p("_next_attempt_at", "next_attempt_at"),
            next_poll_at=p("_next_poll_at", "next_poll_at"),
            accepted_at=sa.func.coalesce(messages.c.accepted_at, p("_accepted_at", "accepted_at")),
            submitted_at=sa.func.coalesce(
                p("_submitted_at", "submitted_at"), messages.c.submitted_at
            ),
            final_at=p("_final_at", "final_at"),
            cost=sa.func.coalesce(p("_cost", "cost"), messages.c.cost),
            poll_count=messages.c.poll_count + p("_poll_count_add", "poll_count"),
            dlr_status=sa.func.coalesce(p("_dlr_status", "dlr_status"), messages.c.dlr_status),
            dlr_raw=sa.func.coalesce(p("_dlr_raw", "dlr_raw"), messages.c.dlr_raw),
            send_after=sa.func.coalesce(p("_send_after", "send_after"), messages.c.send_after),
        )
    )


def _params(change: Change) -> dict[str, Any]:
    return {
        "_id": change.id,
        "_expect": str(change.expect),
        "_status": str(change.status),
        "_claim": change.claim,
        "_keep_claim": _kept_claim(change),
        "_refund": change.refund,
        "_last_error": change.last_error,
        "_next_attempt_at": change.next_attempt_at,
        "_next_poll_at": change.next_poll_at,
        "_accepted_at": change.accepted_at,
        "_submitted_at": change.submitted_at,
        "_final_at": change.final_at,
        "_cost": change.cost,
        "_poll_count_add": change.poll_count_add,
        "_dlr_status": change.dlr_status,
        "_dlr_raw": change.dlr_raw,
        "_send_after": change.send_after,
    }


_CHANGE = _change_statement()


def _kept_claim(change: Change) -> str | None:
    if not change.claim:
        return None
    return fencing.left_claim(change.claim) if change.left else revoked(change.claim)


def revoked(token: str) -> str:
    """The form a claim token takes once its holder may no longer act on the row."""
    return token if token.startswith("~") else "~" + token


def apply_changes(engine: sa.Engine, changes: Sequence[Change]) -> int:
    """Write many outcomes in one transaction; returns how many rows the guards skipped.

    A row is skipped when it left the status the change was decided from, or when it no
    longer carries the change's claim: someone else acted on it first.
    """
    if not changes:
        return 0
    with outbox.transaction(engine) as conn:
        if conn.dialect.name == "postgresql":
            applied = _apply_in_one_statement(conn, changes)
        else:
            result = conn.execute(_CHANGE, [_params(c) for c in changes])
            applied = result.rowcount if result.rowcount is not None else -1
        outbox.after_changes(conn, changes)  # webhook events + metrics, same transaction
    return 0 if applied < 0 else max(0, len(changes) - applied)


# PostgreSQL: one UPDATE ... FROM (VALUES ...) per chunk instead of a statement per row, so
# the ledger's per-statement work (the campaign tally's trigger) runs once per batch.
_PG_VALUES = (
    ("id", "bigint"),
    ("expect", "varchar"),
    ("status", "varchar"),
    ("claim", "varchar"),
    ("keep_claim", "varchar"),
    ("refund", "integer"),
    ("last_error", "varchar"),
    ("next_attempt_at", "timestamptz"),
    ("next_poll_at", "timestamptz"),
    ("accepted_at", "timestamptz"),
    ("final_at", "timestamptz"),
    ("cost", "numeric"),
    ("poll_count_add", "integer"),
    ("dlr_status", "varchar"),
    ("dlr_raw", "varchar"),
    ("send_after", "timestamptz"),
    ("submitted_at", "timestamptz"),
)


_PG_UPDATE = """
UPDATE message AS m SET
  status = v.status,
  claim = CASE WHEN v.status = 'submitting' THEN v.keep_claim END,
  attempts = m.attempts - v.refund,
  last_error = v.last_error,
  next_attempt_at = v.next_attempt_at,
  next_poll_at = v.next_poll_at,
  accepted_at = coalesce(m.accepted_at, v.accepted_at),
  final_at = v.final_at,
  cost = coalesce(v.cost, m.cost),
  poll_count = m.poll_count + v.poll_count_add,
  dlr_status = coalesce(v.dlr_status, m.dlr_status),
  dlr_raw = coalesce(v.dlr_raw, m.dlr_raw),
  send_after = coalesce(v.send_after, m.send_after),
  submitted_at = coalesce(v.submitted_at, m.submitted_at)
FROM (VALUES {rows}) AS v ({names})
WHERE m.id = v.id AND m.status = v.expect
  AND (v.claim IS NULL OR m.claim = v.claim OR m.claim = '~' || v.claim)
"""


_PG_ROW = "(" + ", ".join(f"%s::{kind}" for _, kind in _PG_VALUES) + ")"


_PG_CHUNK = 2000  # rows per statement: 17 parameters each, well under PostgreSQL's 65,535


def _apply_in_one_statement(conn: sa.Connection, changes: Sequence[Change]) -> int:
    names = ", ".join(name for name, _ in _PG_VALUES)
    applied = 0
    for start in range(0, len(changes), _PG_CHUNK):
        chunk = changes[start : start + _PG_CHUNK]
        sql = _PG_UPDATE.format(rows=", ".join([_PG_ROW] * len(chunk)), names=names)
        values: list[Any] = []
        for change in chunk:
            params = _params(change)
            values += [params["_" + name] for name, _ in _PG_VALUES]
        result = conn.exec_driver_sql(sql, tuple(values))
        applied += max(0, result.rowcount or 0)
    return applied


def renew_lease(
    engine: sa.Engine, ids: Sequence[int], lease: float, token: str | None = None
) -> set[int]:
    """Push the lease of messages a batch still holds; returns the ids still held.

    With a token only rows still carrying it (not revoked) count as held.
    """
    if not ids:
        return set()
    until = utcnow() + timedelta(seconds=lease)
    stmt = sa.update(messages).where(
        messages.c.id.in_(list(ids)), messages.c.status == Status.SUBMITTING
    )
    if token is not None:
        stmt = stmt.where(messages.c.claim == token)
    with engine.begin() as conn:
        kept = conn.execute(stmt.values(next_attempt_at=until).returning(messages.c.id)).scalars()
        return set(kept)


STUCK_SHARE = 10  # lapsed claims leased per tick, as a multiple of the look-up limit


def claim_lookups(engine: sa.Engine, *, limit: int, lease: float) -> list[int]:
    """Lease messages whose report (or unknown-outcome look-up) is due; returns their ids.

    The lease pushes `next_poll_at` (or `next_attempt_at` for `submitting`) forward, so a
    lost notice only delays the next look-up by one lease.
    """
    now = utcnow()
    until = now + timedelta(seconds=lease)
    ids: list[int] = []
    polls = (
        sa.select(messages.c.id)
        .where(
            messages.c.status.in_([Status.ACCEPTED, Status.SENT]), messages.c.next_poll_at <= now
        )
        .order_by(messages.c.next_poll_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    stuck = (
        sa.select(messages.c.id)
        .where(messages.c.status == Status.SUBMITTING, messages.c.next_attempt_at <= now)
        .order_by(messages.c.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    with engine.begin() as conn:
        # The rows are picked (and locked) first, then updated by id: an `UPDATE ... WHERE id
        # IN (subquery)` let PostgreSQL, with statistics from before a big campaign went out,
        # rescan the subquery for every row at the gateway (minutes with 20,000 due). Rows
        # picked stay as they were until commit: locked FOR UPDATE on PostgreSQL, and SQLite's
        # write lock is held from BEGIN IMMEDIATE.
        # Lapsed claims first, and more of them: most never left (no in-flight marker) and are
        # settled without asking the gateway, so they must not wait behind report polls.
        # Revoke the sender's claim in the same statement: a sender that was only paused can
        # then neither renew nor record, and its fencing stops it sending.
        lapsed = list(conn.execute(stuck.limit(limit * STUCK_SHARE)).scalars())
        if lapsed:
            ids += conn.execute(
                sa.update(messages)
                .where(messages.c.id.in_(lapsed))
                .values(
                    next_attempt_at=until,
                    claim=sa.case(
                        (messages.c.claim.like("~%"), messages.c.claim),
                        else_=sa.literal("~") + messages.c.claim,
                    ),
                )
                .returning(messages.c.id)
            ).scalars()
        due = list(conn.execute(polls).scalars())
        if due:
            ids += conn.execute(
                sa.update(messages)
                .where(messages.c.id.in_(due))
                .values(next_poll_at=until)
                .returning(messages.c.id)
            ).scalars()
    return ids


LOOKED_UP = (Status.SUBMITTING, Status.ACCEPTED, Status.SENT)


def load_tracked(engine: sa.Engine, ids: Sequence[int]) -> list[Tracked]:
    stmt = (
        sa.select(
            messages.c.id,
            messages.c.campaign_id,
            messages.c.mobile,
            messages.c.ref,
            messages.c.status,
            messages.c.attempts,
            messages.c.poll_count,
            messages.c.submitted_at,
            messages.c.accepted_at,
            campaigns.c.validity,
            messages.c.claim,
            messages.c.deadline,
        )
        .join(campaigns, campaigns.c.id == messages.c.campaign_id)
        # Only rows a look-up can be about: one put back in the queue since it was leased
        # (its request never left) has nothing at the gateway and is the sender's again.
        .where(messages.c.id.in_(list(ids)), messages.c.status.in_(LOOKED_UP))
    )
    with engine.connect() as conn:
        return [Tracked(*row) for row in conn.execute(stmt)]  # status comes back as Status
