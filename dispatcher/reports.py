"""What operators read: campaign status objects and the per-row CSV report."""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Iterable, Iterator, Sequence
from decimal import Decimal
from typing import IO, Any

import sqlalchemy as sa

from dispatcher.recipients import RecipientList
from workers import ledger_reads
from workers.ledger import (
    FINAL,
    CampaignState,
    Priority,
    Purpose,
    Status,
    campaign_table,
    campaign_tally_table,
    message_table,
    utcnow,
)
from workers.windows import ZONES_NOTE

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


def campaign_cost(engine: sa.Engine, campaign_id: int) -> Decimal:
    """The sum of the gateway's prices, from the campaign's tally (a few rows to read)."""
    return ledger_reads.campaign_cost(engine, campaign_id)


@dataclasses.dataclass(frozen=True, slots=True)
class CampaignStatus:
    """One campaign's status, as `status` prints it; `as_dict()` is the `status --json`
    object the API and the dashboard show too (these fields, in this order)."""

    campaign: int
    name: str
    state: CampaignState
    reason: str | None  # why it is paused or cancelled
    total: int
    counts: dict[str, int]  # messages by status, in the lifecycle's order
    final: int
    cost: str  # the gateway's prices, at least two decimals
    done: bool  # every message final
    waiting_for_window: int
    window_opens: str | None  # UTC, ISO: when the first waiting message's window opens
    partial_zones: int  # waiting messages sent in the window of only some of their zones
    send_after: str | None
    created_at: str
    priority: Priority
    max_cost: str | None
    purpose: Purpose
    personal_data_removed_at: str | None  # retention blanked its numbers and texts then

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def campaign_status(engine: sa.Engine, campaign_id: int) -> CampaignStatus:
    """One campaign's status."""
    campaign = ledger_reads.get_campaign(engine, campaign_id)
    counts = ledger_reads.status_counts(engine, campaign_id)
    return _status_object(
        campaign,
        counts,
        campaign_cost(engine, campaign_id),
        waiting=ledger_reads.waiting_for_window(engine, campaign_id),
        opens=_window_opens(engine, campaign_id),
        # Only a send window leaves zones out; without one, no need to look at every row.
        partial=_partial_zones(engine, campaign_id) if campaign.window else 0,
    )


def _status_object(
    campaign: sa.Row[Any],
    counts: dict[str, int],
    cost: Decimal,
    *,
    waiting: int,
    opens: str | None,
    partial: int,
) -> CampaignStatus:
    """One campaign's status from what was read for it (one shape for one and for all)."""
    total = sum(counts.values())
    final = sum(n for status, n in counts.items() if status in FINAL)
    return CampaignStatus(
        campaign=campaign.id,
        name=campaign.name,
        state=campaign.state,
        reason=campaign.reason,
        total=total,
        counts=_ordered(counts),
        final=final,
        cost=money(cost),
        done=total > 0 and final == total,
        waiting_for_window=waiting,
        window_opens=opens,
        partial_zones=partial,
        send_after=campaign.send_after.isoformat() if campaign.send_after else None,
        created_at=campaign.created_at.isoformat(),
        priority=campaign.priority,
        max_cost=money(campaign.max_cost) if campaign.max_cost is not None else None,
        purpose=campaign.purpose,
        # Retention blanked the numbers and texts (counts, costs and times stay).
        personal_data_removed_at=_iso(campaign.personal_data_removed_at) or None,
    )


def _window_opens(engine: sa.Engine, campaign_id: int) -> str | None:
    """When the next waiting message's send window opens (UTC, ISO), if one is waiting."""
    stmt = sa.select(sa.func.min(message_table.c.send_after)).where(
        message_table.c.campaign_id == campaign_id,
        message_table.c.status == Status.QUEUED,
        message_table.c.send_after > utcnow(),
    )
    with engine.connect() as conn:
        found = conn.execute(stmt).scalar_one()
    return None if found is None else found.isoformat()  # min() keeps the column's UTC type


