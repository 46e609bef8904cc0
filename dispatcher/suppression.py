"""The opt-out list: numbers that are never sent to, kept normalised."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import sqlalchemy as sa

from workers.ledger import suppression_table, utcnow

S = suppression_table


def add_numbers(engine: sa.Engine, numbers: Iterable[str]) -> int:
    """Add normalised numbers; returns how many were new."""
    wanted = sorted(set(numbers))
    if not wanted:
        return 0
    now = utcnow()
    with engine.begin() as conn:
        existing = set()
        for start in range(0, len(wanted), 1000):
            part = wanted[start : start + 1000]
            existing |= set(
                conn.execute(sa.select(S.c.mobile).where(S.c.mobile.in_(part))).scalars()
            )
        new = [{"mobile": m, "created_at": now} for m in wanted if m not in existing]
        if new:
            conn.execute(sa.insert(S), new)
    return len(new)


def remove_numbers(engine: sa.Engine, numbers: Iterable[str]) -> int:
    with engine.begin() as conn:
        result = conn.execute(sa.delete(S).where(S.c.mobile.in_(sorted(set(numbers)))))
    return int(result.rowcount or 0)


def list_numbers(engine: sa.Engine) -> Iterator[str]:
    with engine.connect() as conn:
        yield from conn.execute(sa.select(S.c.mobile).order_by(S.c.mobile)).scalars()
