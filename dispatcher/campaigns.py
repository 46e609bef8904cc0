"""Loading a recipient list into a campaign: every input row becomes a message with a status.

Rows are written in chunks while the campaign is `loading` (never sent), and one statement
flips it to `running` or `scheduled` at the end, so a failure midway leaves nothing runnable.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections import deque
from collections.abc import Callable, Container, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from config import Settings
from dispatcher.consent import NO_CONSENT_NOTE, check_consent_column, check_purpose, has_consent
from dispatcher.dedupe import reminded_keys
from dispatcher.recipients import RecipientList, RecipientListError, Row
from dispatcher.sendtimes import (
    AmbiguousDates,
    RowTime,
    RowTimeError,
    SendTimes,
    check_date_order,
    find_column,
    parse_offset,
    utc_text,
)
from dispatcher.suppression import ERASED_NOTE, is_erased, load_suppressed, suppressed_note
from dispatcher.texts import (
    Template,
    TextError,
    check_sender,
    check_text,
    gsm7_parts,
    gsm_safe,
    has_ucs2,
    ucs2_characters,
)
from dispatcher.time_options import read_window
from workers import outbox
from workers.campaign_moves import discard_loading
from workers.ledger import (
    FINAL,
    CampaignState,
    Priority,
    Purpose,
    Status,
    campaign_table,
    message_table,
    utcnow,
)
from workers.wallclock import TimingError, zone
from workers.windows import SendWindow, WindowPlanner, opening, zones_for_number

CHUNK_ROWS = 5_000
PARALLEL_MIN_BYTES = 4 * 1024 * 1024  # below this, starting a reader process costs more
PROBLEM_ROWS = 20  # rows that will not be sent, shown in a summary so a list can be fixed


# Each random byte picks one of the 32 base32 characters by its low 5 bits (256 is a multiple
# of 32, so every character is equally likely): each character carries 5 random bits, as
# base32 would, but bytes.translate does it in C (base64.b32encode is pure Python and cost
# a second per million refs).
_REF_ALPHABET = b"abcdefghijklmnopqrstuvwxyz234567"
_REF_TABLE = bytes(_REF_ALPHABET[b & 31] for b in range(256))
REF_CHARS = 16


# A ref starts with 5 characters of the clock (10 ms steps, 25 bits: they wrap every 3.9 days)
# and ends with 11 random ones (55 bits). Refs made together sit side by side in the unique
# index, so a load writes to a few of its pages instead of a random page per row: 80 random
# bits cost about a tenth of a million-row load's speed on PostgreSQL. 55 bits among the refs
# of one 10 ms step (at most a few chunks of 5,000) are still unguessable and never collide
# in practice; the unique index would refuse a collision rather than let two messages share
# a ref.
_REF_CLOCK_SHIFTS = (20, 15, 10, 5, 0)


def new_refs(count: int) -> list[str]:
    """`count` refs of 16 lowercase base32 characters: short, URL-safe, unguessable."""
    tick = time.time_ns() // 10_000_000
    prefix = "".join(chr(_REF_ALPHABET[(tick >> shift) & 31]) for shift in _REF_CLOCK_SHIFTS)
    rest = REF_CHARS - len(prefix)
    text = os.urandom(rest * count).translate(_REF_TABLE).decode("ascii")
    return [prefix + text[i : i + rest] for i in range(0, len(text), rest)]


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
    purpose: Purpose = Purpose.SERVICE  # marketing needs consent_column
    consent_column: str | None = None
    encoding: str | None = None  # of a text list; None: detected
    sheet: str | None = None  # of a workbook; None: the first
    landlines: bool = False  # numbers that cannot receive a text are sent too
    webhook_url: str | None = None  # this campaign's webhook receiver; None: the setting
    # Lanes and budgets, per-row times and dedupe keys (issue 13).
    priority: Priority = Priority.NORMAL
    max_cost: Decimal | None = None  # the most the campaign may cost; None: no limit
    send_at_column: str | None = None  # each row's own time (an appointment)
    before: str | None = None  # send this long before the row's time ("24h", "1d")
    after: str | None = None  # or this long after it
    date_order: str | None = None  # "dmy" or "mdy", for dates like 03/04/2026
    dedupe_column: str | None = None  # one message per value of this column (a booking id)
    gsm_safe: bool = False  # typographic quotes, dashes, ... in the template made GSM-7


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
    sample: str | None = None  # the first text that will be sent
    ucs2_characters: list[str] = field(default_factory=list)  # what makes texts UCS-2
    problems: list[dict[str, Any]] = field(default_factory=list)  # the first unsendable rows
    source: str = ""  # which column the numbers came from, and the encoding read
    priority: Priority = Priority.NORMAL
    ucs2_texts: int = 0  # texts sent as UCS-2
    gsm7_segments: int = 0  # the parts they would all take without their UCS-2 characters
    ucs2_extra_cost: Decimal = Decimal(0)  # what the UCS-2 characters add to the estimate
    gsm_replaced: int = 0  # characters --gsm-safe replaced in the template

    def as_dict(self) -> dict[str, Any]:
        return {
            "campaign": self.campaign,
            "state": self.state,
            "total": self.total,
            "counts": dict(
                sorted(self.counts.items(), key=lambda kv: list(Status).index(Status(kv[0])))
            ),
            "segments": self.segments,
            "estimated_cost": str(self.estimated_cost),
            "sample": self.sample,
            "ucs2_characters": self.ucs2_characters,
            "problems": self.problems,
            "source": self.source,
            "priority": str(self.priority),
            "ucs2_texts": self.ucs2_texts,
            "ucs2_extra_cost": str(self.ucs2_extra_cost),
            "gsm_safe_replaced": self.gsm_replaced,
        }


# One list row after the stateless work (number, text, parts), ready for classifying:
# (line, raw number, normalised number or None, why invalid or None, text or None for the
# template as it is, parts, why the text is unusable or None, (the row's own send time and
# deadline or None, its dedupe key or None)).
RowExtra = tuple["RowTime | None", "str | None"]
Prepared = tuple[int, str, "str | None", "str | None", "str | None", int, "str | None", RowExtra]
NO_EXTRA: RowExtra = (None, None)


@dataclass(frozen=True)
class TextPlan:
    """How each row's text is made: the template, and its parts when it is fixed."""

    template: Template
    max_parts: int
    fixed_parts: int | None
    # Workers send the campaign's template when a message has no text of its own; a fixed
    # template with `{{`/`}}` renders differently from its source, so its rows carry the text.
    fixed_text: str | None = None
    # Marketing: rows whose cell here is not a yes are not sent (no_consent).
    consent_column: str | None = None
    send_times: SendTimes | None = None  # each row's send time from its own cell
    dedupe_column: str | None = None  # each row's dedupe key

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
                if self.consent_column and not has_consent(row.fields.get(self.consent_column)):
                    problem = NO_CONSENT_NOTE
                elif self.fixed_parts is not None:
                    text, parts = self.fixed_text, self.fixed_parts
                else:
                    try:
                        text = self.template.render(row.fields)
                        parts = check_text(text, self.max_parts).parts
                    except TextError as exc:  # MissingValueError included
                        text, problem = None, str(exc)
            extra = NO_EXTRA
            if row.mobile and not row.error and (self.send_times or self.dedupe_column):
                extra, found = self._extra(row)
                problem = problem or found
            out.append((row.line, row.raw, row.mobile, row.error, text, parts, problem, extra))
        return out

    def _extra(self, row: Row) -> tuple[RowExtra, str | None]:
        """The row's own time and dedupe key, or why the row cannot be sent."""
        key = None
        if self.dedupe_column:
            key = (row.fields.get(self.dedupe_column) or "").strip()[:200]
            if not key:
                return NO_EXTRA, f"empty {self.dedupe_column}"
        when = None
        if self.send_times and row.mobile:
            try:
                when = self.send_times.for_row(row.fields.get(self.send_times.column), row.mobile)
            except RowTimeError as exc:
                return (None, key), str(exc)
            except AmbiguousDates as exc:
                raise AmbiguousDates(f"line {row.line}: {exc}") from None
        return (when, key), None


