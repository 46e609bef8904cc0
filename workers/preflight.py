"""Checks a worker makes before it takes any task.

A worker without a gateway fails every message it touches, so it refuses to start instead, in
one line; look-ups slower than sends are allowed but said once, since campaigns then end late.
"""

from __future__ import annotations

import logging
import sys

from celery.signals import worker_init

from config import SettingsError, get_settings


@worker_init.connect
def _preflight(**_: object) -> None:
    try:
        settings = get_settings()
        settings.require_gateway()
    except SettingsError as exc:
        print(f"sms-dispatch worker: {exc}", file=sys.stderr, flush=True)
        sys.exit(2)
    if settings.poll_rate < settings.send_rate:
        logging.getLogger("sms.preflight").warning(
            "SMS_POLL_RATE %g/s is below SMS_SEND_RATE %g/s: every message needs a report "
            "look-up, so reports will fall behind sending and campaigns finish late",
            settings.poll_rate,
            settings.send_rate,
        )
