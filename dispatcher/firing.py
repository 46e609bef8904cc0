"""The beat tick that fires recurring schedules (`sms.fire_schedules`).

Firing loads a list, which is producer work, so the task lives here; the Celery app lists
this module among its task modules by name.
"""

from __future__ import annotations

import logging

from dispatcher.schedules import fire_due
from workers.celery_app import app
from workers.feeding import feed_campaign
from workers.ledger import CampaignState
from workers.runtime import get_runtime

log = logging.getLogger("sms.schedules")


@app.task(name="sms.fire_schedules")
def fire_schedules() -> dict[str, int]:
    """Beat tick: fire due schedule slots, record missed ones, start their campaigns."""
    rt = get_runtime()
    fired = fire_due(rt.settings, rt.engine)
    started = 0
    for item in fired:
        if item.error:
            log.warning("schedule %s did not fire: %s", item.schedule, item.error)
            continue
        summary = item.summary
        running = summary is not None and summary.state == CampaignState.RUNNING
        if summary is not None and summary.campaign is not None and running:
            feed_campaign(app, rt.redis, rt.engine, rt.settings, summary.campaign)
            started += 1
    return {"fired": len(fired), "started": started}
