"""What operators read: campaign status objects and the per-row CSV report."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from decimal import Decimal
from typing import IO, Any

import sqlalchemy as sa

from workers import transitions
from workers.ledger import FINAL, Status, campaign_table, message_table

C = campaign_table
M = message_table
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
REPORT_COLUMNS = [
    "line",
    "mobile_as_given",
    "mobile",
    "ref",
    "status",
    "error",
    "attempts",
    "cost",
    "submitted_at",
    "accepted_at",
    "final_at",
]


def _ordered(counts: dict[str, int]) -> dict[str, int]:
    order = {s.value: i for i, s in enumerate(Status)}
    return dict(sorted(counts.items(), key=lambda kv: order.get(kv[0], 99)))


def money(amount: Decimal) -> str:
    """At least two decimals, more only when the gateway's prices have them."""
    amount = amount.normalize()
    exponent = int(amount.as_tuple().exponent)
    return f"{amount:.{max(2, -exponent)}f}"


def campaign_status(engine: sa.Engine, campaign_id: int) -> dict[str, Any]:
    """The `status --json` object of one campaign."""
    campaign = transitions.get_campaign(engine, campaign_id)
    counts = transitions.status_counts(engine, campaign_id)
    total = sum(counts.values())
    final = sum(n for status, n in counts.items() if status in FINAL)
    cost: Decimal = transitions.campaign_cost(engine, campaign_id)
    return {
        "campaign": campaign.id,
        "name": campaign.name,
        "state": campaign.state,
        "reason": campaign.reason,
        "total": total,
        "counts": _ordered(counts),
        "final": final,
        "cost": money(cost),
        "done": total > 0 and final == total,
        "waiting_for_window": transitions.waiting_for_window(engine, campaign_id),
        "send_after": campaign.send_after.isoformat() if campaign.send_after else None,
        "created_at": campaign.created_at.isoformat(),
    }


def all_statuses(engine: sa.Engine) -> list[dict[str, Any]]:
    """Every campaign's status object, newest first."""
    with engine.connect() as conn:
        ids = conn.execute(sa.select(C.c.id).order_by(C.c.id.desc())).scalars().all()
    return [campaign_status(engine, cid) for cid in ids]


def escape_cell(value: object) -> str:
    """A cell a spreadsheet will show as text, never run as a formula."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


def _iso(value: Any) -> str:
    return value.isoformat() if value is not None else ""


def report_rows(engine: sa.Engine, campaign_id: int, page: int = 10_000) -> Iterator[list[str]]:
    """Every input row of a campaign, in list order, streamed page by page."""
    transitions.get_campaign(engine, campaign_id)
    last = -1
    cols = [
        M.c.id,
        M.c.line,
        M.c.raw_mobile,
        M.c.mobile,
        M.c.ref,
        M.c.status,
        M.c.last_error,
        M.c.attempts,
        M.c.cost,
        M.c.submitted_at,
        M.c.accepted_at,
        M.c.final_at,
    ]
    while True:
        stmt = (
            sa.select(*cols)
            .where(M.c.campaign_id == campaign_id, M.c.id > last)
            .order_by(M.c.id)
            .limit(page)
        )
        with engine.connect() as conn:
            rows = conn.execute(stmt).all()
        if not rows:
            return
        for r in rows:
            yield [
                str(r.line),
                escape_cell(r.raw_mobile),
                escape_cell(r.mobile),
                escape_cell(r.ref),
                r.status,
                escape_cell(r.last_error),
                str(r.attempts),
                "" if r.cost is None else str(Decimal(r.cost).normalize()),
                _iso(r.submitted_at),
                _iso(r.accepted_at),
                _iso(r.final_at),
            ]
        last = rows[-1].id


def write_report(engine: sa.Engine, campaign_id: int, out: IO[str]) -> int:
    """Write the CSV report; returns the number of rows written."""
    writer = csv.writer(out)
    writer.writerow(REPORT_COLUMNS)
    count = 0
    for row in report_rows(engine, campaign_id):
        writer.writerow(row)
        count += 1
    return count
