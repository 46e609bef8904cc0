"""Is any worker alive? Asked before telling a user that sending has started."""

from __future__ import annotations

import kombu.exceptions
import redis

PING_TIMEOUT = 1.0


def workers_alive(timeout: float = PING_TIMEOUT) -> bool:
    """True when at least one Celery worker answers a control ping within `timeout` seconds."""
    from workers.celery_app import app

    try:
        # limit=1: the first answer is enough, so a live worker costs milliseconds, not `timeout`.
        return bool(app.control.ping(timeout=timeout, limit=1))
    except (kombu.exceptions.OperationalError, redis.RedisError, OSError):
        return False  # no broker: no worker can be reached either
