"""The one place the app is put together: routers, static files, error handling, logging.

Routers are included here and nowhere else; a new face (metrics, webhooks admin) adds one
`include_router` line below.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles

from config import Settings, get_settings
from dispatcher import control
from dispatcher.api import pages, problems
from dispatcher.api.routes import campaigns, health, metrics, people, schedules, suppression

log = logging.getLogger("sms.api")
STATIC_DIR = pages.HERE / "static"


def create_app(settings: Settings | None = None) -> FastAPI:
    """A new app over `settings` (the process's settings by default)."""
    app = FastAPI(
        title="sms-dispatch",
        summary="Bulk SMS campaigns: upload a list, watch every message reach a final status.",
        version="1",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.settings = settings or get_settings()
    app.state.engine = None
    control.count_in_redis(app.state.settings)  # finals made here are counted like a worker's
    problems.install(app)

    app.include_router(health.router)
    app.include_router(campaigns.router)
    app.include_router(suppression.router)
    app.include_router(people.router)  # DELETE /v1/people/{number}: erasure (issue 14)
    app.include_router(schedules.router)
    app.include_router(metrics.router)  # GET /metrics (issue 12)
    app.include_router(pages.router)
    pages.install(app)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.middleware("http")
    async def access_log(request: Request, call_next: Any) -> Any:
        # Our own access log: the route's template (`/v1/suppression/{number}`), never the
        # path or the query string as sent, which may hold a number.
        started = time.perf_counter()
        try:
            response = await call_next(request)
        except Exception as exc:
            # Answered here, so the server does not log the error again with its message.
            response = problems.unexpected(request, exc)
        route = request.scope.get("route")
        log.info(
            "%s %s %d %.1fms",
            request.method,
            getattr(route, "path", "-"),
            response.status_code,
            (time.perf_counter() - started) * 1000,
        )
        return response

    return app
