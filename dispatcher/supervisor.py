"""`sms-dispatch run`: the embedded Redis, a Celery worker and beat, as one supervised group.

Ctrl-C or SIGTERM stops them all; if one dies, the rest are stopped too. No child outlives
the group: each also gets SIGTERM from the kernel if the supervisor itself is killed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from config import Settings
from dispatcher.embedded import (
    clear_run_record,
    die_with_parent,
    start_redis,
    stop_redis,
    write_run_record,
)
from workers.database import ensure_schema, private_dir
from workers.notices import LANE_QUEUES, QUEUES, SEND_QUEUES, TICK_QUEUE, TRACK_QUEUE

STOP_GRACE = 20.0


def worker_command(
    concurrency: int = 2, queues: Sequence[str] = QUEUES, name: str = "sms"
) -> list[str]:
    """A Celery worker consuming `queues` (all of them unless told otherwise)."""
    return [
        sys.executable, "-m", "celery", "-A", "workers", "worker",
        "--loglevel=INFO", f"--concurrency={concurrency}", f"--hostname={name}@%h",
        f"--queues={','.join(queues)}", "--without-mingle", "--without-gossip",
    ]  # fmt: skip


def webhook_worker_command(concurrency: int = 4) -> list[str]:
    """A worker of threads for webhook deliveries alone (they mostly wait on receivers)."""
    return [*worker_command(concurrency, ["sms.webhooks"], "webhooks"), "--pool=threads"]


def beat_command(data_dir: Path) -> list[str]:
    return [
        sys.executable, "-m", "celery", "-A", "workers", "beat",
        "--loglevel=INFO", f"--schedule={data_dir / 'beat-schedule'}",
    ]  # fmt: skip


def group_commands(data_dir: Path, concurrency: int = 2) -> dict[str, list[str]]:
    """The workers and beat of `run`, by name (the end-to-end tests start the same set)."""
    return {
        # Senders apart from look-ups and ticks: a backlog of either never starves the other.
        "worker": worker_command(concurrency, SEND_QUEUES, "send"),
        # The high lane's own process: a reminder batch never waits for a marketing batch to
        # end before it starts (the rate itself is shared by lane in the limiter).
        "high": worker_command(1, [LANE_QUEUES["high"]], "high"),
        "tracker": worker_command(2, [TRACK_QUEUE, TICK_QUEUE], "track"),
        "beat": beat_command(data_dir),
        "webhooks": webhook_worker_command(),  # slow receivers wait here only
    }


def api_command(host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "dispatcher", "serve", "--host", host, "--port", str(port)]


@dataclass
class Group:
    """The running processes of one `run`."""

    settings: Settings
    env: dict[str, str]
    log: IO[Any] | None = None
    redis: subprocess.Popen[bytes] | None = None
    children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def spawn(self, name: str, args: list[str]) -> None:
        self.children[name] = subprocess.Popen(
            args,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT if self.log else None,
            preexec_fn=die_with_parent,
            umask=0o077,  # beat's schedule file and the like: the owner's alone
            start_new_session=True,  # Ctrl-C reaches the supervisor only; it stops the rest
        )

    def dead(self) -> str | None:
        for name, proc in self.children.items():
            if proc.poll() is not None:
                return f"{name} exited with status {proc.returncode}"
        if self.redis is not None and self.redis.poll() is not None:
            return "redis-server exited"
        return None

    def stop(self) -> None:
        for proc in self.children.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)  # Celery's warm shutdown: finish the task
        deadline = time.monotonic() + STOP_GRACE
        for proc in self.children.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if self.redis is not None:
            stop_redis(self.redis, self.settings.redis_socket)


def child_env(settings: Settings, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["SMS_DATA_DIR"] = str(settings.data_dir.resolve())
    env.update(extra or {})
    return env


@contextmanager
def running_group(
    settings: Settings,
    *,
    extra_env: dict[str, str] | None = None,
    log: IO[Any] | None = None,
    concurrency: int = 2,
    api: tuple[str, int] | None = None,
) -> Any:
    """Start Redis (embedded mode), a worker, beat and (given `api`, a host and port) the
    HTTP API; stop them all on leaving."""
    data_dir = private_dir(settings.data_dir.resolve())
    ensure_schema(settings)
    group = Group(settings, child_env(settings, extra_env), log=log)
    try:
        if settings.embedded:
            group.redis = start_redis(settings)
        for name, args in group_commands(data_dir, concurrency).items():
            group.spawn(name, args)
        if api is not None:
            group.spawn("api", api_command(*api))
        # Who owns the data dir: a later `run` or `send` tells a live group from a dead one.
        pids = {name: proc.pid for name, proc in group.children.items()}
        if group.redis is not None:
            pids["redis"] = group.redis.pid
        write_run_record(settings, pids)
        yield group
    finally:
        group.stop()
        clear_run_record(settings)


class _Stop(Exception):
    pass


def _raise_stop(signum: int, _frame: object) -> None:
    raise _Stop(signal.Signals(signum).name)


def supervise(
    settings: Settings,
    *,
    extra_env: dict[str, str] | None = None,
    log: IO[Any] | None = None,
    until: Callable[[], bool] | None = None,
    tick: Callable[[], None] | None = None,
    concurrency: int = 2,
    api: tuple[str, int] | None = None,
) -> int:
    """Run the group until a signal, a child's death, or `until()` turns true."""
    previous = signal.signal(signal.SIGTERM, _raise_stop)
    try:
        with running_group(
            settings, extra_env=extra_env, log=log, concurrency=concurrency, api=api
        ) as g:
            while True:
                problem = g.dead()
                if problem:
                    print(f"sms-dispatch: {problem}; stopping the rest", file=sys.stderr)
                    return 1
                if tick:
                    tick()
                if until and until():
                    return 0
                time.sleep(0.5)
    except (KeyboardInterrupt, _Stop):
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
