"""Local wall-clock times and UTC: how a wall time in a zone maps to UTC instants across
daylight-saving changes. Send windows, cron slots and the producer's start times share it."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from config import UserError


class TimingError(UserError, ValueError):
    """A time or zone we cannot use; one line for the user."""


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise TimingError(
            f"unknown time zone {name!r} (use a name like Europe/Stockholm)"
        ) from None


def wall_instants(wall: datetime, tz: ZoneInfo) -> tuple[datetime, ...]:
    """The UTC instants at which the naive local `wall` time happens in `tz`, earliest first.

    One instant usually; two for a time a fall-back change repeats; for a time a spring-forward
    change skips, the one instant the clock jumps at (the gap's end, 02:30 -> 03:00).
    """
    first = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    second = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
    if first == second:
        return (first,)
    if first.astimezone(tz).replace(tzinfo=None) == wall:
        return (min(first, second), max(first, second))
    return (offset_change(min(first, second), max(first, second), tz),)


def offset_change(before: datetime, after: datetime, tz: ZoneInfo) -> datetime:
    """The instant in (before, after] where the offset becomes `after`'s (one change between)."""
    # zoneinfo has no public list of transitions; tzdata's are whole seconds, so bisect those.
    target = after.astimezone(tz).utcoffset()
    low, high = int(before.timestamp()), int(after.timestamp())
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, tz).utcoffset() == target:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, UTC)


def require_utc(at: datetime, name: str) -> datetime:
    """`at` in UTC; ValueError for a naive datetime."""
    if at.tzinfo is None or at.utcoffset() is None:
        # A programming error, not the user's: naive datetimes would silently mean server time.
        raise ValueError(f"{name} must be a timezone-aware datetime, got {at!r}")
    return at.astimezone(UTC)