class _Classifier:
    """Gives prepared rows their status: invalid, duplicate, suppressed or queued."""

    def __init__(
        self,
        plan: TextPlan,
        settings: Settings,
        suppressed: Container[str],
        planner: WindowPlanner | None = None,
        timing: _RowTiming | None = None,
        earlier: Callable[[list[str]], dict[str, int]] | None = None,
    ) -> None:
        self.plan = plan
        self.planner = planner
        self.timing = timing
        # A schedule's dedupe keys already reminded by its earlier firings: key -> campaign.
        self.earlier = earlier
        self.earlier_keys: dict[str, int] = {}
        self.keys: set[str] = set()  # dedupe keys met in this list
        self.batch_size = settings.batch_size
        self.suppressed = suppressed
        self.seen: set[int] = set()  # ints: a million numbers as str would double the memory
        self.queued = 0
        self.segments = 0
        self.counts: dict[str, int] = {}
        self._stamps: dict[datetime | None, Any] = {}
        self.sample: str | None = None
        self.problems: list[dict[str, Any]] = []
        # A fixed text is checked once; rendered ones row by row (a name can bring a UCS-2 letter).
        fixed = plan.fixed_text or plan.template.source
        self.ucs2: set[str] = ucs2_characters(fixed) if plan.fixed_parts is not None else set()
        self.ucs2_texts = 0
        self.gsm7_segments = 0  # what the queued texts would take without UCS-2 characters
        self.fixed_gsm7 = gsm7_parts(fixed) if plan.fixed_parts is not None else 0

    def classify(self, item: Prepared) -> tuple[Status, str | None]:
        _, _, mobile, error, _, _, problem, (_, dedupe) = item
        if error or not mobile:
            return Status.INVALID, error or "no number"
        if dedupe is not None:
            # With a dedupe column the key, not the number, is what is sent once: one person
            # with two bookings gets two reminders, one booking listed twice gets one.
            if dedupe in self.keys:
                column = self.plan.dedupe_column
                return Status.DUPLICATE, f"{column} {dedupe!r} already in this list"
            self.keys.add(dedupe)
            if dedupe in self.earlier_keys:
                return Status.DUPLICATE, f"already reminded in campaign {self.earlier_keys[dedupe]}"
        else:
            key = int(mobile)
            if key in self.seen:
                return Status.DUPLICATE, "already in this list"
            self.seen.add(key)
        if mobile in self.suppressed:
            return Status.SUPPRESSED, suppressed_note(self.suppressed, mobile)
        if problem == NO_CONSENT_NOTE:
            return Status.NO_CONSENT, problem
        if problem:
            return Status.INVALID, problem
        return Status.QUEUED, None

    def values(
        self, items: list[Prepared], campaign_id: int, now: datetime, stamp: Any
    ) -> list[tuple[Any, ...]]:
        """Message rows as tuples in `INSERT_COLUMNS` order; `stamp` formats times."""
        refs = new_refs(len(items))
        at = self._stamp(now, stamp)
        if self.earlier is not None:
            keys = [item[7][1] for item in items if item[7][1] is not None]
            self.earlier_keys = self.earlier(keys) if keys else {}
        out = []
        for item, ref in zip(items, refs, strict=True):
            line, raw, mobile, _, text, parts, _, (when, dedupe) = item
            status, error = self.classify(item)
            if error == ERASED_NOTE or (
                status is Status.DUPLICATE and is_erased(self.suppressed, mobile)
            ):
                raw, mobile = "", None  # an erased person's number is never stored again
            own_time = deadline = None
            if status is Status.QUEUED and when is not None and mobile and self.timing:
                status, error, own_time = self.timing.place(when, mobile)
                deadline = stamp(when.deadline) if when.deadline is not None else None
            self.counts[status] = self.counts.get(status, 0) + 1
            batch = 0
            send_after = None
            if status is Status.QUEUED:
                if own_time is not None:
                    send_after = stamp(own_time)  # not _stamp: row times are many
                elif self.planner is not None and mobile:
                    send_after = self._stamp(self.planner.send_after(mobile), stamp)
                    error = self.planner.note(mobile)  # why only some of its zones, if so
                batch = self.queued // self.batch_size
                self.queued += 1
                self.segments += parts
                self._count_encoding(text, parts)
                if self.sample is None:
                    self.sample = text if text is not None else self.plan.template.source
            else:
                if len(self.problems) < PROBLEM_ROWS:
                    self.problems.append(
                        {
                            "line": line,
                            "mobile_as_given": raw,
                            "status": str(status),
                            "error": error,
                        }
                    )
                text, parts = None, 0
            out.append(
                (campaign_id, batch, line, ref, raw[:64], mobile, text, parts,
                 status.value, 0, 0, error, at, at if status in FINAL else None, send_after,
                 deadline, dedupe)
            )  # fmt: skip
        return out

    def _count_encoding(self, text: str | None, parts: int) -> None:
        # For the warning that one character makes texts UCS-2, and what that costs.
        if self.plan.fixed_parts is not None:
            self.gsm7_segments += self.fixed_gsm7
            self.ucs2_texts += 1 if self.ucs2 else 0
            return
        # Most rendered texts are GSM-7: one regex scan each, a set only for the others.
        chars = ucs2_characters(text) if text is not None and has_ucs2(text) else None
        if chars:
            self.ucs2 |= chars
            self.ucs2_texts += 1
            self.gsm7_segments += gsm7_parts(text or "")
        else:
            self.gsm7_segments += parts

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
    "deadline", "dedupe_key",
)  # fmt: skip


