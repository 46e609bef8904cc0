"""Outages of the broker's Redis or the ledger: one warning per process and outage.

A blip must not write a traceback per message or per tick; the work it interrupts is rebuilt
from the ledger by the next tick.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import redis
import sqlalchemy.exc

log = logging.getLogger("sms.outages")
T = TypeVar("T")

# The errors that mean "the service is unreachable right now", not "our code is wrong".
REDIS_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.ReadOnlyError,
)
DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.DisconnectionError,
)
OUTAGE_ERRORS = REDIS_ERRORS + DATABASE_ERRORS


def service_of(exc: BaseException) -> str:
    return "Redis" if isinstance(exc, REDIS_ERRORS) else "the ledger database"


class _Tracker:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._since: dict[str, float] = {}

    def failed(self, exc: BaseException) -> None:
        service = service_of(exc)
        with self._lock:
            if service in self._since:
                return
            self._since[service] = time.monotonic()
        first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        log.warning("%s is unreachable (%s); waiting for it to come back", service, first)

    def ok(self, service: str) -> None:
        with self._lock:
            since = self._since.pop(service, None)
        if since is not None:
            log.warning("%s is back after %.1fs", service, time.monotonic() - since)

    def all_ok(self) -> None:
        for service in ("Redis", "the ledger database"):
            self.ok(service)


tracker = _Tracker()


def retry_database(action: Callable[[], T], *, give_up_after: float) -> T:
    """Run a ledger write, waiting out a database outage of up to `give_up_after` seconds."""
    deadline = time.monotonic() + give_up_after
    pause = 0.2
    while True:
        try:
            value = action()
        except DATABASE_ERRORS as exc:
            tracker.failed(exc)
            if time.monotonic() + pause > deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 5.0)
            continue
        tracker.ok("the ledger database")
        return value
