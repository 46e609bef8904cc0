"""The Celery application: broker from settings, late acks, no result backend, beat ticks."""

from __future__ import annotations

from celery import Celery
from celery.signals import worker_process_init

from config import get_settings
from workers.database import dispose_engines

# Schedules are fired by producer code (it reads lists), named here rather than imported.
TASK_MODULES = ["workers.tasks", "dispatcher.firing"]


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
        broker_transport_options={"visibility_timeout": 3600},
        task_default_queue="sms",
        beat_schedule={
            "dispatch-due": {"task": "sms.dispatch_due", "schedule": settings.dispatch_interval},
            "poll-due": {"task": "sms.poll_due", "schedule": settings.poll_interval},
            "sweep": {"task": "sms.sweep", "schedule": settings.sweep_interval},
            "fire-schedules": {
                "task": "sms.fire_schedules",
                "schedule": settings.schedule_interval,
            },
        },
        timezone="UTC",
        enable_utc=True,
        worker_hijack_root_logger=True,
    )
    return app


app = create_app()


@worker_process_init.connect
def _after_fork(**_: object) -> None:
    # Pooled connections inherited from the parent must not be shared with it.
    dispose_engines()
