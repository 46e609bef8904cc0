"""Celery tasks: thin wrappers that take ids, load the runtime, and call the domain code."""

from __future__ import annotations

from typing import Any

from workers import notices, sending, ticks, tracking
from workers.celery_app import app
from workers.runtime import get_runtime


@app.task(name=notices.SEND_BATCH)
def send_batch(campaign: int, batch: int) -> dict[str, Any]:
    """Send one batch of a campaign (ids only; the ledger holds the messages)."""
    rt = get_runtime()
    try:
        report = sending.send_batch(rt, campaign, batch)
    finally:
        notices.release_batch(rt.redis, campaign, batch)
    if report.claimed and not report.paused:
        # Keep the campaign flowing without waiting for the next beat tick.
        ticks.dispatch_campaign(rt, app, campaign)
    return report.as_dict()


@app.task(name=notices.POLL_REPORTS)
def poll_reports(ids: list[int]) -> dict[str, int]:
    """Look up the delivery reports of these messages."""
    return tracking.poll_reports(get_runtime(), ids)


@app.task(name="sms.dispatch_due")
def dispatch_due() -> dict[str, int]:
    """Beat tick: start due campaigns, issue notices for batches with due messages."""
    return ticks.dispatch_due(get_runtime(), app)


@app.task(name="sms.poll_due")
def poll_due() -> dict[str, int]:
    """Beat tick: lease due report look-ups and issue them."""
    return ticks.poll_due(get_runtime(), app)


@app.task(name="sms.sweep")
def sweep() -> dict[str, int]:
    """Beat tick: complete finished campaigns."""
    return ticks.sweep(get_runtime())