class _RowTiming:
    """Places rows that carry their own send time: skipped when it has passed (never sent
    late), moved to the send window's next opening, skipped when that is past the deadline."""

    def __init__(
        self,
        send_times: SendTimes,
        start: datetime,
        window: SendWindow | None,
        fallback_tz: str,
    ) -> None:
        self.send_times = send_times
        self.start = start  # when the campaign may begin: the load, or its --at
        self.window = window
        self.fallback_tz = fallback_tz
        self._openings: dict[tuple[tuple[str, ...], datetime], datetime | None] = {}

    def place(self, when: RowTime, mobile: str) -> tuple[Status, str | None, datetime | None]:
        send, deadline = when.send_at, when.deadline
        if deadline is not None and send >= deadline:
            skipped = (
                f"its time zones ({', '.join(when.zones)}) differ by more than"
                f" {self.send_times.offset.text}, so no send time suits all of them; give --tz"
            )
            return Status.SKIPPED, skipped, None
        if send < self.start:
            skipped = f"its send time {utc_text(send)} had passed at load; never sent late"
            return Status.SKIPPED, skipped, None
        if self.window is not None:
            zones = zones_for_number(mobile)
            try:
                opened = self._openings[(zones, send)]
            except KeyError:
                opened = opening(self.window, zones, self.fallback_tz, send)
                self._openings[(zones, send)] = opened
            if opened is not None and deadline is not None and opened >= deadline:
                skipped = (
                    f"the send window {self.window} does not open between its send time"
                    f" {utc_text(send)} and {utc_text(deadline)}"
                )
                return Status.SKIPPED, skipped, None
            send = opened or send
        return Status.QUEUED, None, send


