"""Celery tasks: thin wrappers that take ids, load the runtime, and call the domain code.

An unreachable Redis or ledger is an outage, not a bug: the task logs one warning per outage
(not a traceback per task) and leaves the work to the next tick, which rebuilds it from the
ledger.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from workers import notices, sending, ticks, tracking
from workers.celery_app import app
from workers.outages import OUTAGE_ERRORS, service_of, tracker
from workers.runtime import get_runtime

T = TypeVar("T")


def _through_outage(work: Callable[[], T]) -> T | dict[str, Any]:
    try:
        value = work()
    except OUTAGE_ERRORS as exc:
        tracker.failed(exc)
        return {"outage": service_of(exc)}
    tracker.all_ok()
    return value


@app.task(name=notices.SEND_BATCH)
def send_batch(campaign: int, batch: int) -> dict[str, Any]:
    """Send one batch of a campaign (ids only; the ledger holds the messages)."""
    rt = get_runtime()

    def work() -> dict[str, Any]:
        try:
            report = sending.send_batch(rt, campaign, batch)
        finally:
            notices.release_batch(rt.redis, campaign, batch)
        if report.claimed and not report.paused:
            # Keep the campaign flowing without waiting for the next beat tick.
            ticks.dispatch_campaign(rt, app, campaign)
        return report.as_dict()

    return _through_outage(work)


@app.task(name=notices.POLL_REPORTS)
def poll_reports(ids: list[int]) -> dict[str, Any]:
    """Look up the delivery reports of these messages."""
    return _through_outage(lambda: tracking.poll_reports(get_runtime(), ids))


def _tick(name: str, interval: float, work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    # A second beat sends every tick twice; only the first within the interval does the work.
    rt = get_runtime()
    return _through_outage(
        lambda: work() if ticks.take_tick(rt.redis, name, interval) else {"skipped": 1}
    )


@app.task(name="sms.dispatch_due")
def dispatch_due() -> dict[str, Any]:
    """Beat tick: start due campaigns, issue notices for batches with due messages."""
    rt = get_runtime()
    return _tick("dispatch", rt.settings.dispatch_interval, lambda: ticks.dispatch_due(rt, app))


@app.task(name="sms.poll_due")
def poll_due() -> dict[str, Any]:
    """Beat tick: lease due report look-ups and issue them."""
    rt = get_runtime()
    return _tick("poll", rt.settings.poll_interval, lambda: ticks.poll_due(rt, app))


@app.task(name="sms.sweep")
def sweep() -> dict[str, Any]:
    """Beat tick: expire, complete finished campaigns, drop abandoned loads."""
    rt = get_runtime()
    return _tick("sweep", rt.settings.sweep_interval, lambda: ticks.sweep(rt))
