"""API tokens: made once and shown once; the ledger keeps a hash of the secret part only.

A token reads `sdt_<key id>_<secret>`. The key id finds the row; the secret's hash is then
compared in constant time, so a timing difference tells nothing about any stored secret.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from config import UserError
from workers.ledger import api_token_table, utcnow

PREFIX = "sdt"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_TOKEN = re.compile(rf"^{PREFIX}_([a-z0-9]{{12}})_([A-Za-z0-9_-]{{43}})$")


class TokenError(UserError, ValueError):
    """A token name that cannot be used or does not exist; one line for the user."""


@dataclass(frozen=True)
class Caller:
    """Who a verified token belongs to, and what it may do."""

    name: str
    read_only: bool


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(engine: sa.Engine, name: str, *, read_only: bool = False) -> str:
    """Store a new token under `name` and return it; it cannot be shown again."""
    if not _NAME.match(name):
        raise TokenError(
            f"{name!r} is not a token name (letters, digits, '.', '_', '-'; up to 100)"
        )
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.insert(api_token_table).values(
                    name=name,
                    key_id=key_id,
                    secret_hash=_digest(secret),
                    read_only=read_only,
                    created_at=utcnow(),
                )
            )
    except sa.exc.IntegrityError:
        raise TokenError(f"a token named {name!r} exists already") from None
    return f"{PREFIX}_{key_id}_{secret}"


def list_tokens(engine: sa.Engine) -> list[dict[str, Any]]:
    """Every token's name, access and creation time (never the token)."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                api_token_table.c.name, api_token_table.c.read_only, api_token_table.c.created_at
            ).order_by(api_token_table.c.name)
        )
        return [
            {"name": r.name, "read_only": r.read_only, "created_at": _iso(r.created_at)}
            for r in rows
        ]


def revoke_token(engine: sa.Engine, name: str) -> None:
    """Remove a token; requests carrying it are refused from the next one on."""
    with engine.begin() as conn:
        if not conn.execute(
            sa.delete(api_token_table).where(api_token_table.c.name == name)
        ).rowcount:
            raise TokenError(f"no token named {name!r}")


def verify_token(engine: sa.Engine, token: str) -> Caller | None:
    """The caller a presented token belongs to, or None for any unknown or malformed one."""
    match = _TOKEN.match(token)
    if match is None:
        return None
    key_id, secret = match.groups()
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(
                api_token_table.c.name, api_token_table.c.secret_hash, api_token_table.c.read_only
            ).where(api_token_table.c.key_id == key_id)
        ).first()
    if row is None:
        # Still hash and compare, so an unknown key id costs what a wrong secret does.
        hmac.compare_digest(_digest(secret), "0" * 64)
        return None
    if not hmac.compare_digest(_digest(secret), row.secret_hash):
        return None
    return Caller(row.name, bool(row.read_only))


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
