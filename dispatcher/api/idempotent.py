"""`Idempotency-Key` on POSTs: the first reply is stored, a repeat gets it back unchanged."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from dispatcher import idempotency
from dispatcher.api.problems import Problem
from dispatcher.tokens import Caller

HEADER = "Idempotency-Key"


async def respond(
    request: Request,
    engine: sa.Engine,
    caller: Caller,
    body: Any,
    work: Callable[[], tuple[int, Any, dict[str, str]]],
) -> JSONResponse:
    """Run `work` (in a thread) once per key; `body` is what identifies the request."""
    key = request.headers.get(HEADER)
    if key is None:
        status, content, headers = await run_in_threadpool(work)
        return JSONResponse(content, status_code=status, headers=headers)
    if not key.strip() or len(key) > idempotency.MAX_KEY:
        raise Problem(400, f"{HEADER} must be 1 to {idempotency.MAX_KEY} characters")
    digest = idempotency.fingerprint(request.method, request.url.path, body)
    replay = await run_in_threadpool(idempotency.claim, engine, caller.name, key, digest)
    if replay is not None:
        return JSONResponse(
            replay.body, status_code=replay.status_code, headers={"Idempotent-Replayed": "true"}
        )
    try:
        status, content, headers = await run_in_threadpool(work)
    except BaseException:
        # A failed request leaves no trace: the same key may be tried again.
        await run_in_threadpool(idempotency.release, engine, caller.name, key)
        raise
    await run_in_threadpool(idempotency.store, engine, caller.name, key, status, content)
    return JSONResponse(content, status_code=status, headers=headers)
