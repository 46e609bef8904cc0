"""Notices on the broker and the Redis keys that keep them few: batch leases and halt flags.

A notice carries ids only. A lease per (campaign, batch) means at most one live notice for a
batch; if a notice is lost, its lease runs out and the next tick issues it again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import redis
from celery import Celery

log = logging.getLogger("sms.notices")

SEND_BATCH = "sms.send_batch"
POLL_REPORTS = "sms.poll_reports"
# Sends (a queue per lane, highest first), look-ups and ticks each have a queue, so a
# backlog of one never delays the others.
LANE_QUEUES = {"high": "sms.high", "normal": "sms.normal", "low": "sms.low"}
SEND_QUEUES = tuple(LANE_QUEUES.values())
TRACK_QUEUE = "sms.track"
TICK_QUEUE = "sms.ticks"
WEBHOOK_QUEUE = "sms.webhooks"
# A worker without -Q takes all of them, in turn. `sms-dispatch run` and compose give sends,
# the high lane, look-ups with ticks, and webhooks separate workers instead.
QUEUES = (
    TICK_QUEUE,
    LANE_QUEUES["high"],
    LANE_QUEUES["normal"],
    TRACK_QUEUE,
    LANE_QUEUES["low"],
    WEBHOOK_QUEUE,
)
HALT_TTL = 7 * 86400  # a halt flag outlives any batch; resume removes it


def _notice_key(campaign_id: int, batch: int) -> str:
    return f"sms:notice:{campaign_id}:{batch}"


def _halt_key(campaign_id: int) -> str:
    return f"sms:halt:{campaign_id}"


def issue_batches(
    app: Celery,
    client: redis.Redis,
    campaign_id: int,
    batches: Iterable[int],
    lease: float,
    lane: str = "normal",
) -> int:
    """Send a `send_batch` notice for each batch that has no live one; returns how many."""
    queue = LANE_QUEUES.get(lane, LANE_QUEUES["normal"])
    issued = 0
    for batch in batches:
        if client.set(_notice_key(campaign_id, batch), 1, nx=True, ex=max(1, int(lease))):
            app.send_task(SEND_BATCH, kwargs={"campaign": campaign_id, "batch": batch}, queue=queue)
            issued += 1
    return issued


def release_batch(client: redis.Redis, campaign_id: int, batch: int) -> None:
    """The batch's notice is done: the next tick may issue a new one for it."""
    client.delete(_notice_key(campaign_id, batch))


def halt_campaigns(client: redis.Redis, campaign_ids: Iterable[int], reason: str) -> None:
    """Tell every sender, on every machine, to stop sending for these campaigns."""
    pipe = client.pipeline()
    for campaign_id in campaign_ids:
        pipe.set(_halt_key(campaign_id), reason, ex=HALT_TTL)
    pipe.execute()


def unhalt_campaign(client: redis.Redis, campaign_id: int) -> None:
    client.delete(_halt_key(campaign_id))


def halt_reason(client: redis.Redis, campaign_id: int) -> str | None:
    value = client.get(_halt_key(campaign_id))
    return value.decode() if isinstance(value, bytes) else value
