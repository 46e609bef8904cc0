"""Loading a recipient list into a campaign: every input row becomes a message with a status.

Rows are written in chunks while the campaign is `loading` (never sent), and one statement
flips it to `running` or `scheduled` at the end, so a failure midway leaves nothing runnable.
"""

from __future__ import annotations

import base64
import multiprocessing
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from config import Settings
from dispatcher.recipients import RecipientList, Row
from dispatcher.texts import Template, TextError, check_sender, check_text
from workers.ledger import (
    FINAL,
    CampaignState,
    Status,
    campaign_table,
    message_table,
    suppression_table,
    utcnow,
)
from workers.transitions import discard_loading
from workers.windows import WindowPlanner, parse_window

C = campaign_table
M = message_table
REF_BYTES = 10  # 80 random bits: unguessable, and no collision in any realistic ledger
CHUNK_ROWS = 5_000
PARALLEL_MIN_BYTES = 4 * 1024 * 1024  # below this, starting a reader process costs more


def new_refs(count: int) -> list[str]:
    """`count` refs of 16 lowercase base32 characters: short, URL-safe, unguessable."""
    # 10 bytes are exactly 16 base32 characters, so one encode serves the whole chunk.
    text = base64.b32encode(os.urandom(REF_BYTES * count)).decode().lower()
    return [text[i : i + 16] for i in range(0, len(text), 16)]


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


# One list row after the stateless work (number, text, parts), ready for classifying:
# (line, raw number, normalised number or None, why invalid or None, text or None for the
# template as it is, parts, why the text is unusable or None).
Prepared = tuple[int, str, "str | None", "str | None", "str | None", int, "str | None"]


@dataclass(frozen=True)
class TextPlan:
    """How each row's text is made: the template, and its parts when it is fixed."""

    template: Template
    max_parts: int
    fixed_parts: int | None
    # Workers send the campaign's template when a message has no text of its own; a fixed
    # template with `{{`/`}}` renders differently from its source, so its rows carry the text.
    fixed_text: str | None = None

    @classmethod
    def of(cls, template: Template, max_parts: int) -> TextPlan:
        if template.placeholders:
            return cls(template, max_parts, None)
        # A template without placeholders is the same text for every row: check it once.
        text = template.render({})
        parts = check_text(text, max_parts).parts
        return cls(template, max_parts, parts, None if text == template.source else text)

    def prepare(self, rows: list[Row]) -> list[Prepared]:
        """Render and measure each row's text; no shared state, so any process can do it."""
        out: list[Prepared] = []
        for row in rows:
            text, parts, problem = None, 0, None
            if row.mobile and not row.error:
                if self.fixed_parts is not None:
                    text, parts = self.fixed_text, self.fixed_parts
                else:
                    try:
                        text = self.template.render(row.fields)
                        parts = check_text(text, self.max_parts).parts
                    except TextError as exc:  # MissingValueError included
                        text, problem = None, str(exc)
            out.append((row.line, row.raw, row.mobile, row.error, text, parts, problem))
        return out


class _Classifier:
    """Gives prepared rows their status: invalid, duplicate, suppressed or queued."""

    def __init__(
        self,
        plan: TextPlan,
        settings: Settings,
        suppressed: set[str],
        planner: WindowPlanner | None = None,
    ) -> None:
        self.plan = plan
        self.planner = planner
        self.batch_size = settings.batch_size
        self.suppressed = suppressed
        self.seen: set[int] = set()  # ints: a million numbers as str would double the memory
        self.queued = 0
        self.segments = 0
        self.counts: dict[str, int] = {}
        self._stamps: dict[datetime | None, Any] = {}

    def classify(self, item: Prepared) -> tuple[Status, str | None]:
        _, _, mobile, error, _, _, problem = item
        if error or not mobile:
            return Status.INVALID, error or "no number"
        key = int(mobile)
        if key in self.seen:
            return Status.DUPLICATE, "already in this list"
        self.seen.add(key)
        if mobile in self.suppressed:
            return Status.SUPPRESSED, "on the opt-out list"
        if problem:
            return Status.INVALID, problem
        return Status.QUEUED, None

    def values(
        self, items: list[Prepared], campaign_id: int, now: datetime, stamp: Any
    ) -> list[tuple[Any, ...]]:
        """Message rows as tuples in `INSERT_COLUMNS` order; `stamp` formats times."""
        refs = new_refs(len(items))
        at = self._stamp(now, stamp)
        out = []
        for item, ref in zip(items, refs, strict=True):
            line, raw, mobile, _, text, parts, _ = item
            status, error = self.classify(item)
            self.counts[status] = self.counts.get(status, 0) + 1
            batch = 0
            send_after = None
            if status is Status.QUEUED:
                if self.planner is not None and mobile:
                    send_after = self._stamp(self.planner.send_after(mobile), stamp)
                batch = self.queued // self.batch_size
                self.queued += 1
                self.segments += parts
            else:
                text, parts = None, 0
            out.append(
                (campaign_id, batch, line, ref, raw[:64], mobile, text, parts,
                 status.value, 0, 0, error, at, at if status in FINAL else None, send_after)
            )  # fmt: skip
        return out

    def _stamp(self, value: datetime | None, stamp: Any) -> Any:
        # Few distinct times per load (now, and one opening per zone set): format each once.
        try:
            return self._stamps[value]
        except KeyError:
            formatted = self._stamps[value] = None if value is None else stamp(value)
            return formatted


