"""Tracking: look refs up on `dlr.php` and move each message toward a final status.

The same look-up settles attempts whose outcome was unknown, before anything is resent. What
each report (or failed look-up) changes is decided in `lifecycle`.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from workers import circuit, claims, fencing
from workers.gateway import GatewayError
from workers.ledger import Status, utcnow
from workers.lifecycle import (
    Change,
    Tracked,
    change_after_lookup_error,
    change_for_report,
    change_not_found,
    change_while_gateway_down,
)
from workers.runtime import Runtime

log = logging.getLogger("sms.tracking")


def poll_reports(rt: Runtime, ids: list[int]) -> dict[str, int]:
    """Look up each message's report at the shared poll rate and record what changed."""
    messages = claims.load_tracked(rt.engine, ids)
    breaker = circuit.Breaker(rt.redis, rt.settings.circuit_threshold)

    def look_up(msg: Tracked) -> Change:
        left = True
        if msg.status is Status.SUBMITTING:
            left = fencing.may_have_left(rt.redis, msg.id, msg.claim)
        if not left:
            # A lapsed claim whose request never left (no in-flight marker): the gateway has
            # nothing to say about it, so no look-up is spent; it is queued again at once.
            change = change_not_found(rt.settings, msg, utcnow(), may_have_left=False)
        elif circuit.state(rt.redis) is not None:
            # The gateway is down: the rest of this chunk would only fail, one look-up each.
            change = change_while_gateway_down(rt.settings, msg)
        else:
            rt.poll_feeder.wait()
            try:
                report = rt.gateway.report(msg.mobile, msg.ref)
            except GatewayError as exc:
                breaker.record_lookup(exc)
                change = change_after_lookup_error(rt.settings, msg, exc)
            else:
                breaker.record_lookup(None)
                change = change_for_report(rt.settings, msg, report, may_have_left=True)
        if msg.status is Status.SUBMITTING and change.claim is None:
            change = replace(change, claim=msg.claim)
        if left and change.status is Status.SUBMITTING:
            # Seen to have maybe left: the ledger keeps that, so the marker can go.
            change = replace(change, left=True)
        return change

    changes = list(rt.pool.map(look_up, messages))
    skipped = claims.apply_changes(rt.engine, changes)
    if skipped:
        # Someone else (a send, another look-up, the sweep) moved them first.
        log.info("report look-ups: %s changes not recorded (moved meanwhile)", skipped)
    # An unknown outcome that was looked at needs its in-flight marker no longer (settled, or
    # its claim now says "left" in the ledger): nothing stays in Redis after a campaign but
    # the fixed keys.
    seen = [m.id for m in messages if m.status is Status.SUBMITTING]
    if seen:
        fencing.clear_in_flight(rt.redis, seen)
    counts: dict[str, int] = {}
    for change in changes:
        counts[change.status] = counts.get(change.status, 0) + 1
    return counts
