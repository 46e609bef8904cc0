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

from workers.wallclock import TimingError, offset_change, require_utc, wall_instants, zone

DAY_NAMES = ("MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN")
ALL_DAYS = frozenset(range(7))
MIDNIGHT = time(0)

# Two weeks and a day: any weekday comes twice, so a window that a skipped hour (a DST gap)
# swallows on its only weekday still opens the week after.
_SEARCH_DAYS = 15

ZONES_NOTE = "its zones' send windows never overlap"  # starts the planner's note
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


def parse_window(
    window: str | None, days: str | None, *, names: tuple[str, str] = ("window", "days")
) -> SendWindow | None:
    """Hours like `09:00-20:00` and days like `MON-FRI` as a SendWindow; None when both are None.

    Hours are H:MM or HH:MM, 24:00 allowed as an end. Days are English three-letter names,
    any case, comma-separated, with ranges that may wrap (FRI-MON). Raises TimingError for bad
    syntax and for a window that would never open; its message calls the two values by `names`,
    so the producer, which knows where they were typed, can name its own options.
    """
    if window is None and days is None:
        return None
    window_name, days_name = names
    start, end = (MIDNIGHT, MIDNIGHT) if window is None else _parse_hours(window, window_name)
    return SendWindow(start, end, ALL_DAYS if days is None else _parse_days(days, days_name))


def _parse_hours(text: str, name: str) -> tuple[time, time]:
    match = _HOURS.fullmatch(text.strip())
    if match is None:
        raise TimingError(f"{name} {text!r} is not HH:MM-HH:MM (like 09:00-20:00)")
    start_h, start_m, end_h, end_m = (int(part) for part in match.groups())
    if start_h > 23 or start_m > 59:
        raise TimingError(f"{name} {text!r}: {start_h}:{start_m:02d} is not a time of day")
    if (end_h > 23 or end_m > 59) and (end_h, end_m) != (24, 0):
        raise TimingError(f"{name} {text!r}: {end_h}:{end_m:02d} is not a time of day")
    if start_h * 60 + start_m == end_h * 60 + end_m:
        raise TimingError(f"{name} {text!r} never opens: it ends when it starts")
    return time(start_h, start_m), time(end_h % 24, end_m)


def _parse_days(text: str, name: str) -> frozenset[int]:
    if not text.strip():
        raise TimingError(f"{name} {text!r} names no days, so the window would never open")
    chosen: set[int] = set()
    for part in text.split(","):
        first, dash, last = part.partition("-")
        begin = _day(first, text, name)
        finish = _day(last, text, name) if dash else begin
        chosen.update((begin + step) % 7 for step in range((finish - begin) % 7 + 1))
    return frozenset(chosen)


def _day(day: str, text: str, name: str) -> int:
    try:
        return DAY_NAMES.index(day.strip().upper())
    except ValueError:
        raise TimingError(f"{name} {text!r}: {day.strip()!r} is not a day ({_DAYS_HINT})") from None


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


@dataclass(frozen=True)
class Opening:
    """When a message may go: `at` (None: now), and why it waits for fewer than all of its
    zones (`note`, None when every zone's window is open then)."""

    at: datetime | None
    note: str | None = None


def _open_spans(window: SendWindow, tz: ZoneInfo, now: datetime) -> list[tuple[datetime, datetime]]:
    """The UTC spans [open, close) in [now, now + _SEARCH_DAYS days) when the window is open
    on the wall clock of `tz`, as `_inside` decides it.

    Between two consecutive "boundaries" -- an instant the wall clock shows the window's start,
    its end or midnight (the weekday changes), or an offset change -- the wall clock runs
    straight, so `_inside` cannot change: testing it once per boundary gives the exact spans.
    """
    until = now + timedelta(days=_SEARCH_DAYS)
    first = now.astimezone(tz).date() - timedelta(days=1)
    marks = {now}
    for ahead in range(_SEARCH_DAYS + 2):
        day = first + timedelta(days=ahead)
        for wall in (MIDNIGHT, window.start, window.end):
            marks.update(wall_instants(datetime.combine(day, wall), tz))
        midnight = wall_instants(datetime.combine(day, MIDNIGHT), tz)[0]
        following = wall_instants(datetime.combine(day + timedelta(days=1), MIDNIGHT), tz)[0]
        if midnight.astimezone(tz).utcoffset() != following.astimezone(tz).utcoffset():
            marks.add(offset_change(midnight, following, tz))
    bounds = sorted(at for at in marks if now <= at < until)
    spans: list[tuple[datetime, datetime]] = []
    for at, after in zip(bounds, [*bounds[1:], until], strict=True):
        if _inside(window, tz, at):
            if spans and spans[-1][1] == at:
                spans[-1] = (spans[-1][0], after)
            else:
                spans.append((at, after))
    return spans