def _partial_zones(engine: sa.Engine, campaign_id: int) -> int:
    """Waiting messages whose zones' windows never overlap (planner's note in last_error)."""
    stmt = sa.select(sa.func.count()).where(
        message_table.c.campaign_id == campaign_id,
        message_table.c.status == Status.QUEUED,
        message_table.c.last_error.like(f"{ZONES_NOTE}%"),
    )
    with engine.connect() as conn:
        return int(conn.execute(stmt).scalar_one())


def all_statuses(engine: sa.Engine) -> list[CampaignStatus]:
    """Every campaign's status, newest first."""
    return statuses(engine)


def statuses(engine: sa.Engine, ids: Sequence[int] | None = None) -> list[CampaignStatus]:
    """The statuses of campaigns `ids` (every campaign when None), newest first.

    The same as `campaign_status` gives one by one, but read for all at once: the
    campaign rows, their tallies grouped in one query, and the window counts only of campaigns
    whose tally still shows queued messages (finished ones have none). A listing of hundreds
    of campaigns is then a few statements, not a few per campaign.
    """
    if ids is not None and not ids:
        return []
    campaigns = sa.select(campaign_table).order_by(campaign_table.c.id.desc())
    tally = sa.select(
        campaign_tally_table.c.campaign_id,
        campaign_tally_table.c.status,
        sa.func.sum(campaign_tally_table.c.n),
        sa.func.sum(campaign_tally_table.c.cost),
    )
    if ids is not None:
        campaigns = campaigns.where(campaign_table.c.id.in_(ids))
        tally = tally.where(campaign_tally_table.c.campaign_id.in_(ids))
    counts: dict[int, dict[str, int]] = {}
    costs: dict[int, Decimal] = {}
    with engine.connect() as conn:
        rows = conn.execute(campaigns).all()
        for cid, status, n, cost in conn.execute(
            tally.group_by(campaign_tally_table.c.campaign_id, campaign_tally_table.c.status)
        ):
            if n:
                counts.setdefault(cid, {})[status] = int(n)
            costs[cid] = costs.get(cid, Decimal(0)) + Decimal(str(cost or 0))
        queued = [r for r in rows if counts.get(r.id, {}).get(Status.QUEUED)]
        waiting = _window_waits(conn, [r.id for r in queued])
        # Only a send window leaves zones out (as in `campaign_status`).
        partial = _zone_notes(conn, [r.id for r in queued if r.window])
    return [
        _status_object(
            r,
            counts.get(r.id, {}),
            costs.get(r.id, Decimal(0)),
            waiting=waiting.get(r.id, NONE_WAITING)[0],
            opens=waiting.get(r.id, NONE_WAITING)[1],
            partial=partial.get(r.id, 0),
        )
        for r in rows
    ]


NONE_WAITING: tuple[int, str | None] = (0, None)


def _window_waits(conn: sa.Connection, ids: list[int]) -> dict[int, tuple[int, str | None]]:
    """(messages held for their window, when the first opens) of each campaign in `ids`."""
    if not ids:
        return {}
    stmt = (
        sa.select(
            message_table.c.campaign_id, sa.func.count(), sa.func.min(message_table.c.send_after)
        )
        .where(
            message_table.c.campaign_id.in_(ids),
            message_table.c.status == Status.QUEUED,
            message_table.c.send_after > utcnow(),
        )
        .group_by(message_table.c.campaign_id)
    )
    return {cid: (int(n), first.isoformat()) for cid, n, first in conn.execute(stmt)}


def _zone_notes(conn: sa.Connection, ids: list[int]) -> dict[int, int]:
    """Waiting messages left out of some of their zones, of each campaign in `ids`."""
    if not ids:
        return {}
    stmt = (
        sa.select(message_table.c.campaign_id, sa.func.count())
        .where(
            message_table.c.campaign_id.in_(ids),
            message_table.c.status == Status.QUEUED,
            message_table.c.last_error.like(f"{ZONES_NOTE}%"),
        )
        .group_by(message_table.c.campaign_id)
    )
    return {cid: int(n) for cid, n in conn.execute(stmt)}


