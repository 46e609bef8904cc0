"""`/healthz` (the process answers) and `/readyz` (the ledger and the broker answer); no auth."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Request

from dispatcher.api.deps import SettingsDep, get_engine
from dispatcher.api.problems import Problem
from dispatcher.embedded import broker_alive

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is up")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="The ledger and the broker are reachable")
def readyz(request: Request, settings: SettingsDep) -> dict[str, Any]:
    try:
        with get_engine(request).connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception:  # any failure to reach or check the ledger means not ready
        raise Problem(503, "the ledger database is not reachable") from None
    if not broker_alive(settings, timeout=1.0):
        raise Problem(503, "the broker (Redis) is not reachable")
    return {"status": "ready", "ledger": "ok", "broker": "ok"}
