"""Real processes for end-to-end tests: Celery workers, beat, Flower, the CLI."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from dispatcher.supervisor import beat_command, group_commands, worker_command

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def base_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMS_")}
    env.update(extra)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Proc:
    """A child process in its own process group, with its output in a log file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self._fh = log.open("ab")
        self.popen = subprocess.Popen(
            args,
            env=env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole group (a prefork worker's children included)."""
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, sig)

    def stop(self, timeout: float = 20.0) -> None:
        if self.popen.poll() is None:
            self.kill(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill(signal.SIGKILL)
                self.popen.wait()
        else:
            # Reap any orphaned children of a group whose leader already died.
            with suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
        self._fh.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def celery_group(env: dict[str, str], logs: Path, *, concurrency: int = 2) -> Iterator[Any]:
    """A worker and beat, stopped on leaving."""
    logs.mkdir(parents=True, exist_ok=True)
    procs = {
        "worker": Proc(worker_command(concurrency), base_env(env), logs / "worker.log"),
        "beat": Proc(beat_command(logs), base_env(env), logs / "beat.log"),
    }
    try:
        yield procs
    finally:
        for proc in procs.values():
            proc.stop()


@contextmanager
def run_group(env: dict[str, str], logs: Path) -> Iterator[dict[str, Proc]]:
    """The processes `sms-dispatch run` starts (senders, high lane, tracker, beat, webhooks),
    without its Redis; stopped on leaving."""
    logs.mkdir(parents=True, exist_ok=True)
    procs = {
        name: Proc(args, base_env(env), logs / f"{name}.log")
        for name, args in group_commands(logs).items()
    }
    try:
        yield procs
    finally:
        for proc in procs.values():
            proc.stop()


def cli(
    *args: str,
    env: dict[str, str],
    check: bool = True,
    timeout: float = 120,
    cwd: Path = ROOT,
) -> subprocess.CompletedProcess[str]:
    """`sms-dispatch ARGS` as a user runs it, with only `env`'s SMS_ settings."""
    result = subprocess.run(
        [sys.executable, "-m", "dispatcher", *args],
        env=base_env(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"sms-dispatch {' '.join(args)} failed:\n{result.stderr}")
    return result


def cli_json(*args: str, env: dict[str, str]) -> Any:
    return json.loads(cli(*args, "--json", env=env).stdout)


def wait_for(
    condition: Callable[[], Any], timeout: float, interval: float = 0.5, what: str = ""
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
