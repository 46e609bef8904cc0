"""GET /metrics: the Prometheus text format, built at scrape time (see workers/metrics.py).

Unauthenticated like /health, as Prometheus scrapes it; it holds no number, ref or text.
"""

from __future__ import annotations

import threading

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

router = APIRouter(tags=["metrics"])
_lock = threading.Lock()


def _registry(request: Request) -> CollectorRegistry:
    state = request.app.state
    with _lock:
        registry = getattr(state, "metrics_registry", None)
        if registry is None:
            from workers.metrics import registry_from_settings

            registry = state.metrics_registry = registry_from_settings(state.settings)
        return registry


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    # A plain def: FastAPI runs it in a thread, so the ledger queries never block the loop.
    return Response(generate_latest(_registry(request)), media_type=CONTENT_TYPE_LATEST)