def plan_opening(
    window: SendWindow, zones: Sequence[str], fallback_tz: str, now: datetime
) -> Opening:
    """When a message to a number in `zones` may go: the first instant >= now inside the
    window on the wall clock of EVERY zone (`fallback_tz` when it has none).

    A number phonenumbers places in several zones (a Russian or Australian mobile, a US
    toll-free number) may be anywhere among them, so it is messaged only when it is a decent
    hour in all of them. When their windows never overlap (a short window over a country
    wider than it), the message waits for the window of `fallback_tz` (the campaign's
    `--tz`, else the setting) when that is one of the number's zones: the sender has said
    where its recipients are. Otherwise it waits for the overlap of the most zones. Either
    way `note` says which zones were left out; those may get it outside their window.
    """
    now = require_utc(now, "now")
    names = [name for name in dict.fromkeys(zones) if _tzinfo(name) is not None]
    if not names:
        names = [fallback_tz]
        zone(fallback_tz)
    events: list[tuple[datetime, int, int]] = []  # (instant, +1 open / -1 close, zone index)
    for index, name in enumerate(names):
        for start, end in _spans(window, name, now):
            events += [(start, 1, index), (end, -1, index)]
    if not events:
        raise TimingError(f"send window {window} does not open within {_SEARCH_DAYS} days")
    events.sort(key=lambda e: (e[0], e[1]))  # a close before an open at the same instant
    open_now: set[int] = set()
    best_at, best = now, frozenset[int]()
    for position, (at, change, index) in enumerate(events):
        if change > 0:
            open_now.add(index)
        else:
            open_now.discard(index)
        if position + 1 < len(events) and events[position + 1][0] == at:
            continue  # the state between instants is what counts
        if len(open_now) > len(best):
            best_at, best = at, frozenset(open_now)
            if len(best) == len(names):
                break
    opens = None if best_at <= now else best_at
    if len(best) == len(names):
        return Opening(opens)
    if fallback_tz in names:
        # Both the load and the send-time check build their planner with the campaign's
        # zone, so the two agree on it.
        found = _tz_opening(window, names, fallback_tz, now)
        if found is not None:
            return found
    left_out = ", ".join(name for i, name in enumerate(names) if i not in best)
    return Opening(
        opens,
        f"{ZONES_NOTE}: sent in the window of {len(best)} of"
        f" {len(names)} zones ({left_out} left out)",
    )


def _tz_opening(window: SendWindow, names: list[str], tz: str, now: datetime) -> Opening | None:
    """The first instant >= now inside the window of `tz`, one of `names`; None when it does
    not open within the search."""
    spans = _spans(window, tz, now)
    if not spans:
        return None
    start = spans[0][0]
    left_out = ", ".join(name for name in names if name != tz)
    return Opening(
        None if start <= now else start,
        f"{ZONES_NOTE}: sent in the window of the campaign's zone {tz} ({left_out} left out)",
    )


@lru_cache(maxsize=4096)
def _cached_spans(
    window: SendWindow, name: str, day: datetime
) -> tuple[tuple[datetime, datetime], ...]:
    return tuple(_open_spans(window, _tzinfo(name) or zone(name), day))


def _spans(window: SendWindow, name: str, now: datetime) -> list[tuple[datetime, datetime]]:
    # Spans are worked out from the start of now's UTC hour and cached per zone, so the
    # hundreds of zone sets of one load share each zone's work; then cut at now.
    hour = now.replace(minute=0, second=0, microsecond=0)
    spans = _cached_spans(window, name, hour)
    return [(max(start, now), end) for start, end in spans if end > now]


def opening(
    window: SendWindow, zones: Sequence[str], fallback_tz: str, now: datetime
) -> datetime | None:
    """The earliest UTC instant >= now a message to a number in `zones` may be sent; None
    when it may go now. See plan_opening for the rule."""
    return plan_opening(window, zones, fallback_tz, now).at


class WindowPlanner:
    """`send_after` for every message of one load, against one window and one `now`.

    `now` is when sending may begin: the load's time, or the campaign's start. Openings are
    cached per zone set, so a million rows cost one opening per distinct set (a few hundred).
    """

    def __init__(self, window: SendWindow | None, fallback_tz: str, now: datetime) -> None:
        zone(fallback_tz)  # an unknown zone is the user's error, before any row is read
        self.window = window
        self.fallback_tz = fallback_tz
        self.now = require_utc(now, "now")
        self._openings: dict[tuple[str, ...], Opening] = {}

    def _opening(self, mobile: str) -> Opening | None:
        if self.window is None:
            return None
        zones = zones_for_number(mobile)
        try:
            return self._openings[zones]
        except KeyError:
            found = self._openings[zones] = plan_opening(
                self.window, zones, self.fallback_tz, self.now
            )
            return found

    def send_after(self, mobile: str) -> datetime | None:
        """When the message to `mobile` may go out; None for now (or when there is no window)."""
        found = self._opening(mobile)
        return None if found is None else found.at

    def note(self, mobile: str) -> str | None:
        """Why the message to `mobile` is sent in only some of its zones' windows, if it is."""
        found = self._opening(mobile)
        return None if found is None else found.note

    @property
    def zone_sets(self) -> int:
        """How many distinct zone sets the load has met (each costing one opening)."""
        return len(self._openings)