def time_stamper(dialect: str) -> Any:
    """How `_insert` writes a time: SQLite keeps the naive UTC text SQLAlchemy writes;
    PostgreSQL's COPY takes ISO 8601 text with its offset (a timestamptz reads it exactly),
    which psycopg passes through three times faster than it formats a datetime."""
    if dialect == "sqlite":
        return lambda value: value.strftime("%Y-%m-%d %H:%M:%S.%f")
    if dialect == "postgresql":
        return lambda value: value.isoformat()
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
    if raw is None:  # only a connection already closed has none
        raise RuntimeError("the database connection is closed")
    if conn.dialect.name == "postgresql":
        # A chunk's commit need not wait for its WAL to reach the disk: the load is only
        # runnable after the flip, whose synchronous commit flushes every earlier record,
        # and a load cut short by a crash stays `loading` and is discarded.
        conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
        with raw.cursor() as cur, cur.copy(f"COPY message ({cols}) FROM STDIN") as copy:
            write_row = copy.write_row
            for row in rows:
                write_row(row)
        return
    if conn.dialect.name == "sqlite":
        marks = ", ".join("?" * len(INSERT_COLUMNS))
        raw.executemany(f"INSERT INTO message ({cols}) VALUES ({marks})", rows)
        return
    conn.execute(
        sa.insert(message_table), [dict(zip(INSERT_COLUMNS, r, strict=True)) for r in rows]
    )


