"""A worker-side watch on beat: without ticks no report is polled and no notice re-issued."""

from __future__ import annotations

import logging
import threading

import redis

from config import get_settings
from workers.outages import REDIS_ERRORS
from workers.ticks import beat_silence

log = logging.getLogger("sms.watchdog")
CHECK_EVERY = 15.0


def _watch(stop: threading.Event) -> None:
    client = redis.Redis.from_url(get_settings().redis_url, socket_timeout=5)
    warned = False
    while not stop.wait(CHECK_EVERY):
        try:
            silent = beat_silence(client)
        except REDIS_ERRORS:
            continue  # the outage is reported where work fails
        if silent is not None and not warned:
            log.warning(
                "no beat tick for %.0fs: delivery reports are not polled and stalled batches "
                "are not re-issued; is `celery -A workers beat` running?",
                silent,
            )
        elif silent is None and warned:
            log.warning("beat ticks again")
        warned = silent is not None


def start_beat_watchdog() -> threading.Event:
    """Start the watch in a daemon thread of this (main worker) process; set the event to stop."""
    stop = threading.Event()
    threading.Thread(target=_watch, args=(stop,), name="sms-beat-watch", daemon=True).start()
    return stop
