"""Workers of sms-dispatch: the Celery app and its tasks, the ledger, the gateway client.

`celery -A workers worker|beat|flower` finds `workers.app`; it is built on first access so
that importing, say, the gateway client does not set up Celery.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name in ("app", "celery"):
        import workers.preflight  # noqa: F401  (a worker refuses to start without a gateway)
        from workers.celery_app import app

        return app
    raise AttributeError(name)
