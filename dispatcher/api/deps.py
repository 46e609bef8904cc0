"""What routes depend on: settings, the ledger engine and the caller, as `Annotated` aliases."""

from __future__ import annotations

from typing import Annotated

import sqlalchemy as sa
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from config import Settings
from dispatcher.api.problems import Problem
from dispatcher.tokens import Caller, verify_token
from workers.database import ensure_schema

_bearer = HTTPBearer(auto_error=False, description="A token from `sms-dispatch token create`")
CHALLENGE = {"WWW-Authenticate": "Bearer"}


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_engine(request: Request) -> sa.Engine:
    state = request.app.state
    if state.engine is None:
        # Checked on first use, not at start: /healthz answers even while the ledger is down.
        state.engine = ensure_schema(state.settings)
    return state.engine


SettingsDep = Annotated[Settings, Depends(get_settings)]
EngineDep = Annotated[sa.Engine, Depends(get_engine)]


def get_caller(
    engine: EngineDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    """The caller of a `/v1` route; 401 without a valid token (checked on every request, so a
    revoked token stops working at once)."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Problem(401, "an API token is needed: Authorization: Bearer <token>", CHALLENGE)
    caller = verify_token(engine, credentials.credentials)
    if caller is None:
        raise Problem(401, "the API token is not valid (unknown or revoked)", CHALLENGE)
    return caller


def get_writer(caller: Annotated[Caller, Depends(get_caller)]) -> Caller:
    """A caller that may change things; a read-only token gets 403."""
    if caller.read_only:
        raise Problem(403, f"token {caller.name!r} is read-only")
    return caller


ReaderDep = Annotated[Caller, Depends(get_caller)]
WriterDep = Annotated[Caller, Depends(get_writer)]
