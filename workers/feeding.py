"""Feeding a running campaign: notices for its first due batches, on its lane's queue.

The one place every path that starts or keeps a campaign going (`send`, `resume`, a batch
that just finished, the beat tick, a schedule firing) goes through.
"""

from __future__ import annotations

import redis
import sqlalchemy as sa
from celery import Celery

from config import Settings
from workers import circuit, claims, ledger_reads, notices


def feed_campaign(
    app: Celery, client: redis.Redis, engine: sa.Engine, settings: Settings, campaign_id: int
) -> int:
    """Issue `send_batch` notices for the campaign's first due batches; returns how many."""
    if circuit.state(client) is not None:
        return 0  # the probe reopens sending; notices now would only come back unsent
    lane = ledger_reads.campaign_lane(engine, campaign_id)
    batches = claims.due_batches(engine, campaign_id, limit=settings.notices_ahead)
    return notices.issue_batches(app, client, campaign_id, batches, settings.notice_lease, lane)
