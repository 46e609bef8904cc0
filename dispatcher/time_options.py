"""Times as the user types them (`--at`, `--cron`, `--window`/`--days`), read and checked on the
producer side, where errors can name the option; workers only evaluate the stored values."""

from __future__ import annotations

from datetime import UTC, datetime

from croniter import CroniterBadDateError, croniter

from workers.cron import CRON_EXAMPLE
from workers.ledger import utcnow
from workers.wallclock import TimingError, wall_instants, zone
from workers.windows import SendWindow, parse_window

# Any fixed instant does to ask croniter whether an expression ever fires: one that never
# fires (30 February) never does from anywhere.
_PROBE = datetime(2000, 1, 1)


def parse_at(value: str, tz: str) -> datetime:
    """An ISO 8601 time in the future, as UTC; without an offset it is read in `tz`."""
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise TimingError(f"--at {value!r} is not an ISO 8601 time (2026-12-01T09:00)") from None
    if when.tzinfo is None:
        # The schedules' rule (workers/cron.py): a wall time the clock skips is the end of
        # the gap (02:30 on the spring-forward day is 03:00), a repeated one its first pass.
        when = wall_instants(when, zone(tz))[0]
    when = when.astimezone(UTC)
    if when <= utcnow():
        raise TimingError(f"--at {value!r} is in the past ({when.isoformat()})")
    return when


def validate_cron(expr: str) -> str:
    """The expression with its spacing tidied; TimingError (one line) if croniter refuses it.

    Five fields (minute hour day-of-month month day-of-week) or an alias such as `@daily`;
    croniter's optional seconds field is refused, a schedule firing every second is a mistake.
    """
    text = " ".join(expr.split())
    if not text:
        raise TimingError(f"--cron is empty (like {CRON_EXAMPLE})")
    if not text.startswith("@") and len(text.split()) != 5:
        raise TimingError(
            f"--cron {expr!r} needs five fields: minute hour day-of-month month day-of-week"
            f" (like {CRON_EXAMPLE})"
        )
    if not croniter.is_valid(text):
        raise TimingError(f"--cron {expr!r} is not a valid cron expression (like {CRON_EXAMPLE})")
    try:
        croniter(text, _PROBE).get_next(datetime)
    except CroniterBadDateError:
        raise TimingError(f"--cron {expr!r} never fires") from None
    return text


def read_window(window: str | None, days: str | None) -> SendWindow | None:
    """`--window 09:00-20:00` and `--days MON-FRI` as a SendWindow; None when both are None.
    TimingError (one line, naming the option) for one that cannot be read or never opens."""
    return parse_window(window, days, names=("--window", "--days"))
