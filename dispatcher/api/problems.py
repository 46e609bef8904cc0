"""Errors as `application/problem+json` (RFC 9457), with the CLI's one-line message as detail.

A failure the user can act on keeps its message; anything else is a 500 whose reply says
nothing about it, and whose log line names only the exception's type and where it was raised
(messages may hold a number or a text, which never go to logs).
"""

from __future__ import annotations

import json
import logging
import traceback
from http import HTTPStatus
from typing import Any

import redis
import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from dispatcher.browse import CursorError
from dispatcher.control import FireFailed
from dispatcher.errors import USER_ERRORS, LoadFailed, one_line
from dispatcher.idempotency import IdempotencyConflict
from dispatcher.schedules import ScheduleExists, ScheduleNotFound
from workers.campaign_moves import CampaignStateError
from workers.database import SchemaError
from workers.ledger_reads import CampaignNotFound

log = logging.getLogger("sms.api")
MEDIA_TYPE = "application/problem+json"


class Problem(Exception):
    """Raised by a route to answer with a problem document."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers or {}


def json_object(raw: bytes) -> dict[str, Any]:
    """A request body that must be one JSON object; anything else is a 400."""
    try:
        value = json.loads(raw)
    except ValueError:
        raise Problem(400, "the body is not valid JSON") from None
    if not isinstance(value, dict):
        raise Problem(400, "the body must be a JSON object")
    return value


def problem_body(status: int, detail: str, instance: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    return body


def status_for(exc: BaseException) -> int:
    """The HTTP status of a failure the user can act on."""
    if isinstance(exc, CampaignNotFound | ScheduleNotFound):
        return 404
    if isinstance(exc, CampaignStateError | ScheduleExists | IdempotencyConflict):
        return 409
    if isinstance(exc, CursorError):
        return 400
    if isinstance(exc, SchemaError):
        return 503
    return 422


def _render(request: Request, status: int, detail: str, headers: dict[str, str]) -> Response:
    renderer = getattr(request.app.state, "render_problem", None)
    if renderer is not None and not request.url.path.startswith("/v1"):
        page = renderer(request, status, detail)
        if page is not None:
            for key, value in headers.items():
                page.headers[key] = value
            return page
    return JSONResponse(
        problem_body(status, detail, request.url.path),
        status_code=status,
        media_type=MEDIA_TYPE,
        headers=headers,
    )


def install(app: FastAPI) -> None:
    """Route every error through a problem document (or the dashboard's error fragment)."""

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> Response:
        return _render(request, exc.status, exc.detail, exc.headers)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> Response:
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no such resource: {request.url.path}"
        return _render(request, exc.status_code, detail, dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query"))
        message = str(first.get("msg", "invalid request")).removeprefix("Value error, ")
        if first.get("type") == "json_invalid":
            return _render(request, 400, "the body is not valid JSON", {})
        return _render(request, 422, f"{where}: {message}" if where else message, {})

    for kind in (*USER_ERRORS, IdempotencyConflict, CursorError, FireFailed):

        async def _user(request: Request, exc: Exception) -> Response:
            status = status_for(exc)
            return _render(request, status, one_line(exc), {})

        app.add_exception_handler(kind, _user)

    @app.exception_handler(LoadFailed)
    async def _load_failed(request: Request, exc: LoadFailed) -> Response:
        return _render(request, 503, one_line(exc), {})

    @app.exception_handler(sa.exc.OperationalError)
    async def _db(request: Request, exc: sa.exc.OperationalError) -> Response:
        log.error("database unavailable (%s) on %s", type(exc.orig).__name__, _route(request))
        return _render(request, 503, "the ledger database is not reachable", {})

    @app.exception_handler(redis.RedisError)
    async def _redis(request: Request, exc: redis.RedisError) -> Response:
        log.error("redis unavailable (%s) on %s", type(exc).__name__, _route(request))
        return _render(request, 503, "the broker (Redis) is not reachable", {})

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> Response:
        return unexpected(request, exc)


def unexpected(request: Request, exc: BaseException) -> Response:
    """A 500 for a bug. Logged with the frames only: the message of an unexpected error, and
    a source line, may quote a number or a text."""
    frames = "\n".join(
        f"  {f.filename}:{f.lineno} in {f.name}" for f in traceback.extract_tb(exc.__traceback__)
    )
    log.error("unhandled %s on %s\n%s", type(exc).__name__, _route(request), frames)
    return _render(request, 500, "internal error; the server log has the details", {})


def _route(request: Request) -> str:
    route = request.scope.get("route")
    return f"{request.method} {getattr(route, 'path', '?')}"
