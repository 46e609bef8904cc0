"""The Celery application: broker from settings, late acks, no result backend, beat ticks."""

from __future__ import annotations

from celery import Celery
from celery.schedules import crontab
from celery.signals import worker_process_init, worker_process_shutdown, worker_ready
from kombu import Exchange, Queue

from config import get_settings
from workers import counters
from workers.database import dispose_engines
from workers.notices import (
    LANE_QUEUES,
    QUEUES,
    SEND_BATCH,
    TICK_QUEUE,
    TRACK_QUEUE,
    WEBHOOK_QUEUE,
)

# Schedules are fired by producer code (it reads lists), named here rather than imported.
TASK_MODULES = ["workers.tasks", "dispatcher.firing", "workers.retention", "workers.webhook_tasks"]


def create_app() -> Celery:
    settings = get_settings()
    app = Celery("sms-dispatch", include=TASK_MODULES)
    app.conf.update(
        broker_url=settings.celery_broker_url,
        broker_connection_retry_on_startup=True,
        # The ledger is the result; nothing is stored per task.
        result_backend=None,
        task_ignore_result=True,
        # Late acks + requeue on a lost worker: a notice is only gone once its work is done.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # Flower and `celery events` see every task, including ones waiting in the queue.
        worker_send_task_events=True,
        task_send_sent_event=True,
        task_serializer="json",
        accept_content=["json"],
        # Notices are cheap to re-issue; a redelivery after the visibility timeout is harmless
        # because every task claims its rows first.
        # A worker takes from its queues in turn ("round_robin"): strict queue order would
        # starve look-ups and ticks behind a long send backlog. Lanes get their order from
        # the rate (throttle.SendGuard) and the high lane its own worker in `run` and compose.
        broker_transport_options={
            "visibility_timeout": 3600,
            "queue_order_strategy": "round_robin",
        },
        # One queue per kind of work: a backlog of look-ups never delays sends, and ticks run
        # even when both are busy. A worker started without -Q consumes all three.
        # Each queue has an exchange and key of its own: bound to the default one, every
        # queue would get a copy of every task.
        task_queues=[Queue(name, Exchange(name), routing_key=name) for name in QUEUES],
        task_default_queue=TICK_QUEUE,
        task_routes={
            SEND_BATCH: {"queue": LANE_QUEUES["normal"]},
            "sms.poll_reports": {"queue": TRACK_QUEUE},
            "sms.deliver_webhooks": {"queue": WEBHOOK_QUEUE},  # its own worker
        },
        beat_schedule={
            name: {
                "task": task,
                "schedule": every,
                # A tick that waited a minute is stale (later ones are due, and each takes a
                # short lock so a pile-up does the work once); on a worker that also sends,
                # ticks wait behind batches, so a tighter limit would drop every one.
                "options": {"queue": TICK_QUEUE, "expires": max(60.0, every * 5)},
            }
            for name, task, every in (
                ("dispatch-due", "sms.dispatch_due", settings.dispatch_interval),
                ("poll-due", "sms.poll_due", settings.poll_interval),
                ("sweep", "sms.sweep", settings.sweep_interval),
                ("fire-schedules", "sms.fire_schedules", settings.schedule_interval),
                ("webhooks-due", "sms.webhooks_due", settings.webhook_interval),  # issue 12
            )
        },
        timezone="UTC",
        enable_utc=True,
        worker_hijack_root_logger=True,
    )
    # Retention runs nightly at a wall-clock time (UTC), not on an interval.
    hour, minute = settings.retention_at.split(":")
    app.conf.beat_schedule["retention-sweep"] = {
        "task": "sms.retention_sweep",
        "schedule": crontab(hour=int(hour), minute=int(minute)),
        "options": {"expires": 3600},
    }
    return app


app = create_app()


@worker_process_init.connect
def _after_fork(**_: object) -> None:
    # Pooled connections inherited from the parent must not be shared with it.
    dispose_engines()
    counters.flush_before_sigterm()


@worker_process_shutdown.connect
def _before_exit(**_: object) -> None:
    # Pool children leave with os._exit, which skips atexit: write the counters' buffer now.
    counters.flush()


@worker_ready.connect
def _watch_beat(**_: object) -> None:
    # Without beat nothing is polled or re-issued: say so loudly rather than sit quietly.
    from workers.watchdog import start_beat_watchdog

    start_beat_watchdog()
