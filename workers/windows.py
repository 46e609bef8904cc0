"""Send windows: the hours and weekdays a recipient may be messaged, read on the recipient's own
wall clock (the time zone phonenumbers gives for the number), and when a message may go out."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers.timezone import UNKNOWN_TIMEZONE, time_zones_for_number

from workers.slots import require_utc, wall_instants
from workers.timing import TimingError, zone

DAY_NAMES = ("MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN")
ALL_DAYS = frozenset(range(7))
MIDNIGHT = time(0)

# Today plus a week finds any weekday; one more day covers a start the clock skipped that day.
_SEARCH_DAYS = 9

_HOURS = re.compile(r"(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})")
_DAYS_HINT = "use MON TUE WED THU FRI SAT SUN, like MON-FRI or MON,WED,FRI"


@dataclass(frozen=True)
class SendWindow:
    """Local wall-clock hours [start, end) on some weekdays (0 = Monday .. 6 = Sunday).

    An end at or before the start wraps past midnight, and the part after midnight belongs to
    the day the window started on: 20:00-02:00 on FRI is open from Friday 20:00 to Saturday
    02:00, not on Saturday evening. start == end is a whole 24 hours from start; `days`
    without a `window` gives 00:00-00:00, those whole days.
    """

    start: time
    end: time
    days: frozenset[int] = ALL_DAYS

    def __post_init__(self) -> None:
        if not self.days or not self.days <= ALL_DAYS:
            raise TimingError(f"a send window needs weekdays from 0 to 6, got {sorted(self.days)}")
        if self.start.tzinfo is not None or self.end.tzinfo is not None:
            raise ValueError("send window times are local wall times, without tzinfo")

    def __str__(self) -> str:
        hours = (
            "all day"
            if self.start == self.end == MIDNIGHT
            else f"{self.start:%H:%M}-{self.end:%H:%M}"
        )
        return hours if self.days == ALL_DAYS else f"{hours} {_days_text(self.days)}"


def parse_window(window: str | None, days: str | None) -> SendWindow | None:
    """`--window 09:00-20:00` and `--days MON-FRI` as a SendWindow; None when both are None.

    Hours are H:MM or HH:MM, 24:00 allowed as an end. Days are English three-letter names,
    any case, comma-separated, with ranges that may wrap (FRI-MON). Raises TimingError for bad
    syntax and for a window that would never open.
    """
    if window is None and days is None:
        return None
    start, end = (MIDNIGHT, MIDNIGHT) if window is None else _parse_hours(window)
    return SendWindow(start, end, ALL_DAYS if days is None else _parse_days(days))


def _parse_hours(text: str) -> tuple[time, time]:
    match = _HOURS.fullmatch(text.strip())
    if match is None:
        raise TimingError(f"--window {text!r} is not HH:MM-HH:MM (like 09:00-20:00)")
    start_h, start_m, end_h, end_m = (int(part) for part in match.groups())
    if start_h > 23 or start_m > 59:
        raise TimingError(f"--window {text!r}: {start_h}:{start_m:02d} is not a time of day")
    if (end_h > 23 or end_m > 59) and (end_h, end_m) != (24, 0):
        raise TimingError(f"--window {text!r}: {end_h}:{end_m:02d} is not a time of day")
    if start_h * 60 + start_m == end_h * 60 + end_m:
        raise TimingError(f"--window {text!r} never opens: it ends when it starts")
    return time(start_h, start_m), time(end_h % 24, end_m)


def _parse_days(text: str) -> frozenset[int]:
    if not text.strip():
        raise TimingError(f"--days {text!r} names no days, so the window would never open")
    chosen: set[int] = set()
    for part in text.split(","):
        first, dash, last = part.partition("-")
        begin = _day(first, text)
        finish = _day(last, text) if dash else begin
        chosen.update((begin + step) % 7 for step in range((finish - begin) % 7 + 1))
    return frozenset(chosen)


def _day(name: str, text: str) -> int:
    try:
        return DAY_NAMES.index(name.strip().upper())
    except ValueError:
        raise TimingError(
            f"--days {text!r}: {name.strip()!r} is not a day ({_DAYS_HINT})"
        ) from None


def _days_text(days: frozenset[int]) -> str:
    runs: list[list[int]] = []
    for day in sorted(days):
        if runs and runs[-1][-1] == day - 1:
            runs[-1].append(day)
        else:
            runs.append([day])
    return ",".join(
        DAY_NAMES[run[0]] if len(run) == 1 else f"{DAY_NAMES[run[0]]}-{DAY_NAMES[run[-1]]}"
        for run in runs
    )


@lru_cache(maxsize=1 << 16)
def zones_for_number(mobile: str) -> tuple[str, ...]:
    """The IANA zones phonenumbers gives for an international digits-only number; () if none.

    Cached per full number, not per prefix: phonenumbers places geographic numbers by their
    longest listed prefix but others (toll-free, mobiles in most countries) by country, and
    telling them apart takes the whole number. About 15 us a number uncached.
    """
    try:
        number = phonenumbers.parse("+" + mobile.lstrip("+"))
    except phonenumbers.NumberParseException:
        return ()
    return _known_zones(time_zones_for_number(number))


@lru_cache(maxsize=4096)
def _known_zones(zones: tuple[str, ...]) -> tuple[str, ...]:
    # phonenumbers hands out a few hundred distinct tuples; filtering each once also makes
    # numbers sharing zones share one tuple object.
    return tuple(name for name in zones if name != UNKNOWN_TIMEZONE and _tzinfo(name) is not None)


@lru_cache(maxsize=1024)
def _tzinfo(name: str) -> ZoneInfo | None:
    # phonenumbers may know a zone newer than this machine's tz database; such a zone is skipped.
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def inside(window: SendWindow, tz: str, at: datetime) -> bool:
    """Whether `at` falls inside the window on the wall clock of `tz`."""
    return _inside(window, zone(tz), require_utc(at, "at"))


def _inside(window: SendWindow, tz: ZoneInfo, at: datetime) -> bool:
    local = at.astimezone(tz)
    wall, day = local.time(), local.weekday()
    if window.start < window.end:
        return day in window.days and window.start <= wall < window.end
    # Wrapping: the evening is the day's own, the small hours belong to the day before.
    return (day in window.days and wall >= window.start) or (
        (day - 1) % 7 in window.days and wall < window.end
    )


def _opening_in(window: SendWindow, tz: ZoneInfo, now: datetime) -> datetime | None:
    """The first instant >= now the window opens in `tz`; None when it is open at `now`."""
    if _inside(window, tz, now):
        return None
    today = now.astimezone(tz).date()
    for ahead in range(_SEARCH_DAYS):
        day = today + timedelta(days=ahead)
        if day.weekday() not in window.days:
            continue
        # Stepping local dates and mapping each start to UTC keeps 09:00 at 09:00 across
        # offset changes. A start the clock skips maps to the jump; one it repeats, to both
        # passes (now may sit in the second, before the start). A window lying wholly inside
        # a skipped hour does not open that day, hence the check.
        for at in wall_instants(datetime.combine(day, window.start), tz):
            if at >= now and _inside(window, tz, at):
                return at
    raise TimingError(f"send window {window} does not open within {_SEARCH_DAYS} days")


def _latest_opening(
    window: SendWindow, zones: Sequence[str], fallback_tz: str, now: datetime
) -> tuple[str, datetime | None]:
    """The zone whose window opens last (ties: the first listed) and that opening."""
    best: tuple[str, datetime | None] | None = None
    best_at = now
    for name in dict.fromkeys(zones):
        tz = _tzinfo(name)
        if tz is None:
            continue
        at = _opening_in(window, tz, now)
        if best is None or (at or now) > best_at:
            best, best_at = (name, at), at or now
    if best is None:
        return fallback_tz, _opening_in(window, zone(fallback_tz), now)
    return best


def choose_zone(window: SendWindow, zones: Sequence[str], fallback_tz: str, now: datetime) -> str:
    """The zone a number's window is read in: of its zones the one whose window opens latest
    (so nobody is woken up), `fallback_tz` if it has none."""
    return _latest_opening(window, zones, fallback_tz, require_utc(now, "now"))[0]


def opening(
    window: SendWindow, zones: Sequence[str], fallback_tz: str, now: datetime
) -> datetime | None:
    """The earliest UTC instant >= now a message to a number in `zones` may be sent; None when
    its window is open now (send now).

    Read in choose_zone's zone alone. With several zones that can leave an earlier zone past
    its window's end by then (a short window over a wide country): late beats early. The
    window's start is the opening even when a fall-back change briefly reopens a window whose
    end lies in the repeated hour: later is the safe side.
    """
    return _latest_opening(window, zones, fallback_tz, require_utc(now, "now"))[1]


class WindowPlanner:
    """`send_after` for every message of one load, against one window and one `now`.

    `now` is when sending may begin: the load's time, or the campaign's `--at`. Openings are
    cached per zone set, so a million rows cost one opening per distinct set (a few hundred).
    """

    def __init__(self, window: SendWindow | None, fallback_tz: str, now: datetime) -> None:
        zone(fallback_tz)  # an unknown zone is the user's error, before any row is read
        self.window = window
        self.fallback_tz = fallback_tz
        self.now = require_utc(now, "now")
        self._openings: dict[tuple[str, ...], datetime | None] = {}

    def send_after(self, mobile: str) -> datetime | None:
        """When the message to `mobile` may go out; None for now (or when there is no window)."""
        if self.window is None:
            return None
        zones = zones_for_number(mobile)
        try:
            return self._openings[zones]
        except KeyError:
            at = opening(self.window, zones, self.fallback_tz, self.now)
            self._openings[zones] = at
            return at

    @property
    def zone_sets(self) -> int:
        """How many distinct zone sets the load has met (each costing one opening)."""
        return len(self._openings)
