"""`sms-dispatch serve`: the app under uvicorn, with logs that hold no numbers, texts or tokens."""

from __future__ import annotations

import logging
import logging.config
import sys

from config import Settings

# uvicorn's own access log prints the path and query as sent; ours (in main.py) prints the
# route's template instead, so it is switched off.
LOG_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {
        "err": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "stream": "ext://sys.stderr",
        }
    },
    "loggers": {
        "uvicorn": {"handlers": ["err"], "level": "INFO", "propagate": False},
        "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        "sms": {"handlers": ["err"], "level": "INFO", "propagate": False},
    },
}


def url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    return f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"


def serve(settings: Settings, host: str, port: int) -> int:
    """Serve until SIGINT/SIGTERM; returns the exit status."""
    import uvicorn

    from dispatcher.api.main import create_app
    from workers.database import ensure_schema

    ensure_schema(settings)  # a wrong schema is one line at start, not a 503 later
    logging.config.dictConfig(LOG_CONFIG)
    print(f"sms-dispatch: dashboard and API on {url(host, port)}", file=sys.stderr, flush=True)
    config = uvicorn.Config(
        create_app(settings),
        host=host,
        port=port,
        log_config=LOG_CONFIG,
        access_log=False,
        server_header=False,
        proxy_headers=False,
    )
    uvicorn.Server(config).run()
    return 0
