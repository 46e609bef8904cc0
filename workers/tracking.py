"""Tracking: look refs up on `dlr.php` and move each message toward a final status.

The same look-up settles attempts whose outcome was unknown, before anything is resent.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from config import Settings
from workers import transitions
from workers.gateway import GatewayError, Report, ReportState
from workers.ledger import Status, utcnow
from workers.runtime import Runtime
from workers.transitions import Change, Tracked

log = logging.getLogger("sms.tracking")


def status_for(report: Report) -> Status | None:
    """Our message status for a report, or None when the gateway does not know the ref."""
    return {
        ReportState.PENDING: Status.ACCEPTED,
        ReportState.SENDING: Status.SENT,
        ReportState.OTHER: Status.SENT,
        ReportState.DELIVERED: Status.DELIVERED,
        ReportState.FAILED: Status.UNDELIVERED,
        ReportState.DELETED: Status.UNKNOWN,
        ReportState.NOT_FOUND: None,
    }[report.state]


def next_poll(settings: Settings, poll_count: int, now: datetime) -> datetime:
    """Back off: 10 s, 30 s, 1 min ... then the last step over and over."""
    steps = settings.poll_backoff
    return now + timedelta(seconds=steps[min(poll_count, len(steps) - 1)])


def _expired(settings: Settings, msg: Tracked, now: datetime) -> bool:
    since = msg.accepted_at or msg.submitted_at
    validity = msg.validity if msg.validity is not None else settings.validity
    return since is not None and (now - since).total_seconds() > validity


def _expire(msg: Tracked, now: datetime, **extra: Any) -> Change:
    return Change(
        msg.id,
        Status.EXPIRED,
        last_error="no final report within the validity period",
        final_at=now,
        **extra,
    )


def change_for_report(settings: Settings, msg: Tracked, report: Report) -> Change:
    """The ledger change one report calls for."""
    now = utcnow()
    status = status_for(report)
    raw = {"dlr_status": report.dlr_status, "dlr_raw": report.raw}
    if status is None:
        return _not_found(settings, msg, now)
    if status in (Status.DELIVERED, Status.UNDELIVERED, Status.UNKNOWN):
        error = report.dlr_error or (report.dlr_status if status is not Status.DELIVERED else None)
        if status is Status.UNKNOWN:
            error = "the gateway has no report (deleted)"
        return Change(
            msg.id,
            status,
            last_error=error,
            accepted_at=now,
            final_at=now,
            cost=report.cost,
            poll_count_add=1,
            **raw,
        )
    if _expired(settings, msg, now):
        return _expire(msg, now, poll_count_add=1, **raw)
    # Still on its way: a lost submit reply is now known to be accepted.
    return Change(
        msg.id,
        status,
        last_error=None,
        accepted_at=now,
        next_poll_at=next_poll(settings, msg.poll_count, now),
        cost=report.cost,
        poll_count_add=1,
        **raw,
    )


def _not_found(settings: Settings, msg: Tracked, now: datetime) -> Change:
    if msg.status is Status.SUBMITTING:
        # The answer to our send never came. Until the grace period is over the gateway may
        # still register it; after that it never got it, and a resend is safe.
        age = (now - (msg.submitted_at or now)).total_seconds()
        if age < settings.report_grace:
            recheck = now + timedelta(seconds=settings.unknown_recheck)
            return Change(
                msg.id, Status.SUBMITTING, last_error="outcome unknown", next_attempt_at=recheck
            )
        if msg.attempts >= settings.max_attempts:
            return Change(
                msg.id, Status.FAILED, last_error="not received by the gateway", final_at=now
            )
        return Change(msg.id, Status.QUEUED, last_error="not received by the gateway; resending")
    age = (now - (msg.accepted_at or now)).total_seconds()
    if age < settings.report_grace:
        soon = now + timedelta(seconds=settings.poll_backoff[0])
        return Change(msg.id, msg.status, next_poll_at=soon, poll_count_add=1)
    return Change(
        msg.id,
        Status.UNKNOWN,
        last_error="the gateway does not know this message",
        final_at=now,
        poll_count_add=1,
    )


def _on_error(settings: Settings, msg: Tracked, error: GatewayError) -> Change:
    # The look-up itself failed: try again later; the message's state does not change.
    now = utcnow()
    if msg.status is Status.SUBMITTING:
        later = now + timedelta(seconds=settings.unknown_recheck)
        error_text = f"outcome unknown; look-up failed: {error.message}"
        return Change(msg.id, Status.SUBMITTING, last_error=error_text, next_attempt_at=later)
    if _expired(settings, msg, now):
        return _expire(msg, now)
    return Change(
        msg.id,
        msg.status,
        next_poll_at=next_poll(settings, msg.poll_count, now),
        last_error=f"report look-up failed: {error.message}",
    )


def poll_reports(rt: Runtime, ids: list[int]) -> dict[str, int]:
    """Look up each message's report at the shared poll rate and record what changed."""
    messages = transitions.load_tracked(rt.engine, ids)

    def look_up(msg: Tracked) -> Change:
        rt.poll_feeder.wait()
        try:
            report = rt.gateway.report(msg.mobile, msg.ref)
        except GatewayError as exc:
            change = _on_error(rt.settings, msg, exc)
        else:
            change = change_for_report(rt.settings, msg, report)
        return replace(change, expect=msg.status)

    changes = list(rt.pool.map(look_up, messages))
    transitions.apply_changes(rt.engine, changes)
    counts: dict[str, int] = {}
    for change in changes:
        counts[change.status] = counts.get(change.status, 0) + 1
    return counts
