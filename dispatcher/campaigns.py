"""Loading a recipient list into a campaign: every input row becomes a message with a status.

Rows are written in chunks while the campaign is `loading` (never sent), and one statement
flips it to `running` or `scheduled` at the end, so a failure midway leaves nothing runnable.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from config import Settings
from dispatcher.recipients import RecipientList, Row
from dispatcher.texts import MissingValueError, Template, TextError, check_sender, check_text
from workers.ledger import (
    FINAL,
    CampaignState,
    Status,
    campaign_table,
    message_table,
    suppression_table,
    utcnow,
)
from workers.windows import WindowPlanner, parse_window

C = campaign_table
M = message_table
REF_BYTES = 8  # 64 random bits: unguessable, and collisions need ~4 billion messages
CHUNK_ROWS = 5_000


def new_refs(count: int) -> list[str]:
    """`count` unique-in-practice refs: 13 lowercase base32 characters, URL-safe."""
    raw = os.urandom(REF_BYTES * count)
    return [
        base64.b32encode(raw[i : i + REF_BYTES]).decode().rstrip("=").lower()
        for i in range(0, len(raw), REF_BYTES)
    ]


@dataclass
class LoadRequest:
    """What `sms-dispatch send` asks for."""

    path: Path
    sender: str
    template: str
    name: str | None = None
    region: str | None = None
    column: str | None = None
    send_after: datetime | None = None
    window: str | None = None
    days: str | None = None
    tz: str | None = None
    validity: float | None = None
    schedule_id: int | None = None
    slot: datetime | None = None


@dataclass
class LoadSummary:
    """The outcome of a load (or a dry run): counts by status, parts and estimated cost."""

    campaign: int | None
    state: str
    total: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    segments: int = 0
    estimated_cost: Decimal = Decimal(0)
    name: str = ""
    send_after: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "campaign": self.campaign,
            "state": self.state,
            "total": self.total,
            "counts": dict(sorted(self.counts.items(), key=lambda kv: list(Status).index(kv[0]))),
            "segments": self.segments,
            "estimated_cost": str(self.estimated_cost),
        }


class _Classifier:
    """Turns rows into message values: dedupe, suppression, rendering, segment checks."""

    def __init__(
        self,
        template: Template,
        settings: Settings,
        suppressed: set[str],
        planner: WindowPlanner | None = None,
    ) -> None:
        self.template = template
        self.planner = planner
        self.max_parts = settings.max_parts
        self.batch_size = settings.batch_size
        self.suppressed = suppressed
        self.seen: set[int] = set()  # ints: a million numbers as str would double the memory
        self.queued = 0
        self.segments = 0
        self.counts: dict[str, int] = {}
        # A template without placeholders is the same text for every row: check it once.
        self.fixed_parts = (
            None if template.placeholders else check_text(template.source, self.max_parts).parts
        )

    def classify(self, row: Row) -> tuple[Status, str | None, str | None, int]:
        """(status, error, text or None for the template as is, parts)."""
        if row.error or not row.mobile:
            return Status.INVALID, row.error or "no number", None, 0
        key = int(row.mobile)
        if key in self.seen:
            return Status.DUPLICATE, "already in this list", None, 0
        self.seen.add(key)
        if row.mobile in self.suppressed:
            return Status.SUPPRESSED, "on the opt-out list", None, 0
        if self.fixed_parts is not None:
            return Status.QUEUED, None, None, self.fixed_parts
        try:
            text = self.template.render(row.fields)
            parts = check_text(text, self.max_parts).parts
        except MissingValueError as exc:
            return Status.INVALID, str(exc), None, 0
        except TextError as exc:
            return Status.INVALID, str(exc), None, 0
        return Status.QUEUED, None, text, parts

    def values(self, rows: list[Row], campaign_id: int, now: datetime) -> list[dict[str, Any]]:
        refs = new_refs(len(rows))
        out = []
        for row, ref in zip(rows, refs, strict=True):
            status, error, text, parts = self.classify(row)
            self.counts[status] = self.counts.get(status, 0) + 1
            batch = 0
            send_after = None
            if status is Status.QUEUED:
                if self.planner is not None and row.mobile:
                    send_after = self.planner.send_after(row.mobile)
                batch = self.queued // self.batch_size
                self.queued += 1
                self.segments += parts
            out.append(
                {
                    "campaign_id": campaign_id,
                    "batch": batch,
                    "line": row.line,
                    "ref": ref,
                    "raw_mobile": row.raw[:64],
                    "mobile": row.mobile,
                    "text": text,
                    "parts": parts,
                    "status": str(status),
                    "attempts": 0,
                    "poll_count": 0,
                    "last_error": error,
                    "created_at": now,
                    "final_at": now if status in FINAL else None,
                    "send_after": send_after,
                }
            )
        return out


def load_suppressed(engine: sa.Engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(sa.select(suppression_table.c.mobile)).scalars())


def _insert(conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
    if rows:
        conn.execute(sa.insert(M), rows)


def load_campaign(
    settings: Settings,
    engine: sa.Engine | None,
    request: LoadRequest,
    *,
    dry_run: bool = False,
    progress: Callable[[int], None] | None = None,
    fail_after: int | None = None,
) -> LoadSummary:
    """Validate and load a list. With `dry_run` (or no engine) nothing is written.

    `fail_after` raises after that many rows (for the atomic-load test).
    """
    sender = check_sender(request.sender)
    template = Template(request.template)
    recipients = RecipientList.open(
        request.path, column=request.column, region=request.region or settings.region
    )
    template.check_columns(recipients.columns)
    suppressed = load_suppressed(engine) if engine is not None else set()
    window = parse_window(request.window, request.days)
    planner = None
    if window is not None:
        start = request.send_after or utcnow()
        planner = WindowPlanner(window, request.tz or settings.tz, start)
    classifier = _Classifier(template, settings, suppressed, planner)
    name = request.name or Path(request.path).name
    summary = LoadSummary(None, "dry-run" if dry_run else CampaignState.LOADING, name=name)
    now = utcnow()

    chunks: Iterator[list[Row]] = recipients.chunks(CHUNK_ROWS)
    if dry_run or engine is None:
        for chunk in chunks:
            classifier.values(chunk, 0, now)
            summary.total += len(chunk)
            if progress:
                progress(summary.total)
        return _finish(summary, classifier, settings)

    with engine.begin() as conn:
        campaign_id = conn.execute(
            sa.insert(C)
            .values(
                name=name,
                sender=sender,
                template=template.source,
                state=CampaignState.LOADING,
                source=str(request.path),
                region=recipients.region,
                send_after=request.send_after,
                window=request.window,
                days=request.days,
                tz=request.tz,
                validity=request.validity,
                schedule_id=request.schedule_id,
                slot=request.slot,
                created_at=now,
                total=0,
            )
            .returning(C.c.id)
        ).scalar_one()
    summary.campaign = campaign_id
    try:
        for chunk in chunks:
            values = classifier.values(chunk, campaign_id, now)
            with engine.begin() as conn:
                _insert(conn, values)
            summary.total += len(chunk)
            if fail_after is not None and summary.total >= fail_after:
                raise RuntimeError(f"injected failure after {summary.total} rows")
            if progress:
                progress(summary.total)
        if summary.total == 0:
            raise TextError(f"{request.path}: the list has no recipients")
        state = CampaignState.RUNNING
        if request.send_after is not None and request.send_after > utcnow():
            state = CampaignState.SCHEDULED
        if classifier.queued == 0:
            state = CampaignState.COMPLETED
        flip = (
            sa.update(C)
            .where(C.c.id == campaign_id, C.c.state == CampaignState.LOADING)
            .values(
                state=state,
                total=summary.total,
                started_at=utcnow() if state is CampaignState.RUNNING else None,
                finished_at=utcnow() if state is CampaignState.COMPLETED else None,
            )
        )
        with engine.begin() as conn:
            conn.execute(flip)
    except BaseException:
        discard_campaign(engine, campaign_id)
        raise
    summary.state = state
    summary.send_after = request.send_after
    return _finish(summary, classifier, settings)


def _finish(summary: LoadSummary, classifier: _Classifier, settings: Settings) -> LoadSummary:
    summary.counts = dict(classifier.counts)
    summary.segments = classifier.segments
    summary.estimated_cost = (settings.unit_cost * classifier.segments).quantize(Decimal("0.01"))
    return summary


def discard_campaign(engine: sa.Engine, campaign_id: int) -> None:
    """Remove a campaign that did not finish loading, with every row written so far."""
    with engine.begin() as conn:
        conn.execute(sa.delete(M).where(M.c.campaign_id == campaign_id))
        conn.execute(sa.delete(C).where(C.c.id == campaign_id, C.c.state == CampaignState.LOADING))
