"""Times given on the command line: `--at` in a zone, read back as UTC."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from workers.ledger import utcnow


class TimingError(ValueError):
    """A time or zone we cannot use; one line for the user."""


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise TimingError(
            f"unknown time zone {name!r} (use a name like Europe/Stockholm)"
        ) from None


def parse_at(value: str, tz: str) -> datetime:
    """An ISO 8601 time in the future, as UTC; without an offset it is read in `tz`."""
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise TimingError(f"--at {value!r} is not an ISO 8601 time (2026-12-01T09:00)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=zone(tz))
    when = when.astimezone(UTC)
    if when <= utcnow():
        raise TimingError(f"--at {value!r} is in the past ({when.isoformat()})")
    return when
