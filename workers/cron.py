"""Firing slots of recurring schedules: cron read on local wall clocks, mapped to UTC so that
daylight-saving changes neither move, skip nor double a slot."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import CroniterError, croniter

from workers.wallclock import TimingError, require_utc, wall_instants, zone

MAX_SLOTS = 10_000  # slots one call may list; more means a typo'd cron or a vast range
CRON_EXAMPLE = "'0 9 * * MON-FRI'"

# Walking back from `now`, start this far past its wall time: in a repeated fall-back hour a
# wall time later than now's may still be an instant before now.
_BACK_MARGIN = timedelta(days=1)


def slots_between(expr: str, tz: str, after: datetime, until: datetime) -> list[datetime]:
    """The UTC instants of the schedule's slots in (after, until], in order.

    Rules: the cron is read on the wall clock of `tz` (09:00 stays 09:00 local across a
    daylight-saving change); a wall time the clock skips fires when the clock jumps (the gap's
    end); a wall time the clock repeats fires once, at its first occurrence; wall times that
    land on the same instant (02:00 and 02:30 both in a gap) fire once. More than MAX_SLOTS
    slots is a TimingError.
    """
    after, until = require_utc(after, "after"), require_utc(until, "until")
    found: list[datetime] = []
    for at in _slots(expr, zone(tz), after):
        if at > until:
            break
        if len(found) == MAX_SLOTS:
            raise TimingError(
                f"cron {expr!r} fires more than {MAX_SLOTS} times between "
                f"{after.isoformat()} and {until.isoformat()}"
            )
        found.append(at)
    return found


def next_slot(expr: str, tz: str, after: datetime) -> datetime:
    """The schedule's first slot after `after` (for "next firing time")."""
    return next(_slots(expr, zone(tz), require_utc(after, "after")))


@dataclass(frozen=True)
class SlotDecision:
    """What one beat tick does with a schedule: fire one slot (or none), record the rest missed.

    `truncated` means more than MAX_SLOTS slots were due: `missed` then holds only the newest
    ones, the older were not listed.
    """

    fire: datetime | None
    missed: list[datetime]
    truncated: bool = False

    @property
    def latest(self) -> datetime | None:
        """The newest slot decided on, fired or missed: the caller's next `last_slot`."""
        if self.fire is not None:
            return self.fire
        return self.missed[-1] if self.missed else None


def due_slots(
    expr: str,
    tz: str,
    last_slot: datetime | None,
    created_at: datetime,
    now: datetime,
    grace: float,
) -> SlotDecision:
    """Decide the slots in (last_slot or created_at, now]: the latest fires if it is less than
    `grace` seconds old, every other one (and the latest, if older) is missed.

    A pure function of its arguments, so two beats ticking together decide alike; that only
    one of them fires is the caller's unique (schedule, slot) in the ledger. After recording,
    the caller stores `decision.latest` as the schedule's `last_slot`, so no slot is decided twice.
    """
    start = require_utc(last_slot if last_slot is not None else created_at, "last_slot/created_at")
    now = require_utc(now, "now")
    tzinfo = zone(tz)
    slots: list[datetime] = []
    truncated = False
    if start < now:
        for at in _slots(expr, tzinfo, start):
            if at > now:
                break
            slots.append(at)
            if len(slots) > MAX_SLOTS:
                # Everything was down for ages: only the newest slots matter now.
                slots, truncated = _newest_slots(expr, tzinfo, start, now, MAX_SLOTS), True
                break
    if not slots:
        return SlotDecision(None, [])
    latest = slots[-1]
    if (now - latest).total_seconds() < grace:
        return SlotDecision(latest, slots[:-1], truncated)
    return SlotDecision(None, slots, truncated)


def _slots(expr: str, tz: ZoneInfo, after: datetime) -> Iterator[datetime]:
    """The distinct slot instants after `after` (UTC), ascending, without end."""
    # croniter runs on naive wall times, so each wall time comes up exactly once whatever the
    # offsets do; the mapping to UTC is ours. That mapping never goes backwards, so no wall
    # time before `after`'s own can land after `after`.
    walls = _cron(expr, after.astimezone(tz).replace(tzinfo=None))
    last = after
    while True:
        try:
            wall = walls.get_next(datetime)
        except CroniterError:
            raise TimingError(f"cron {expr!r} has no more firing times") from None
        at = wall_instants(wall, tz)[0]
        if at > last:
            yield at
            last = at


def _newest_slots(
    expr: str, tz: ZoneInfo, start: datetime, now: datetime, count: int
) -> list[datetime]:
    """The newest `count` slots in (start, now], ascending, found by walking back from now."""
    walls = _cron(expr, now.astimezone(tz).replace(tzinfo=None) + _BACK_MARGIN)
    found: list[datetime] = []
    while len(found) < count:
        try:
            wall = walls.get_prev(datetime)
        except CroniterError:
            break
        at = wall_instants(wall, tz)[0]
        if at > now or (found and at >= found[-1]):
            continue
        if at <= start:
            break
        found.append(at)
    return found[::-1]


def _cron(expr: str, start: datetime) -> croniter:
    try:
        return croniter(expr, start)
    except (ValueError, KeyError):  # croniter's own errors are ValueErrors
        raise TimingError(
            f"cron {expr!r} is not a valid cron expression (like {CRON_EXAMPLE})"
        ) from None
