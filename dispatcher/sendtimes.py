"""Send times from the list: `--send-at-column` read as a date and time (ISO 8601, or the forms
Excel and Google Sheets export), moved by `--before`/`--after`, on the recipient's clock.

A cell without an offset is read in `--tz`, else in the number's own zones. A number that
phonenumbers places in several zones may be in any of them, so, as with send windows
(workers/windows.py), the row's time must hold in ALL of them: the message goes no earlier
than the latest zone's send time and ends (its deadline) at the earliest zone's row time.
When that leaves no time between the two, the row is skipped and `--tz` is the fix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from config import parse_duration
from dispatcher.recipients import RecipientListError
from workers.wallclock import TimingError, wall_instants, zone
from workers.windows import zones_for_number

DATE_ORDERS = ("dmy", "mdy")
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December")  # fmt: skip

# 2026-03-25 9:30, 2026-03-25T09:30:00.000, with AM/PM: Google Sheets' and ISO-like forms that
# datetime.fromisoformat does not take (one-digit hours, AM/PM).
_YMD = re.compile(
    r"(\d{4})-(\d{1,2})-(\d{1,2})[T ]\s*(\d{1,2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?\s*"
    r"([AaPp]\.?[Mm]\.?)?"
)
# 25/03/2026 09:30, 3/25/2026 9:30 AM, 25.03.2026 09:30, 3/25/26 9:30:00 PM (Excel's CSV).
_NUMERIC = re.compile(
    r"(\d{1,2})([/.\-])(\d{1,2})\2(\d{4}|\d{2}),?[T ]\s*(\d{1,2}):(\d{2})(?::(\d{2}))?\s*"
    r"([AaPp]\.?[Mm]\.?)?"
)
# A spreadsheet date-time as a serial number (days since 1899-12-30 and a fraction of a day),
# what a date column formatted as a number exports. Only 1970-2100, and only with a time.
_SERIAL = re.compile(r"(\d{5})\.(\d+)")
_SERIAL_EPOCH = datetime(1899, 12, 30)
_SERIAL_RANGE = (25569, 73051)
_DATE_ONLY = re.compile(r"\d{4}-\d{1,2}-\d{1,2}|\d{1,2}[/.\-]\d{1,2}[/.\-](\d{4}|\d{2})")


class RowTimeError(ValueError):
    """A row's time cell that is not a date and time we can read: that row is `invalid`."""


class AmbiguousDates(RecipientListError):
    """A day/month date that reads both ways without `--date-order`: the load stops, since
    guessing would time every such row a month off."""


@dataclass(frozen=True)
class Offset:
    """`--before 24h` or `--after 2h`: a signed span. Days (`1d`) are calendar days on the
    recipient's wall clock (10:00 the day before, across a DST change too); hours, minutes
    and seconds are elapsed time."""

    seconds: float = 0.0
    days: int = 0
    before: bool = False
    text: str = ""  # as typed, for messages

    def apply(self, at: datetime, tz: ZoneInfo) -> datetime:
        sign = -1 if self.before else 1
        if self.days:
            wall = at.astimezone(tz).replace(tzinfo=None) + timedelta(days=sign * self.days)
            return wall_instants(wall, tz)[0]
        return at + timedelta(seconds=sign * self.seconds)


_DAYS = re.compile(r"\s*(\d+)\s*d\s*")


def parse_offset(before: str | None, after: str | None) -> Offset:
    """`--before`/`--after` (one of them, or neither: the row's own time)."""
    if before and after:
        raise TimingError("give --before or --after, not both")
    text = (before or after or "").strip()
    if not text:
        return Offset()
    option = "--before" if before else "--after"
    days = _DAYS.fullmatch(text)
    try:
        seconds = 0.0 if days else parse_duration(text)
    except ValueError:
        raise TimingError(f"{option} {text!r} is not a duration (write 24h, 90m or 2d)") from None
    if not seconds and not (days and int(days[1])):
        raise TimingError(f"{option} {text!r}: give a time longer than zero")
    return Offset(seconds, int(days[1]) if days else 0, bool(before), text)


