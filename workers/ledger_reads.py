"""Read queries over the ledger: a campaign, its lane, its messages per status and its cost
(from the tally), what waits for a window and what was spent. `fold_tallies` keeps each
campaign's tally a few rows long, so these reads stay small however big the campaign.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from config import UserError
from workers.ledger import (
    CampaignState,
    Priority,
    Status,
    campaign_table,
    campaign_tally_table,
    message_table,
    utcnow,
)

campaigns = campaign_table
messages = message_table
tallies = campaign_tally_table


class CampaignNotFound(UserError, LookupError):
    """No campaign has that id."""


def campaign_lane(engine: sa.Engine, campaign_id: int) -> str:
    """The campaign's lane (`high`, `normal`, `low`); `normal` for one that is gone."""
    with engine.connect() as conn:
        lane = conn.execute(
            sa.select(campaigns.c.priority).where(campaigns.c.id == campaign_id)
        ).scalar()
    return str(lane or Priority.NORMAL)


def campaigns_in_state(engine: sa.Engine, state: CampaignState) -> list[int]:
    with engine.connect() as conn:
        return list(
            conn.execute(sa.select(campaigns.c.id).where(campaigns.c.state == state)).scalars()
        )


def get_campaign(engine: sa.Engine, campaign_id: int) -> sa.Row[Any]:
    with engine.connect() as conn:
        row = conn.execute(sa.select(campaigns).where(campaigns.c.id == campaign_id)).first()
    if row is None:
        raise CampaignNotFound(f"no campaign {campaign_id}")
    return row


def status_counts(engine: sa.Engine, campaign_id: int) -> dict[str, int]:
    """Messages per status, from the campaign's tally (a few rows, however big it is)."""
    stmt = (
        sa.select(tallies.c.status, sa.func.sum(tallies.c.n))
        .where(tallies.c.campaign_id == campaign_id)
        .group_by(tallies.c.status)
    )
    with engine.connect() as conn:
        return {status: int(n) for status, n in conn.execute(stmt) if n}


def counted_status(engine: sa.Engine, campaign_id: int) -> dict[str, int]:
    """Messages per status counted row by row: what the tally must always equal."""
    stmt = (
        sa.select(messages.c.status, sa.func.count())
        .where(messages.c.campaign_id == campaign_id)
        .group_by(messages.c.status)
    )
    with engine.connect() as conn:
        return {status: n for status, n in conn.execute(stmt)}


def campaign_cost(engine: sa.Engine, campaign_id: int) -> Decimal:
    """What the gateway reported the campaign's messages cost, from its tally."""
    stmt = sa.select(sa.func.coalesce(sa.func.sum(tallies.c.cost), 0)).where(
        tallies.c.campaign_id == campaign_id
    )
    with engine.connect() as conn:
        return Decimal(str(conn.execute(stmt).scalar_one()))


_FOLD_PG = sa.text(
    "WITH gone AS (DELETE FROM campaign_tally WHERE campaign_id = :c RETURNING status, n, cost) "
    "INSERT INTO campaign_tally (campaign_id, status, n, cost) "
    "SELECT :c, status, sum(n), sum(cost) FROM gone GROUP BY status "
    "HAVING sum(n) <> 0 OR sum(cost) <> 0"
)


def fold_tallies(engine: sa.Engine, min_rows: int = 64) -> int:
    """Fold each campaign's tally deltas into one row per status; returns campaigns folded."""
    many = (
        sa.select(tallies.c.campaign_id)
        .group_by(tallies.c.campaign_id)
        .having(sa.func.count() > min_rows)
        .limit(1000)
    )
    with engine.connect() as conn:
        folded = list(conn.execute(many).scalars())
    for campaign_id in folded:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # One statement: a concurrent fold waits for this one and then finds nothing.
                conn.execute(_FOLD_PG, {"c": campaign_id})
                continue
            # SQLite: the transaction holds the write lock (BEGIN IMMEDIATE) throughout.
            top = conn.execute(
                sa.select(sa.func.max(tallies.c.id)).where(tallies.c.campaign_id == campaign_id)
            ).scalar()
            sums = conn.execute(
                sa.select(tallies.c.status, sa.func.sum(tallies.c.n), sa.func.sum(tallies.c.cost))
                .where(tallies.c.campaign_id == campaign_id, tallies.c.id <= top)
                .group_by(tallies.c.status)
            ).all()
            conn.execute(
                sa.delete(tallies).where(tallies.c.campaign_id == campaign_id, tallies.c.id <= top)
            )
            rows = [
                {"campaign_id": campaign_id, "status": s, "n": int(n), "cost": c}
                for s, n, c in sums
                if n or c
            ]
            if rows:
                conn.execute(sa.insert(tallies), rows)
    return len(folded)


def waiting_for_window(engine: sa.Engine, campaign_id: int) -> int:
    now = utcnow()
    stmt = sa.select(sa.func.count()).where(
        messages.c.campaign_id == campaign_id,
        messages.c.status == Status.QUEUED,
        messages.c.send_after > now,
    )
    with engine.connect() as conn:
        return int(conn.execute(stmt).scalar_one())


def spent_since(
    engine: sa.Engine,
    since: datetime,
    campaign_id: int | None,
    unit: Any,
    exclude_claim: str | None = None,
) -> Any:
    """What messages handed to the gateway since `since` cost (estimated until reported).

    `exclude_claim` leaves out the rows of the batch that is asking (it books them itself).
    """
    handed = [Status.SUBMITTING, Status.ACCEPTED, Status.SENT, Status.DELIVERED]
    handed += [Status.UNDELIVERED, Status.EXPIRED, Status.UNKNOWN]
    cost = sa.func.coalesce(messages.c.cost, messages.c.parts * sa.literal(unit, sa.Numeric(12, 5)))
    stmt = sa.select(sa.func.coalesce(sa.func.sum(cost), 0)).where(
        messages.c.status.in_([s.value for s in handed]), messages.c.submitted_at >= since
    )
    if campaign_id is not None:
        stmt = stmt.where(messages.c.campaign_id == campaign_id)
    if exclude_claim is not None:
        stmt = stmt.where(sa.or_(messages.c.claim.is_(None), messages.c.claim != exclude_claim))
    with engine.connect() as conn:
        return conn.execute(stmt).scalar_one()
