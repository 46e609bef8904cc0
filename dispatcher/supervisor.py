"""`sms-dispatch run`: the embedded Redis, a Celery worker and beat, as one supervised group.

Ctrl-C or SIGTERM stops them all; if one dies, the rest are stopped too. No child outlives
the group: each also gets SIGTERM from the kernel if the supervisor itself is killed.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from config import Settings
from dispatcher.embedded import start_redis, stop_redis
from workers.database import ensure_schema

STOP_GRACE = 20.0
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:  # not Linux: the supervisor's own signal handling still stops children
        pass


def worker_command(concurrency: int = 2) -> list[str]:
    return [
        sys.executable, "-m", "celery", "-A", "workers", "worker",
        "--loglevel=INFO", f"--concurrency={concurrency}", "--hostname=sms@%h",
        "--without-mingle", "--without-gossip",
    ]  # fmt: skip


def beat_command(data_dir: Path) -> list[str]:
    return [
        sys.executable, "-m", "celery", "-A", "workers", "beat",
        "--loglevel=INFO", f"--schedule={data_dir / 'beat-schedule'}",
    ]  # fmt: skip


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
            preexec_fn=_die_with_parent,
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
) -> Any:
    """Start Redis (embedded mode), a worker and beat; stop them all on leaving."""
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    ensure_schema(settings)
    group = Group(settings, child_env(settings, extra_env), log=log)
    try:
        if settings.embedded:
            group.redis = start_redis(settings)
        group.spawn("worker", worker_command(concurrency))
        group.spawn("beat", beat_command(data_dir))
        yield group
    finally:
        group.stop()


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
) -> int:
    """Run the group until a signal, a child's death, or `until()` turns true."""
    previous = signal.signal(signal.SIGTERM, _raise_stop)
    try:
        with running_group(settings, extra_env=extra_env, log=log, concurrency=concurrency) as g:
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