class _ChunkWriter:
    """Writes chunks of rows in their own transactions, in order.

    On PostgreSQL a thread does it, so the server stores one chunk while this process
    classifies the next (psycopg lets go of the GIL while it waits); at most `depth` chunks
    wait. SQLite is written inline: its writes are this process's own work anyway.
    """

    def __init__(self, engine: sa.Engine, depth: int = 2) -> None:
        self.engine = engine
        self.depth = depth
        self.pool = (
            ThreadPoolExecutor(1, thread_name_prefix="load-writer")
            if engine.dialect.name == "postgresql"
            else None
        )
        self.pending: deque[Future[None]] = deque()

    def put(self, rows: list[tuple[Any, ...]]) -> None:
        if self.pool is None:
            self._write(rows)
            return
        while len(self.pending) >= self.depth:
            self.pending.popleft().result()  # a failed write raises here
        self.pending.append(self.pool.submit(self._write, rows))

    def join(self) -> None:
        """Wait for every chunk; raise the first write's error."""
        while self.pending:
            self.pending.popleft().result()
        if self.pool is not None:
            self.pool.shutdown()

    def stop(self) -> None:
        """Drop chunks not started and wait for the one being written, so that no row
        lands after the caller discards the load."""
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
        self.pending.clear()

    def _write(self, rows: list[tuple[Any, ...]]) -> None:
        with self.engine.begin() as conn:
            _insert(conn, rows)


def _read_chunks(recipients: RecipientList, plan: TextPlan, queue: Any) -> None:
    try:
        for chunk in recipients.chunks(CHUNK_ROWS):
            queue.put(plan.prepare(chunk))
        queue.put(None)
    except BaseException as exc:  # handed to the parent, which raises it
        queue.put(exc)


def _prepared_chunks(recipients: RecipientList, plan: TextPlan) -> Iterator[list[Prepared]]:
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
        args=(recipients, plan, queue),
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
    source, replaced = gsm_safe(request.template) if request.gsm_safe else (request.template, 0)
    template = Template(source)
    priority = _check_priority(request.priority)
    recipients = RecipientList.open(
        request.path,
        column=request.column,
        region=request.region or settings.region,
        encoding=request.encoding,
        sheet=request.sheet,
        landlines=request.landlines,
    )
    template.check_columns(recipients.columns)
    purpose = check_purpose(request.purpose, request.consent_column)
    consent_column = check_consent_column(request.consent_column, recipients.columns)
    suppressed: Container[str] = load_suppressed(engine, settings) if engine is not None else set()
    window = read_window(request.window, request.days)
    planner = None
    if window is not None:
        start = request.send_after or utcnow()
        planner = WindowPlanner(window, request.tz or settings.tz, start)
    send_times, dedupe_column = _row_options(request, settings, recipients.columns)
    timing = None
    if send_times is not None:
        # The same zone as the window planner's and the send-time check's (--tz, else the
        # setting), so a row's time and its window agree on numbers of several zones.
        zone_name = request.tz or settings.tz
        timing = _RowTiming(send_times, request.send_after or utcnow(), window, zone_name)
    plan = replace(
        TextPlan.of(template, settings.max_parts),
        consent_column=consent_column,
        send_times=send_times,
        dedupe_column=dedupe_column,
    )
    classifier = _Classifier(plan, settings, suppressed, planner, timing)
    name = request.name or Path(request.path).name
    summary = LoadSummary(None, "dry-run" if dry_run else CampaignState.LOADING, name=name)
    summary.source = recipients.source
    summary.priority, summary.gsm_replaced = priority, replaced
    now = utcnow()

    chunks = _prepared_chunks(recipients, plan)
    if dry_run or engine is None:
        for chunk in chunks:
            classifier.values(chunk, 0, now, time_stamper("none"))
            summary.total += len(chunk)
        return _finish(summary, classifier, settings)

    with engine.begin() as conn:
        campaign_id = conn.execute(
            sa.insert(campaign_table)
            .values(
                name=name,
                sender=sender,
                template=template.source,
                state=CampaignState.LOADING,
                priority=priority,
                max_cost=request.max_cost,
                source=str(request.path),
                region=recipients.region,
                send_after=request.send_after,
                window=request.window,
                days=request.days,
                tz=request.tz,
                validity=request.validity,
                schedule_id=request.schedule_id,
                slot=request.slot,
                purpose=purpose,
                consent_column=consent_column,
                webhook_url=request.webhook_url,
                created_at=now,
                total=0,
            )
            .returning(campaign_table.c.id)
        ).scalar_one()
    summary.campaign = campaign_id
    stamp = time_stamper(engine.dialect.name)
    if dedupe_column and request.schedule_id is not None:
        schedule_id = request.schedule_id
        classifier.earlier = lambda keys: reminded_keys(engine, schedule_id, campaign_id, keys)
    writer = _ChunkWriter(engine)
    try:
        for chunk in chunks:
            writer.put(classifier.values(chunk, campaign_id, now, stamp))
            summary.total += len(chunk)
            if fail_after is not None and summary.total >= fail_after:
                raise RuntimeError(f"injected failure after {summary.total} rows")
        writer.join()
        if summary.total == 0:
            raise TextError(f"{request.path}: the list has no recipients")
        state = CampaignState.RUNNING
        if request.send_after is not None and request.send_after > utcnow():
            state = CampaignState.SCHEDULED
        if classifier.queued == 0:
            raise NothingToSend(
                _nothing_to_send(request.path, _finish(summary, classifier, settings))
            )
        flip = (
            sa.update(campaign_table)
            .where(
                campaign_table.c.id == campaign_id, campaign_table.c.state == CampaignState.LOADING
            )
            .values(
                state=state,
                total=summary.total,
                started_at=utcnow() if state is CampaignState.RUNNING else None,
                finished_at=utcnow() if state is CampaignState.COMPLETED else None,
            )
        )
        with outbox.transaction(engine) as conn:
            conn.execute(flip)
            outbox.finals_of_load(conn, campaign_id)  # webhook: rows final from the start
            if state is CampaignState.RUNNING:
                outbox.campaign_events(conn, outbox.CAMPAIGN_STARTED, [campaign_id])  # webhook
    except BaseException:
        writer.stop()
        discard_loading(engine, campaign_id)
        raise
    summary.state = state
    summary.send_after = request.send_after
    return _finish(summary, classifier, settings)


