"""Per-process resources of a worker: settings, ledger engine, gateway client, Redis, limits.

Built lazily and rebuilt after a fork, since sockets and pools must not cross processes.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import redis
import sqlalchemy as sa

from config import Settings, get_settings
from workers import counters
from workers.database import dispose_engines, ensure_schema
from workers.gateway import GatewayClient
from workers.throttle import RateLimiter, SendGuard, SlotFeeder, bucket_key


@dataclass
class Runtime:
    settings: Settings
    engine: sa.Engine
    redis: redis.Redis
    gateway: GatewayClient
    send_feeder: SlotFeeder
    poll_feeder: SlotFeeder
    send_guard: SendGuard
    pool: ThreadPoolExecutor
    pid: int = field(default_factory=os.getpid)

    @classmethod
    def build(cls, settings: Settings) -> Runtime:
        client = redis.Redis.from_url(settings.redis_url)
        counters.bind(client)  # gateway and rate-limit metrics go to this Redis (issue 12)
        key = settings.gateway_key.get_secret_value()
        url = settings.gateway_url or ""  # unset: GatewayClient.from_settings below raises
        send = RateLimiter(client, bucket_key("send", url, key), settings.send_rate)
        poll = RateLimiter(client, bucket_key("poll", url, key), settings.poll_rate)
        return cls(
            settings=settings,
            engine=ensure_schema(settings),
            redis=client,
            gateway=GatewayClient.from_settings(settings),
            send_feeder=SlotFeeder(send, settings.concurrency),
            poll_feeder=SlotFeeder(poll, settings.concurrency),
            send_guard=SendGuard(client, send.key, settings.send_rate, settings.reserved_high),
            pool=ThreadPoolExecutor(settings.concurrency, thread_name_prefix="sms-send"),
        )

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.gateway.close()
        self.redis.close()


_runtime: Runtime | None = None
_lock = threading.Lock()


def get_runtime() -> Runtime:
    """This process's runtime, built on first use (and again in a forked child)."""
    global _runtime
    with _lock:
        if _runtime is None or _runtime.pid != os.getpid():
            if _runtime is not None:
                dispose_engines()
            _runtime = Runtime.build(get_settings())
        return _runtime


def reset_runtime() -> None:
    """Drop this process's runtime (tests, or after settings change)."""
    global _runtime
    with _lock:
        if _runtime is not None and _runtime.pid == os.getpid():
            _runtime.close()
        _runtime = None
        dispose_engines()
