"""Flower settings: `celery -A workers flower --conf=config/flowerconfig.py`.

Flower's pages show task arguments, results, tracebacks and worker config, so it refuses to
start without a password: basic auth from FLOWER_BASIC_AUTH ("user:password", several
separated by commas), or Flower's own OAuth (FLOWER_AUTH_PROVIDER). Running it open takes
FLOWER_UNAUTHENTICATED=1, said out loud on every start.
"""

import os
import sys

from tornado.options import options

port = int(os.environ.get("FLOWER_PORT", "5555"))
address = os.environ.get("FLOWER_ADDRESS", "127.0.0.1")
# Tasks carry ids only, so what Flower shows holds no phone numbers or texts.
max_tasks = 100_000
persistent = False


def _basic_auth() -> list[str]:
    users = [u.strip() for u in os.environ.get("FLOWER_BASIC_AUTH", "").split(",") if u.strip()]
    for user in users:
        name, _, password = user.partition(":")
        if not name or not password:
            sys.exit("flower: FLOWER_BASIC_AUTH must be user:password (comma-separated for more)")
    return users


basic_auth = _basic_auth() or list(options.basic_auth or [])
_oauth = os.environ.get("FLOWER_AUTH_PROVIDER") or options.auth_provider
_open = os.environ.get("FLOWER_UNAUTHENTICATED", "").strip().lower() in ("1", "true", "yes")

if not basic_auth and not _oauth:
    if not _open:
        sys.exit(
            "flower: refusing to start without a password: set FLOWER_BASIC_AUTH=user:password "
            "(or FLOWER_UNAUTHENTICATED=1 to serve every page to anyone who can reach the port)"
        )
    print(
        "WARNING: Flower is running WITHOUT AUTHENTICATION (FLOWER_UNAUTHENTICATED=1): anyone "
        f"who can reach {address}:{port} sees task arguments, results, tracebacks and worker "
        "config, and can control the workers.",
        file=sys.stderr,
        flush=True,
    )
