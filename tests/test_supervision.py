"""`sms-dispatch run` after a crash: real processes, real SIGKILLs.

A killed `run` leaves nothing that blocks the next one; a Redis whose `run` is gone is stopped
by the next `run` or `send`; `send` says "sending has started" only when a worker answers.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dispatcher.embedded import redis_executable
from tests.conftest import TEST_KEY
from tests.processes import ROOT, Proc, base_env, wait_for

# They start `sms-dispatch run` (its Redis, workers and beat): end-to-end tests like the rest.
pytestmark = pytest.mark.e2e
NO_WORKER = "no worker is running: start `sms-dispatch run`"


@pytest.fixture
def env(tmp_path: Path, sim) -> dict[str, str]:
    return {
        "SMS_DATA_DIR": str(tmp_path / "data"),
        "SMS_GATEWAY_URL": sim.url,
        "SMS_GATEWAY_KEY": TEST_KEY,
    }


@pytest.fixture
def list_file(tmp_path: Path) -> Path:
    path = tmp_path / "list.csv"
    path.write_text("mobile\n+46701234567\n+46701234568\n")
    return path


def sms(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dispatcher", *args],
        env=base_env(env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def send(env: dict[str, str], list_file: Path) -> subprocess.CompletedProcess[str]:
    result = sms(
        env, "send", str(list_file), "--sender", "Shop", "--text", "Hi", "--purpose", "service"
    )
    assert result.returncode == 0, result.stderr
    return result


def last_line(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout.strip().splitlines()[-1]


def start_run(env: dict[str, str], log: Path) -> Proc:
    return Proc([sys.executable, "-m", "dispatcher", "run", "--no-api"], base_env(env), log)


def record(data: Path) -> dict:
    try:
        return json.loads((data / "run.json").read_text())
    except (OSError, ValueError):
        return {}


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def workers_answer(env: dict[str, str]) -> bool:
    """A Celery control ping through the run's Redis, from a process of its own."""
    check = (
        "import sys; from dispatcher.liveness import workers_alive; sys.exit(not workers_alive(2))"
    )
    result = subprocess.run(
        [sys.executable, "-c", check], env=base_env(env), cwd=ROOT, capture_output=True, timeout=60
    )
    return result.returncode == 0


@pytest.fixture
def orphans() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Stand-ins for a Redis a killed `run` left behind; killed at the end if still there."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def orphan_redis(data: Path, procs: list[subprocess.Popen[bytes]]) -> int:
    """A redis-server on the data dir's socket whose recorded `run` is dead, as after a crash."""
    data.mkdir(parents=True, exist_ok=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    sock = data / "redis.sock"
    proc = subprocess.Popen(
        [redis_executable(), "--port", "0", "--unixsocket", str(sock), "--save", "",
         "--appendonly", "no", "--dir", str(data)],
        stdout=subprocess.DEVNULL,
        start_new_session=True,  # like an orphan: nobody's child but init's
    )  # fmt: skip
    procs.append(proc)
    wait_for(lambda: sock.exists(), 10, 0.05, what="the stand-in Redis")
    (data / "run.json").write_text(json.dumps({"supervisor": dead.pid, "children": {}}))
    return proc.pid


def test_run_killed_with_sigkill_leaves_nothing_that_blocks_the_next(env, list_file, tmp_path):
    data = Path(env["SMS_DATA_DIR"])
    first = start_run(env, tmp_path / "run1.log")
    try:
        rec = wait_for(lambda: record(data).get("children"), 60, what="run.json with children")
        assert record(data)["supervisor"] == first.popen.pid
        assert set(rec) >= {"redis", "worker", "beat"}
        wait_for(lambda: workers_answer(env), 60, what="the workers")
        # Everything `run` writes in the data dir is its owner's alone.
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        for path in data.iterdir():
            if not path.is_socket():
                assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path

        # A second `run` on the same data dir says which process runs it and how to stop it.
        second = sms(env, "run", "--no-api")
        assert second.returncode != 0
        assert second.stderr.strip().splitlines()[-1] == (
            f"sms-dispatch: `sms-dispatch run` (pid {first.popen.pid}) is already running on "
            f"{data}; stop it first (Ctrl-C in its terminal, or: kill {first.popen.pid})"
        )

        os.kill(first.popen.pid, signal.SIGKILL)  # the supervisor only, as `kill -9` does
        first.popen.wait()
        # Its children do not outlive it, Redis included.
        wait_for(lambda: not any(alive(pid) for pid in rec.values()), 60, what="children to exit")
    finally:
        first.stop()

    sent = send(env, list_file)
    assert "sending has started" not in sent.stdout + sent.stderr
    assert last_line(sent) == "sending starts when `sms-dispatch run` (or the workers) start"

    again = start_run(env, tmp_path / "run2.log")
    try:
        wait_for(lambda: workers_answer(env), 60, what="the workers of the second run")
        assert last_line(send(env, list_file)) == "sending has started"
    finally:
        again.stop()
    assert "Traceback" not in again.output()
    assert not (data / "run.json").exists()  # a clean stop clears the record


def test_send_with_a_stale_redis_and_no_worker_says_so(env, list_file, orphans):
    data = Path(env["SMS_DATA_DIR"])
    pid = orphan_redis(data, orphans)
    sent = send(env, list_file)
    assert last_line(sent) == (
        f"stopped the embedded Redis (pid {pid}) left by a `sms-dispatch run` that was killed; "
        "sending starts when `sms-dispatch run` starts"
    )
    orphans[0].wait(10)
    assert not (data / "redis.sock").exists()


def test_run_stops_a_stale_redis_and_goes_on(env, tmp_path, orphans):
    data = Path(env["SMS_DATA_DIR"])
    pid = orphan_redis(data, orphans)
    run = start_run(env, tmp_path / "run.log")
    try:
        wait_for(lambda: record(data).get("children"), 60, what="run.json with children")
        assert record(data)["supervisor"] == run.popen.pid
        assert record(data)["children"]["redis"] != pid
        wait_for(lambda: workers_answer(env), 60, what="the workers")
    finally:
        run.stop()
    assert orphans[0].poll() is not None
    assert (
        f"sms-dispatch: stopped the embedded Redis (pid {pid}) left by a `sms-dispatch run` "
        "that was killed"
    ) in run.output()


def test_send_with_redis_up_but_no_worker_does_not_say_started(
    list_file, tmp_path, sim, redis_client
):
    from tests.conftest import REDIS_URL

    env = {
        "SMS_DATA_DIR": str(tmp_path / "data"),
        "SMS_BROKER_URL": REDIS_URL,
        "SMS_GATEWAY_URL": sim.url,
        "SMS_GATEWAY_KEY": TEST_KEY,
    }
    sent = send(env, list_file)
    assert last_line(sent) == "no worker is running: start the workers (celery -A workers worker)"
