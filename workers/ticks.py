"""The beat ticks: each selects a bounded set of ledger rows and issues notices for them."""

from __future__ import annotations

import logging

from celery import Celery

from workers import notices, transitions
from workers.ledger import CampaignState
from workers.runtime import Runtime

log = logging.getLogger("sms.ticks")


def dispatch_campaign(rt: Runtime, app: Celery, campaign_id: int) -> int:
    """Issue `send_batch` notices for a running campaign's first due batches."""
    batches = transitions.due_batches(rt.engine, campaign_id, limit=rt.settings.notices_ahead)
    return notices.issue_batches(app, rt.redis, campaign_id, batches, rt.settings.notice_lease)


def dispatch_due(rt: Runtime, app: Celery) -> dict[str, int]:
    """Start scheduled campaigns whose time has come, then feed every running campaign."""
    started = transitions.start_due_scheduled(rt.engine)
    issued = 0
    for campaign_id in transitions.campaigns_in_state(rt.engine, CampaignState.RUNNING):
        issued += dispatch_campaign(rt, app, campaign_id)
    return {"started": len(started), "issued": issued}


def poll_due(rt: Runtime, app: Celery) -> dict[str, int]:
    """Lease due report look-ups and hand them out in chunks."""
    settings = rt.settings
    # Claim about two ticks' worth at the poll rate: more would only wait in the queue.
    limit = max(settings.poll_chunk, int(settings.poll_rate * settings.poll_interval * 2))
    lease = max(60.0, limit / settings.poll_rate * 2)
    ids = transitions.claim_lookups(rt.engine, limit=limit, lease=lease)
    chunk = settings.poll_chunk
    for start in range(0, len(ids), chunk):
        app.send_task(notices.POLL_REPORTS, kwargs={"ids": ids[start : start + chunk]})
    completed = transitions.complete_finished(rt.engine)
    return {"leased": len(ids), "completed": len(completed)}


def sweep(rt: Runtime) -> dict[str, int]:
    """Complete campaigns whose every message is final; remove loads abandoned midway."""
    completed = transitions.complete_finished(rt.engine)
    if completed:
        log.info("campaigns completed: %s", completed)
    abandoned = transitions.discard_abandoned_loads(rt.engine, rt.settings.loading_timeout)
    if abandoned:
        log.warning("removed campaigns whose loading never finished: %s", abandoned)
    return {"completed": len(completed), "abandoned": len(abandoned)}
