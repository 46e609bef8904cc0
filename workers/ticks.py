"""The beat ticks: each selects a bounded set of ledger rows and issues notices for them.

Two beats are harmless: each tick takes a short Redis lock first, so a doubled beat does not
double the ticks, and everything a tick does is a claim in SQL anyway. Each tick leaves its
time in Redis, so workers and `status` can tell when no beat is running.
"""

from __future__ import annotations

import logging
import time

import redis
from celery import Celery

from workers import campaign_moves, circuit, claims, ledger_reads, notices
from workers.feeding import feed_campaign
from workers.ledger import CampaignState
from workers.runtime import Runtime

log = logging.getLogger("sms.ticks")

TICK_KEY = "sms:tick:{}"
LAST_TICK_KEY = "sms:tick:last"
# A tick older than this means beat is not running (ticks come every 1-2 s).
BEAT_SILENCE = 30.0


def take_tick(client: redis.Redis, name: str, interval: float) -> bool:
    """True for the first tick of `name` within most of its interval, on any beat."""
    client.set(LAST_TICK_KEY, f"{time.time():.3f}")
    return bool(client.set(TICK_KEY.format(name), 1, nx=True, px=max(1, int(interval * 800))))


def beat_silence(client: redis.Redis) -> float | None:
    """Seconds since the last tick, when that is longer than ticks ever take; else None."""
    value = client.get(LAST_TICK_KEY)
    if value is None:
        return None
    silent = time.time() - float(value)
    return silent if silent > BEAT_SILENCE else None


def dispatch_campaign(rt: Runtime, app: Celery, campaign_id: int) -> int:
    """Issue `send_batch` notices for a running campaign's first due batches."""
    return feed_campaign(app, rt.redis, rt.engine, rt.settings, campaign_id)


def dispatch_due(rt: Runtime, app: Celery) -> dict[str, int]:
    """Start scheduled campaigns whose time has come, then feed every running campaign."""
    probe = circuit.probe(rt.redis, rt.gateway)
    if probe:
        log.info("gateway probe: %s", probe)
    started = campaign_moves.start_due_scheduled(rt.engine)
    issued = 0
    for campaign_id in ledger_reads.campaigns_in_state(rt.engine, CampaignState.RUNNING):
        issued += dispatch_campaign(rt, app, campaign_id)
    return {"started": len(started), "issued": issued}


def poll_due(rt: Runtime, app: Celery) -> dict[str, int]:
    """Lease due report look-ups and hand them out in small chunks."""
    settings = rt.settings
    if circuit.state(rt.redis) is not None:
        # The gateway is unreachable: look-ups would only fail; the probe reopens them too.
        campaign_moves.cancel_leftovers(rt.engine)
        completed = campaign_moves.complete_finished(rt.engine)
        return {"leased": 0, "completed": len(completed)}
    # Claim about two ticks' worth at the poll rate: more would only wait in the queue.
    limit = max(settings.poll_chunk, int(settings.poll_rate * settings.poll_interval * 2))
    # A look-up notice lost with a killed worker is issued again once this lease lapses: the
    # same bound as a batch notice's, but never shorter than working through the chunk takes.
    lease = max(settings.notice_lease, limit / settings.poll_rate * 2)
    ids = claims.claim_lookups(rt.engine, limit=limit, lease=lease)
    chunk = settings.poll_chunk
    for start in range(0, len(ids), chunk):
        app.send_task(
            notices.POLL_REPORTS,
            kwargs={"ids": ids[start : start + chunk]},
            queue=notices.TRACK_QUEUE,
        )
    campaign_moves.cancel_leftovers(rt.engine)
    completed = campaign_moves.complete_finished(rt.engine)
    ledger_reads.fold_tallies(rt.engine)
    return {"leased": len(ids), "completed": len(completed)}


def sweep(rt: Runtime) -> dict[str, int]:
    """Expire what waited too long, end cancelled campaigns' leftovers, complete, drop loads."""
    expired = campaign_moves.expire_waiting(rt.engine, rt.settings.validity)
    expired += campaign_moves.skip_past_deadline(rt.engine)
    if expired:
        log.warning("messages not sent within their validity period: %s", expired)
    # Cancelled campaigns' messages that came back unsent from a batch end here.
    campaign_moves.cancel_leftovers(rt.engine)
    completed = campaign_moves.complete_finished(rt.engine)
    if completed:
        log.info("campaigns completed: %s", completed)
    abandoned = campaign_moves.discard_abandoned_loads(rt.engine, rt.settings.loading_timeout)
    if abandoned:
        log.warning("removed campaigns whose loading never finished: %s", abandoned)
    return {"completed": len(completed), "abandoned": len(abandoned), "expired": expired}