INSERT_COLUMNS = (
    "campaign_id", "batch", "line", "ref", "raw_mobile", "mobile", "text", "parts",
    "status", "attempts", "poll_count", "last_error", "created_at", "final_at", "send_after",
)  # fmt: skip


def time_stamper(dialect: str) -> Any:
    """How `_insert` writes a time: SQLite keeps the naive UTC text SQLAlchemy writes."""
    if dialect == "sqlite":
        return lambda value: value.strftime("%Y-%m-%d %H:%M:%S.%f")
    return lambda value: value


def _insert(conn: sa.Connection, rows: list[tuple[Any, ...]]) -> None:
    """Bulk insert below the ORM: COPY on PostgreSQL, executemany on SQLite.

    Loading is the producer's hot path; SQLAlchemy's per-row bind processing cost as much
    as the database itself.
    """
    if not rows:
        return
    cols = ", ".join(INSERT_COLUMNS)
    raw = conn.connection.driver_connection
    if conn.dialect.name == "postgresql":
        with raw.cursor() as cur, cur.copy(f"COPY message ({cols}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        return
    if conn.dialect.name == "sqlite":
        marks = ", ".join("?" * len(INSERT_COLUMNS))
        raw.executemany(f"INSERT INTO message ({cols}) VALUES ({marks})", rows)
        return
    conn.execute(sa.insert(M), [dict(zip(INSERT_COLUMNS, r, strict=True)) for r in rows])


def _read_chunks(path: Path, column: str | None, region: str, plan: TextPlan, queue: Any) -> None:
    try:
        for chunk in RecipientList.open(path, column=column, region=region).chunks(CHUNK_ROWS):
            queue.put(plan.prepare(chunk))
        queue.put(None)
    except BaseException as exc:  # handed to the parent, which raises it
        queue.put(exc)


def _prepared_chunks(
    recipients: RecipientList, column: str | None, plan: TextPlan
) -> Iterator[list[Prepared]]:
    """The list's rows, prepared; a big list is read in a second process meanwhile.

    Reading, parsing numbers and rendering texts take about one core, and writing rows
    another, so overlapping them nearly doubles the load rate on a two-core machine.
    """
    if recipients.path.stat().st_size < PARALLEL_MIN_BYTES:
        for chunk in recipients.chunks(CHUNK_ROWS):
            yield plan.prepare(chunk)
        return
    ctx = multiprocessing.get_context("spawn")  # no fork: the caller may hold threads/sockets
    queue = ctx.Queue(maxsize=4)  # a few chunks ahead at most: flat memory
    reader = ctx.Process(
        target=_read_chunks,
        args=(recipients.path, column, recipients.region, plan, queue),
        daemon=True,
    )
    reader.start()
    try:
        while True:
            item = queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        if reader.is_alive():
            reader.terminate()
        reader.join(5)


def load_suppressed(engine: sa.Engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(sa.select(suppression_table.c.mobile)).scalars())


def load_campaign(
    settings: Settings,
    engine: sa.Engine | None,
    request: LoadRequest,
    *,
    dry_run: bool = False,
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
    plan = TextPlan.of(template, settings.max_parts)
    classifier = _Classifier(plan, settings, suppressed, planner)
    name = request.name or Path(request.path).name
    summary = LoadSummary(None, "dry-run" if dry_run else CampaignState.LOADING, name=name)
    now = utcnow()

    chunks = _prepared_chunks(recipients, request.column, plan)
    if dry_run or engine is None:
        for chunk in chunks:
            classifier.values(chunk, 0, now, time_stamper("none"))
            summary.total += len(chunk)
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
    stamp = time_stamper(engine.dialect.name)
    try:
        for chunk in chunks:
            values = classifier.values(chunk, campaign_id, now, stamp)
            with engine.begin() as conn:
                _insert(conn, values)
            summary.total += len(chunk)
            if fail_after is not None and summary.total >= fail_after:
                raise RuntimeError(f"injected failure after {summary.total} rows")
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
        discard_loading(engine, campaign_id)
        raise
    summary.state = state
    summary.send_after = request.send_after
    return _finish(summary, classifier, settings)


def _finish(summary: LoadSummary, classifier: _Classifier, settings: Settings) -> LoadSummary:
    summary.counts = dict(classifier.counts)
    summary.segments = classifier.segments
    summary.estimated_cost = (settings.unit_cost * classifier.segments).quantize(Decimal("0.01"))
    return summary
