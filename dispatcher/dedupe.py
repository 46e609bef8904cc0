"""Dedupe keys across a schedule's firings: a list re-read every hour reminds each booking
once. A key counts as reminded while its message waits or is at the gateway, and once the
gateway took it (delivered, undelivered, expired, unknown); a message that was never sent
(rejected, failed, cancelled, skipped) leaves its key free for the next firing."""

from __future__ import annotations

import sqlalchemy as sa

from workers.ledger import AT_GATEWAY, WAITING, Status, campaign_table, message_table

REMINDED = frozenset(
    WAITING | AT_GATEWAY | {Status.DELIVERED, Status.UNDELIVERED, Status.EXPIRED, Status.UNKNOWN}
)
_PIECE = 1000  # keys per query: well inside every backend's bound-parameter limit


def reminded_keys(
    engine: sa.Engine, schedule_id: int, campaign_id: int, keys: list[str]
) -> dict[str, int]:
    """Of `keys`, those an earlier campaign of the schedule reminded: key -> first campaign."""
    found: dict[str, int] = {}
    unique = list(dict.fromkeys(keys))
    with engine.connect() as conn:
        for start in range(0, len(unique), _PIECE):
            stmt = (
                sa.select(message_table.c.dedupe_key, sa.func.min(message_table.c.campaign_id))
                .join(campaign_table, campaign_table.c.id == message_table.c.campaign_id)
                .where(
                    message_table.c.dedupe_key.in_(unique[start : start + _PIECE]),
                    message_table.c.status.in_([s.value for s in REMINDED]),
                    campaign_table.c.schedule_id == schedule_id,
                    campaign_table.c.id != campaign_id,
                )
                .group_by(message_table.c.dedupe_key)
            )
            found.update({key: campaign for key, campaign in conn.execute(stmt)})
    return found