def escape_cell(value: object) -> str:
    """A cell a spreadsheet will show as text, never run as a formula."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


def _iso(value: Any) -> str:
    return value.isoformat() if value is not None else ""


class ReportRows:
    """Every input row of a campaign, in list order, streamed page by page; `header` names
    the columns: the outcome's, then the list's own (read again from the list file).

    The list's columns come only when the file is still there and still holds the same
    numbers on the same lines (checked row by row); otherwise `note` says why they are not.
    """

    def __init__(self, engine: sa.Engine, campaign_id: int, page: int = 10_000) -> None:
        campaign = ledger_reads.get_campaign(engine, campaign_id)
        self.engine, self.campaign_id, self.page = engine, campaign_id, page
        self.header = list(REPORT_COLUMNS)
        self.note: str | None = None
        removed = getattr(campaign, "personal_data_removed_at", None)  # retention ran
        self._list = None if removed else _reopen(campaign.source, campaign.region)
        if self._list is not None and self._list.columns != ["mobile"]:
            taken = set(self.header)
            self.header += [f"list:{c}" if c in taken else c for c in self._list.columns]
        else:
            self._list = None

    def __iter__(self) -> Iterator[list[str]]:
        columns = self._list.columns if self._list is not None else []
        records = self._list._records() if self._list is not None else None
        width = len(self.header) - len(REPORT_COLUMNS)
        pending: tuple[int, str, dict[str, str]] | None = None
        for row, line, raw in _outcome_rows(self.engine, self.campaign_id, self.page):
            if records is not None:
                try:
                    while pending is None or pending[0] < line:
                        pending = next(records)
                except (StopIteration, ValueError):
                    pending = None
                if pending is None or pending[0] != line or pending[1][:64] != raw:
                    records, self.note = None, "the list file changed since the load"
                    row += [""] * width
                else:
                    row += [escape_cell(pending[2].get(c, "")) for c in columns]
            elif width:
                row += [""] * width
            yield row


def _reopen(source: str | None, region: str | None) -> RecipientList | None:
    if not source:
        return None
    try:
        return RecipientList.open(source, region=region or "SE")
    except (ValueError, OSError):
        return None  # moved, changed beyond reading: the report goes without its columns


def report_rows(engine: sa.Engine, campaign_id: int, page: int = 10_000) -> ReportRows:
    """Every input row of a campaign, in list order, with the list's own columns."""
    return ReportRows(engine, campaign_id, page)


def _outcome_rows(
    engine: sa.Engine, campaign_id: int, page: int
) -> Iterator[tuple[list[str], int, str]]:
    """(outcome cells, line, number as given) of every message, in list order."""
    last = -1
    cols = [
        message_table.c.id,
        message_table.c.line,
        message_table.c.raw_mobile,
        message_table.c.mobile,
        message_table.c.ref,
        message_table.c.status,
        message_table.c.last_error,
        message_table.c.attempts,
        message_table.c.cost,
        message_table.c.submitted_at,
        message_table.c.accepted_at,
        message_table.c.final_at,
    ]
    while True:
        stmt = (
            sa.select(*cols)
            .where(message_table.c.campaign_id == campaign_id, message_table.c.id > last)
            .order_by(message_table.c.id)
            .limit(page)
        )
        with engine.connect() as conn:
            rows = conn.execute(stmt).all()
        if not rows:
            return
        for r in rows:
            cells = [
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
            yield cells, r.line, r.raw_mobile or ""
        last = rows[-1].id


def report_csv(rows: Iterable[list[str]], piece: int = 64 * 1024) -> Iterator[str]:
    """The report's CSV text (header first) in pieces of about `piece` characters.

    `report --out` and the API's report.csv both write these pieces: one file, byte for byte.
    """
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(getattr(rows, "header", REPORT_COLUMNS))
    for row in rows:
        writer.writerow(row)
        if buf.tell() >= piece:
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue()


def write_report(engine: sa.Engine, campaign_id: int, out: IO[str]) -> int:
    """Write the CSV report; returns the number of rows written."""
    count = 0

    rows = report_rows(engine, campaign_id)

    class Counted:
        header = rows.header

        def __iter__(self) -> Iterator[list[str]]:
            nonlocal count
            for row in rows:
                count += 1
                yield row

    for text in report_csv(Counted()):
        out.write(text)
    return count