def check_date_order(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    order = value.strip().lower()
    if order not in DATE_ORDERS:
        raise TimingError(f"--date-order {value!r}: use dmy (25/03/2026) or mdy (03/25/2026)")
    return order


def parse_cell(cell: str, date_order: str | None = None) -> datetime:
    """A date and time as written in a list: naive (wall time) or with its offset.

    RowTimeError when it is not one; AmbiguousDates when day and month could be swapped and
    `date_order` is None. Dot-separated dates (25.03.2026) are day first everywhere they are
    used, so they need no `date_order`.
    """
    text = cell.strip()
    if not text:
        raise RowTimeError("is empty")
    try:
        when = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        pass
    else:
        if "T" not in text.upper() and " " not in text and ":" not in text:
            raise RowTimeError("has a date but no time")
        return when
    found = _YMD.fullmatch(text)
    if found:
        year, month, day, hour, minute, second, half = found.groups()
        return _build(int(year), int(month), int(day), hour, minute, second, half)
    found = _NUMERIC.fullmatch(text)
    if found:
        first, sep, second_part, year, hour, minute, second, half = found.groups()
        a, b = int(first), int(second_part)
        full_year = int(year) + (2000 if len(year) == 2 else 0)
        order = date_order or ("dmy" if sep == "." else _order_from(a, b, text))
        day, month = (a, b) if order == "dmy" else (b, a)
        return _build(full_year, month, day, hour, minute, second, half)
    serial = _SERIAL.fullmatch(text)
    if serial and _SERIAL_RANGE[0] <= int(serial[1]) < _SERIAL_RANGE[1]:
        moment = _SERIAL_EPOCH + timedelta(days=float(text))
        return moment.replace(microsecond=0) + timedelta(seconds=round(moment.microsecond / 1e6))
    if _DATE_ONLY.fullmatch(text):
        raise RowTimeError("has a date but no time")
    raise RowTimeError(
        "is not a date and time (write 2026-03-25 09:30, 25/03/2026 09:30 or 3/25/2026 9:30 AM)"
    )


def _order_from(a: int, b: int, text: str) -> str:
    if a > 12 >= b:
        return "dmy"
    if b > 12 >= a:
        return "mdy"
    if a == b or a > 12:  # the same either way, or no month at all (caught by _build)
        return "dmy"
    raise AmbiguousDates(
        f"{text!r} could be {a} {MONTHS[b - 1]} or {MONTHS[a - 1]} {b}; give --date-order dmy"
        " (day first) or mdy (month first)"
    )


def _build(
    year: int,
    month: int,
    day: int,
    hour: str,
    minute: str,
    second: str | None,
    half: str | None,
) -> datetime:
    h, m, s = int(hour), int(minute), int(second or 0)
    if half:
        if not 1 <= h <= 12:
            raise RowTimeError(f"has the hour {h} with {half.upper()}")
        h = h % 12 + (12 if half[0] in "Pp" else 0)
    try:
        return datetime(year, month, day, h, m, s)
    except ValueError as exc:
        raise RowTimeError(f"is not a real date and time ({exc})") from None


@dataclass(frozen=True)
class RowTime:
    """When one row's message may go (UTC), and when it stops being worth sending."""

    send_at: datetime
    deadline: datetime | None
    zones: tuple[str, ...]  # the zones it was read in


@dataclass(frozen=True)
class SendTimes:
    """How a load times its rows; picklable, so a reader process can use it."""

    column: str
    offset: Offset
    tz: str | None  # --tz: every cell without an offset is read in it
    fallback_tz: str  # a number without a zone of its own
    date_order: str | None = None

    def for_row(self, cell: str | None, mobile: str) -> RowTime:
        """The row's send time and deadline; RowTimeError naming the cell when unreadable."""
        names = (self.tz,) if self.tz else (zones_for_number(mobile) or (self.fallback_tz,))
        return _row_time(self, cell or "", names)

    def _compute(self, cell: str, names: tuple[str, ...]) -> RowTime:
        try:
            when = parse_cell(cell, self.date_order)
        except RowTimeError as exc:
            raise RowTimeError(f"{self.column} {cell.strip()!r} {exc}") from None
        except AmbiguousDates as exc:
            raise AmbiguousDates(f"--send-at-column {self.column}: {exc}") from None
        sends, moments = [], []
        for name in names:
            tz = zone(name)
            at = when.astimezone(UTC) if when.tzinfo else wall_instants(when, tz)[0]
            moments.append(at)
            sends.append(self.offset.apply(at, tz))
        # Right in every zone the number may be in: the latest send, the earliest row time.
        deadline = min(moments) if self.offset.before else None
        return RowTime(max(sends), deadline, tuple(names))


@lru_cache(maxsize=1 << 14)
def _row_time(times: SendTimes, cell: str, names: tuple[str, ...]) -> RowTime:
    # Appointment lists repeat their times (a slot every 15 minutes) and their zones.
    return times._compute(cell, names)


def find_column(name: str, columns: list[str], option: str) -> str:
    """The list's own spelling of a column named on the command line (any case)."""
    wanted = name.strip().casefold()
    for column in columns:
        if column.strip().casefold() == wanted:
            return column
    if columns == ["mobile"]:
        raise RecipientListError(
            f"{option} {name!r}: the list is only numbers; it needs a header with that column"
        )
    raise RecipientListError(
        f"{option} {name!r}: the list has no such column (columns: {', '.join(columns)})"
    )


def utc_text(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
