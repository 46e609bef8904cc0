"""Every queue a task is sent to has a consumer, in `sms-dispatch run` and in compose, and
webhook deliveries never share a process with sends (a dead receiver must not slow sending)."""

from __future__ import annotations

from pathlib import Path

import yaml

from dispatcher.supervisor import group_commands
from workers.notices import QUEUES, SEND_QUEUES, WEBHOOK_QUEUE

ROOT = Path(__file__).resolve().parent.parent


def sent_to() -> set[str]:
    """The queues tasks go to: routes, beat ticks, the default, and every declared queue."""
    from workers.celery_app import app

    queues = {route["queue"] for route in app.conf.task_routes.values()}
    queues |= {e.get("options", {}).get("queue") or app.conf.task_default_queue
               for e in app.conf.beat_schedule.values()}  # fmt: skip
    return queues | {app.conf.task_default_queue, WEBHOOK_QUEUE, *QUEUES}


def consumed(command: list[str]) -> set[str] | None:
    """The queues a Celery worker command consumes (None: not a worker)."""
    if "worker" not in command:
        return None
    for i, arg in enumerate(command):
        if arg.startswith("--queues="):
            return set(arg.split("=", 1)[1].split(","))
        if arg in ("-Q", "--queues"):
            return set(command[i + 1].split(","))
    return set(QUEUES)  # no -Q: every declared queue


def workers_of(commands: list[list[str]]) -> list[set[str]]:
    return [q for q in map(consumed, commands) if q is not None]


def compose_commands() -> list[list[str]]:
    spec = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return [s["command"] for s in spec["services"].values() if isinstance(s.get("command"), list)]


def test_run_consumes_every_queue_and_delivers_webhooks_apart_from_sends(tmp_path):
    workers = workers_of(list(group_commands(tmp_path).values()))
    assert sent_to() - set().union(*workers) == set()
    webhook_workers = [q for q in workers if WEBHOOK_QUEUE in q]
    assert webhook_workers and all(not q & set(SEND_QUEUES) for q in webhook_workers)


def test_compose_consumes_every_queue_and_delivers_webhooks_apart_from_sends():
    workers = workers_of(compose_commands())
    assert sent_to() - set().union(*workers) == set()
    webhook_workers = [q for q in workers if WEBHOOK_QUEUE in q]
    assert webhook_workers and all(not q & set(SEND_QUEUES) for q in webhook_workers)
