"""The opt-out list: numbers that are never sent to, each with when, where from and why.

An erased number is kept only as a keyed hash (HMAC-SHA256 with the erasure secret), so it
stays opted out without being stored in clear. An opt-out also stops the number's messages
still waiting in running campaigns, not only those of later lists.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from config import Settings, UserError
from workers import outbox
from workers.ledger import Status, message_table, suppression_table, utcnow

if TYPE_CHECKING:
    from dispatcher.recipients import Row

SOURCES = ("cli", "api", "import:<file>", "reply", "erasure")
KEY_FILE = "erasure.key"
STOPPED_NOTE = "opted out while the campaign ran"
_IN_CHUNK = 500  # numbers per IN (...) list: well inside every driver's parameter limit

# Stop words of a reply, in any case, with punctuation and spaces around them.
STOP_WORDS = frozenset(
    {
        "STOP", "STOPP", "SLUTA", "AVSLUTA", "UNSUBSCRIBE", "END", "QUIT", "CANCEL",
        "OPTOUT", "REVOKE", "STOPALL",
    }
)  # fmt: skip
_EDGES = re.compile(r"^[\W_]+|[\W_]+$")

# Header names (compared without case, spaces, `_`, `-`) of the columns an export may have.
DATE_COLUMNS = ("date", "datum", "created", "createdat", "optedout", "optoutdate", "time",
                "timestamp", "unsubscribed", "unsubscribedat", "when")  # fmt: skip
REASON_COLUMNS = ("reason", "orsak", "anledning", "comment", "kommentar", "note", "notes")
TEXT_COLUMNS = ("text", "message", "body", "reply", "content", "meddelande", "svar", "sms")
REPLY_NUMBER_COLUMNS = ("from", "sender", "originator", "från", "avsändare", "msisdn")
RECEIVED_COLUMNS = ("received", "receivedat", "receivedtime", "time", "timestamp", "date",
                    "datetime", "mottagen", "mottaget", "datum", "tid")  # fmt: skip


class SuppressionError(UserError, ValueError):
    """The opt-out list cannot be used or changed as asked; one line for the user."""


# --- keyed hashes of erased numbers ---------------------------------------------------------


def erasure_key(settings: Settings, *, create: bool = False) -> bytes | None:
    """The secret erased numbers are hashed with.

    `SMS_ERASURE_SECRET` when set. A ledger in the data folder (no `SMS_DATABASE_URL`) may
    instead keep a generated key in a file beside it (`create` makes it on first use); a
    shared database needs the secret set everywhere, or producers would hash differently.
    """
    secret = settings.erasure_secret.get_secret_value()
    if secret:
        return secret.encode()
    if settings.database_url:
        return None
    path = settings.data_dir / KEY_FILE
    if path.is_file():
        return path.read_text(encoding="ascii").strip().encode()
    if not create:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(secrets.token_hex(32) + "\n")
    return path.read_text(encoding="ascii").strip().encode()


def digest(key: bytes, mobile: str) -> str:
    """HMAC-SHA256 of a normalised number, hex: equal numbers, equal digests; no way back."""
    return hmac.new(key, mobile.encode("ascii"), hashlib.sha256).hexdigest()


class SuppressedNumbers:
    """What the loader asks: is this number opted out, in clear or by its keyed hash?"""

    def __init__(self, clear: set[str], digests: set[str], key: bytes | None) -> None:
        if digests and key is None:
            raise SuppressionError(
                "the opt-out list holds erased numbers, kept as keyed hashes; set"
                " SMS_ERASURE_SECRET to the secret they were made with before loading lists"
            )
        self.clear = clear
        self.digests = digests
        self.key = key

    def __contains__(self, mobile: object) -> bool:
        if not isinstance(mobile, str):
            return False
        if mobile in self.clear:
            return True
        return bool(self.digests) and digest(self.key or b"", mobile) in self.digests

    def __len__(self) -> int:
        return len(self.clear) + len(self.digests)

    def erased(self, mobile: str) -> bool:
        """Opted out only by keyed hash: this number must not be stored in clear again."""
        return bool(self.digests) and mobile not in self.clear and mobile in self


ERASED_NOTE = "on the opt-out list (erased; kept only as a keyed hash)"


def suppressed_note(suppressed: object, mobile: str) -> str:
    """Why a row is suppressed; an erased number says so, and its row keeps no number."""
    if isinstance(suppressed, SuppressedNumbers) and suppressed.erased(mobile):
        return ERASED_NOTE
    return "on the opt-out list"


def is_erased(suppressed: object, mobile: str | None) -> bool:
    if not mobile or not isinstance(suppressed, SuppressedNumbers):
        return False
    return suppressed.erased(mobile)


def load_suppressed(engine: sa.Engine, settings: Settings) -> SuppressedNumbers:
    """The whole opt-out list, read once per load."""
    clear: set[str] = set()
    digests: set[str] = set()
    with engine.connect() as conn:
        for mobile, hashed in conn.execute(
            sa.select(suppression_table.c.mobile, suppression_table.c.digest)
        ):
            if mobile:
                clear.add(mobile)
            elif hashed:
                digests.add(hashed)
    return SuppressedNumbers(clear, digests, erasure_key(settings) if digests else None)


# --- adding and removing --------------------------------------------------------------------


@dataclass(frozen=True)
class OptOut:
    """One opt-out to record: a normalised number, when it was given, and why."""

    mobile: str
    at: datetime | None = None
    reason: str | None = None


@dataclass
class Added:
    """What recording opt-outs did."""

    added: int = 0
    already: int = 0
    stopped: int = 0  # waiting messages of running campaigns that became suppressed

    def as_dict(self) -> dict[str, int]:
        return {"added": self.added, "already": self.already, "stopped": self.stopped}


def _chunks(items: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(items), _IN_CHUNK):
        yield items[start : start + _IN_CHUNK]


def check_source(source: str) -> str:
    if source in ("cli", "api", "reply", "erasure") or (
        source.startswith("import:") and len(source) > len("import:")
    ):
        return source[:200]
    raise SuppressionError(f"unknown opt-out source {source!r}; one of {', '.join(SOURCES)}")


def add_opt_outs(engine: sa.Engine, entries: Iterable[OptOut], source: str) -> Added:
    """Record opt-outs (the first record of a number is kept) and stop its waiting messages."""
    source = check_source(source)
    now = utcnow()
    wanted: dict[str, OptOut] = {}
    for entry in entries:
        wanted.setdefault(entry.mobile, entry)
    result = Added()
    if not wanted:
        return result
    numbers = sorted(wanted)
    with outbox.transaction(engine) as conn:
        existing: set[str] = set()
        for part in _chunks(numbers):
            existing |= set(
                conn.execute(
                    sa.select(suppression_table.c.mobile).where(
                        suppression_table.c.mobile.in_(part)
                    )
                ).scalars()
            )
        new = [
            {
                "mobile": m,
                "digest": None,
                "source": source,
                "reason": (wanted[m].reason or None),
                "created_at": wanted[m].at or now,
            }
            for m in numbers
            if m not in existing
        ]
        if new:
            conn.execute(sa.insert(suppression_table), new)
        result.stopped = stop_queued(conn, numbers, now)
    result.added = len(new)
    result.already = len(existing)
    return result


def stop_queued(conn: sa.Connection, numbers: list[str], now: datetime) -> int:
    """Queued messages to these numbers become suppressed, in whatever campaign they wait.

    Guarded on `queued`: a message a worker has already claimed is on its way and is left
    to finish; one not yet claimed is never claimed now (claims re-check `queued`). Their
    `message.final` events are written in the caller's transaction, as campaign moves do.
    """
    stopped = 0
    for part in _chunks(numbers):
        result = conn.execute(
            sa.update(message_table)
            .where(message_table.c.mobile.in_(part), message_table.c.status == Status.QUEUED)
            .values(
                status=Status.SUPPRESSED,
                final_at=now,
                last_error=STOPPED_NOTE,
                text=None,
                parts=0,
                next_attempt_at=None,
            )
        )
        if result.rowcount:
            outbox.finals_at(
                conn,
                now,
                message_table.c.mobile.in_(part),
                message_table.c.status == Status.SUPPRESSED,
            )
        stopped += int(result.rowcount or 0)
    return stopped


def stop_waiting(engine: sa.Engine, numbers: Iterable[str]) -> int:
    """Suppress the waiting messages of numbers that just opted out; returns how many."""
    with outbox.transaction(engine) as conn:
        return stop_queued(conn, sorted(set(numbers)), utcnow())


def add_numbers(
    engine: sa.Engine, numbers: Iterable[str], source: str = "cli", reason: str | None = None
) -> int:
    """Add normalised numbers; returns how many were new."""
    return add_opt_outs(engine, (OptOut(m, None, reason) for m in numbers), source).added


def add_digest(conn: sa.Connection, hashed: str, reason: str | None = None) -> bool:
    """Keep an erased number opted out by its keyed hash; False when it was already."""
    found = conn.execute(
        sa.select(suppression_table.c.id).where(suppression_table.c.digest == hashed)
    ).first()
    if found is not None:
        return False
    conn.execute(
        sa.insert(suppression_table).values(
            mobile=None, digest=hashed, source="erasure", reason=reason, created_at=utcnow()
        )
    )
    return True


def remove_numbers(engine: sa.Engine, numbers: Iterable[str]) -> int:
    """Take numbers off the list (only numbers in clear: an erased number stays opted out)."""
    removed = 0
    with engine.begin() as conn:
        for part in _chunks(sorted(set(numbers))):
            result = conn.execute(
                sa.delete(suppression_table).where(suppression_table.c.mobile.in_(part))
            )
            removed += int(result.rowcount or 0)
    return removed


def list_numbers(engine: sa.Engine) -> Iterator[str]:
    """The numbers in clear, sorted."""
    with engine.connect() as conn:
        yield from conn.execute(
            sa.select(suppression_table.c.mobile)
            .where(suppression_table.c.mobile.is_not(None))
            .order_by(suppression_table.c.mobile)
        ).scalars()


def list_opt_outs(engine: sa.Engine) -> list[dict[str, Any]]:
    """Every opt-out with its provenance; erased numbers show only that they are erased."""
    stmt = sa.select(
        suppression_table.c.mobile,
        suppression_table.c.digest,
        suppression_table.c.source,
        suppression_table.c.reason,
        suppression_table.c.created_at,
    ).order_by(
        suppression_table.c.mobile.is_(None),
        suppression_table.c.mobile,
        suppression_table.c.created_at,
        suppression_table.c.id,
    )
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    return [
        {
            "mobile": r.mobile,
            "erased": r.mobile is None,
            "created_at": r.created_at.isoformat(),
            "source": r.source,
            "reason": r.reason,
        }
        for r in rows
    ]


# --- reading exports ------------------------------------------------------------------------


def _key(name: str) -> str:
    return re.sub(r"[\s_\-.]", "", name).casefold()


def find_column(columns: list[str], names: tuple[str, ...], skip: set[str]) -> str | None:
    """The first column whose header is one of `names` (in their order), except `skip`."""
    by_key = {_key(c): c for c in reversed(columns) if c not in skip}
    for name in names:
        if name in by_key:
            return by_key[name]
    return None


def parse_when(value: str, tz: str) -> datetime | None:
    """An export's date or time as UTC: ISO 8601, `YYYY-MM-DD HH:MM[:SS]` or a date.

    A time without an offset is read in `tz`; a date alone is its start. None when empty.
    """
    text = value.strip()
    if not text:
        return None
    try:
        if len(text) == 10:
            parsed = datetime.combine(date.fromisoformat(text), time())
        else:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise SuppressionError(
            f"{value!r} is not a date or time (write 2026-05-01 or ISO 8601)"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=ZoneInfo(tz))
    return parsed.astimezone(UTC)


@dataclass
class Imported:
    """What `suppress import` read."""

    opt_outs: list[OptOut] = field(default_factory=list)
    invalid: int = 0


def _take(
    out: Imported | Replies, path: Path, row: Row, when_col: str | None, tz: str, reason: str | None
) -> None:
    """One row of an export or a reply file as an opt-out, or counted invalid (no number);
    a date that cannot be read stops the whole read with the file and line."""
    if not row.mobile:
        out.invalid += 1
        return
    try:
        at = parse_when(row.fields.get(when_col, ""), tz) if when_col else None
    except SuppressionError as exc:
        raise SuppressionError(f"{path}, line {row.line}: {exc}") from None
    out.opt_outs.append(OptOut(row.mobile, at, reason))


def read_export(path: Path, *, region: str, tz: str, column: str | None = None) -> Imported:
    """An opt-out export: one number a line, or a CSV with a number and maybe date and reason."""
    from dispatcher.recipients import RecipientList

    recipients = RecipientList.open(path, column=column, region=region)
    taken = {recipients.number_column}
    when_col = find_column(recipients.columns, DATE_COLUMNS, taken)
    reason_col = find_column(recipients.columns, REASON_COLUMNS, taken | {when_col or ""})
    out = Imported()
    for row in recipients.rows():
        reason = row.fields.get(reason_col, "").strip() if reason_col else ""
        _take(out, path, row, when_col, tz, reason[:500] or None)
    return out


def is_stop_reply(text: str) -> bool:
    """A reply that is only a stop word, in any case, with punctuation or spaces around it."""
    return _EDGES.sub("", text.strip()).upper() in STOP_WORDS


@dataclass
class Replies:
    """What `suppress import-replies` found."""

    opt_outs: list[OptOut] = field(default_factory=list)
    recognised: int = 0
    not_understood: list[tuple[int, str]] = field(default_factory=list)  # (line, text)
    invalid: int = 0


def read_replies(
    path: Path,
    *,
    region: str,
    tz: str,
    column: str | None = None,
    text_column: str | None = None,
) -> Replies:
    """A CSV of replies (number, text, received time): the stop replies become opt-outs."""
    from dispatcher.recipients import RecipientList, RecipientListError

    try:
        recipients = RecipientList.open(path, column=column, region=region)
    except RecipientListError:
        if column is not None:
            raise
        # Reply exports name the number after who sent it: try those names before giving up.
        for name in REPLY_NUMBER_COLUMNS:
            try:
                recipients = RecipientList.open(path, column=name, region=region)
                break
            except RecipientListError:
                continue
        else:
            raise
    if recipients.delimiter is None:
        raise SuppressionError(
            f"{path} is a plain list of numbers; replies need a CSV with number and text columns"
        )
    taken = {recipients.number_column}
    if text_column is not None and text_column not in recipients.columns:
        raise SuppressionError(f"{path} has no column {text_column!r}")
    text_col = text_column or find_column(recipients.columns, TEXT_COLUMNS, taken)
    if text_col is None:
        raise SuppressionError(
            f"{path}: no column of reply texts (looked for text, message, body, reply);"
            " name it with --text-column"
        )
    when_col = find_column(recipients.columns, RECEIVED_COLUMNS, taken | {text_col})
    out = Replies()
    for row in recipients.rows():
        text = row.fields.get(text_col, "")
        if not is_stop_reply(text):
            out.not_understood.append((row.line, text))
            continue
        out.recognised += 1
        _take(out, path, row, when_col, tz, f"replied {text.strip()[:40]!r}")
    return out
