"""Celery tasks for webhooks: a beat tick hands out due lanes, a task delivers one lane.

Deliveries run on their own queue (`sms.webhooks`) and their own worker, so a slow or dead
receiver never holds a process that sends or polls.
"""

from __future__ import annotations

import logging

from workers import webhooks
from workers.celery_app import app
from workers.runtime import get_runtime

log = logging.getLogger("sms.webhooks")

WEBHOOK_QUEUE = "sms.webhooks"
DELIVER = "sms.deliver_webhooks"
TICK = "sms.webhooks_due"


@app.task(name=TICK)
def webhooks_due() -> dict[str, int]:
    """Beat tick: issue a delivery task for each lane whose first event is due."""
    rt = get_runtime()
    settings = rt.settings
    skipped = 0 if settings.webhook_url else webhooks.skip_unaddressed(rt.engine)
    pruned = webhooks.prune(rt.engine, settings.webhook_retention)
    issued = 0
    for lane in webhooks.due_lanes(rt.engine):
        token = webhooks.lock_lane(rt.redis, lane, webhooks.lane_lease(settings))
        if token is not None:
            app.send_task(DELIVER, kwargs={"lane": lane, "token": token}, queue=WEBHOOK_QUEUE)
            issued += 1
    return {"issued": issued, "skipped": skipped, "pruned": pruned}


@app.task(name=DELIVER)
def deliver_webhooks(lane: str, token: str) -> dict[str, int]:
    """Deliver one lane's due events in order (ids only in the arguments)."""
    rt = get_runtime()
    return webhooks.deliver_lane(rt.engine, rt.redis, rt.settings, lane, token)
