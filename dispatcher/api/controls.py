"""`POST /v1/<things>/{key}/<action>` routes (pause, resume, cancel, run): built one way for
campaigns and schedules, each an idempotent write whose work runs in a thread."""

# No `from __future__ import annotations` here: the handler's annotations name the `target`
# dependency of the call that builds it, which FastAPI could not find from a string.

from collections.abc import Awaitable, Callable, Iterable
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from config import Settings
from dispatcher.api import idempotent
from dispatcher.api.deps import EngineDep, SettingsDep, WriterDep

# (action, settings, engine, the route's key, the request's JSON body) -> the reply.
Act = Callable[[str, Settings, sa.Engine, Any, dict[str, Any]], dict[str, Any]]
BodyReader = Callable[[Request], Awaitable[dict[str, Any]]]


def add_control_routes(
    router: APIRouter,
    actions: Iterable[str],
    *,
    key_path: str,
    key: Callable[..., Any],
    noun: str,
    command: str,
    act: Act,
    read_body: BodyReader | None = None,
) -> None:
    """One `POST {key_path}/<action>` route per action, named `<action>_<noun>` and summed up
    as "<Action> a <noun> (as `<command> <action>`)".

    `key` is a dependency that takes the path parameter of `key_path` (so FastAPI checks its
    type as for any path parameter); `act` does the work. A route with `read_body` reads a
    JSON body and keys idempotent replays by it; one without ignores any body.
    """

    def add(action: str) -> None:
        async def handler(
            target: Annotated[Any, Depends(key)],
            request: Request,
            settings: SettingsDep,
            engine: EngineDep,
            caller: WriterDep,
        ) -> JSONResponse:
            body = await read_body(request) if read_body is not None else {}
            return await idempotent.respond(
                request,
                engine,
                caller,
                body or None,
                lambda: (200, act(action, settings, engine, target, body), {}),
            )

        handler.__name__ = f"{action}_{noun}"
        router.add_api_route(
            f"{key_path}/{action}",
            handler,
            methods=["POST"],
            summary=f"{action.capitalize()} a {noun} (as `{command} {action}`)",
        )

    for action in actions:
        add(action)