class NothingToSend(RecipientListError):
    """A list none of whose rows can be sent: an error, not a campaign completed at once."""


def _nothing_to_send(path: Path, summary: LoadSummary) -> str:
    counts = ", ".join(f"{n} {status}" for status, n in summary.as_dict()["counts"].items())
    first = ""
    if summary.problems:
        row = summary.problems[0]
        first = f"; line {row['line']}: {row['mobile_as_given']!r} {row['error']}"
    return (
        f"{path}: no row can be sent ({counts}{first}); nothing was loaded"
        " (--dry-run lists the problem rows)"
    )


def _check_priority(value: str | None) -> Priority:
    try:
        return Priority((value or Priority.NORMAL).strip().lower())
    except ValueError:
        raise TextError(f"--priority {value!r}: use high, normal or low") from None


def _row_options(
    request: LoadRequest, settings: Settings, columns: list[str]
) -> tuple[SendTimes | None, str | None]:
    """`--send-at-column` (with its offset, zone and date order) and `--dedupe-column`,
    checked against the list's columns before any row is read."""
    dedupe = None
    if request.dedupe_column:
        dedupe = find_column(request.dedupe_column, columns, "--dedupe-column")
    if not request.send_at_column:
        if request.before or request.after or request.date_order:
            raise TimingError("--before, --after and --date-order need --send-at-column")
        return None, dedupe
    column = find_column(request.send_at_column, columns, "--send-at-column")
    if request.tz:
        zone(request.tz)
    send_times = SendTimes(
        column,
        parse_offset(request.before, request.after),
        request.tz,
        settings.tz,
        check_date_order(request.date_order),
    )
    return send_times, dedupe


def _finish(summary: LoadSummary, classifier: _Classifier, settings: Settings) -> LoadSummary:
    summary.counts = dict(classifier.counts)
    summary.ucs2_texts = classifier.ucs2_texts
    summary.gsm7_segments = classifier.gsm7_segments
    summary.ucs2_extra_cost = (
        settings.unit_cost * (classifier.segments - classifier.gsm7_segments)
    ).quantize(Decimal("0.01"))
    summary.segments = classifier.segments
    summary.sample = classifier.sample
    summary.ucs2_characters = sorted(classifier.ucs2)
    summary.problems = classifier.problems
    summary.estimated_cost = (settings.unit_cost * classifier.segments).quantize(Decimal("0.01"))
    return summary
