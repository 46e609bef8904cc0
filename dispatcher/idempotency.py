"""Idempotency keys for the API's POSTs: a repeated request gets the first reply again.

The key is claimed (a row with status 0) before the work starts, so two requests with the
same key racing each other never both do it; the loser is told the first is in progress.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from workers.ledger import idempotency_table, utcnow

KEEP = timedelta(hours=24)
MAX_KEY = 200


class IdempotencyConflict(RuntimeError):
    """The key was used with another request, or its first request is still running."""


@dataclass(frozen=True)
class Replay:
    """The stored reply of the first request with this key."""

    status_code: int
    body: Any


def fingerprint(method: str, path: str, body: Any) -> str:
    """A digest of what the request asks for (JSON-shaped body, key order ignored)."""
    data = json.dumps([method, path, body], sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(data.encode()).hexdigest()


def claim(engine: sa.Engine, token: str, key: str, digest: str) -> Replay | None:
    """None when this request is the first with `key` (it is now claimed); else the replay."""
    if not key or len(key) > MAX_KEY:
        raise ValueError(f"Idempotency-Key must be 1 to {MAX_KEY} characters")
    now = utcnow()
    with engine.begin() as conn:
        # Keys older than a day are forgotten; doing it here keeps the table small.
        conn.execute(
            sa.delete(idempotency_table).where(idempotency_table.c.created_at < now - KEEP)
        )
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.insert(idempotency_table).values(
                    token=token, key=key, fingerprint=digest, status_code=0, created_at=now
                )
            )
        return None
    except sa.exc.IntegrityError:
        pass
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(
                idempotency_table.c.fingerprint,
                idempotency_table.c.status_code,
                idempotency_table.c.body,
            ).where(idempotency_table.c.token == token, idempotency_table.c.key == key)
        ).first()
    if row is None:  # expired and removed between the two statements: treat as first
        return claim(engine, token, key, digest)
    if row.fingerprint != digest:
        raise IdempotencyConflict(
            "this Idempotency-Key was used with a different request; use a new key"
        )
    if row.status_code == 0:
        raise IdempotencyConflict("the first request with this Idempotency-Key is still running")
    return Replay(row.status_code, json.loads(row.body) if row.body else None)


def store(engine: sa.Engine, token: str, key: str, status_code: int, body: Any) -> None:
    """Record the reply of the request that claimed `key`."""
    with engine.begin() as conn:
        conn.execute(
            sa.update(idempotency_table)
            .where(idempotency_table.c.token == token, idempotency_table.c.key == key)
            .values(status_code=status_code, body=json.dumps(body, default=str))
        )


def release(engine: sa.Engine, token: str, key: str) -> None:
    """Forget a claim whose request failed, so the client may retry with the same key."""
    with engine.begin() as conn:
        conn.execute(
            sa.delete(idempotency_table).where(
                idempotency_table.c.token == token,
                idempotency_table.c.key == key,
                idempotency_table.c.status_code == 0,
            )
        )
