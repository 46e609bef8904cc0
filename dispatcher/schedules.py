"""Recurring schedules: reminder batches fired from a cron expression in a time zone.

Each firing reads the list file as it is at that moment and creates a campaign named after the
schedule and the slot. A slot is taken with one compare-and-set on `last_slot`, and a unique
(schedule, slot) on campaigns backs it up, so doubled or restarted beats never repeat a slot.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from config import Settings
from dispatcher.campaigns import LoadRequest, LoadSummary, load_campaign
from dispatcher.recipients import RecipientList, RecipientListError
from dispatcher.texts import Template, TextError, check_sender, check_text
from workers.ledger import schedule_table, utcnow
from workers.slots import due_slots, next_slot, validate_cron
from workers.timing import TimingError, zone
from workers.windows import parse_window

S = schedule_table
log = logging.getLogger("sms.schedules")


class ScheduleError(ValueError):
    """A schedule that does not exist, or a name already taken; one line for the user."""


@dataclass
class Fired:
    """What one firing did: the campaign it made, or why it made none."""

    schedule: str
    slot: datetime
    summary: LoadSummary | None = None
    error: str | None = None


def add_schedule(
    engine: sa.Engine,
    settings: Settings,
    *,
    name: str,
    cron: str,
    tz: str,
    list_path: Path,
    sender: str,
    template: str,
    region: str | None = None,
    window: str | None = None,
    days: str | None = None,
    validity: float | None = None,
) -> dict[str, Any]:
    """Check everything that can be checked now, then store the schedule."""
    cron = validate_cron(cron)
    zone(tz)
    parse_window(window, days)
    sender = check_sender(sender)
    parsed = Template(template)
    if not parsed.placeholders:
        check_text(template, settings.max_parts)
    # The list must be readable now; it is read again, as it then is, at every firing.
    recipients = RecipientList.open(list_path, region=region or settings.region)
    parsed.check_columns(recipients.columns)
    values = {
        "name": name,
        "cron": cron,
        "tz": tz,
        "list_path": str(Path(list_path).resolve()),
        "sender": sender,
        "template": template,
        "region": region,
        "window": window,
        "days": days,
        "validity": validity,
        "paused": False,
        "missed": 0,
        "created_at": utcnow(),
    }
    try:
        with engine.begin() as conn:
            conn.execute(sa.insert(S).values(**values))
    except sa.exc.IntegrityError:
        raise ScheduleError(f"a schedule named {name!r} exists already") from None
    return describe(engine, name)


def _row(engine: sa.Engine, name: str) -> sa.Row[Any]:
    with engine.connect() as conn:
        row = conn.execute(sa.select(S).where(S.c.name == name)).first()
    if row is None:
        raise ScheduleError(f"no schedule named {name!r}")
    return row


def _as_dict(row: sa.Row[Any], now: datetime) -> dict[str, Any]:
    upcoming = None
    if not row.paused:
        upcoming = next_slot(row.cron, row.tz, max(now, row.last_slot or now)).isoformat()
    return {
        "name": row.name,
        "cron": row.cron,
        "tz": row.tz,
        "list": row.list_path,
        "sender": row.sender,
        "window": row.window,
        "days": row.days,
        "paused": row.paused,
        "next": upcoming,
        "last_slot": row.last_slot.isoformat() if row.last_slot else None,
        "last_campaign": row.last_campaign_id,
        "missed": row.missed,
        "last_error": row.last_error,
    }


def describe(engine: sa.Engine, name: str) -> dict[str, Any]:
    return _as_dict(_row(engine, name), utcnow())


def list_schedules(engine: sa.Engine) -> list[dict[str, Any]]:
    now = utcnow()
    with engine.connect() as conn:
        rows = conn.execute(sa.select(S).order_by(S.c.name)).all()
    return [_as_dict(row, now) for row in rows]


def set_paused(engine: sa.Engine, name: str, paused: bool) -> None:
    _row(engine, name)
    values: dict[str, Any] = {"paused": paused}
    if not paused:
        # Slots that passed while paused are skipped, not fired late.
        values["last_slot"] = utcnow()
    with engine.begin() as conn:
        conn.execute(sa.update(S).where(S.c.name == name).values(**values))


def remove_schedule(engine: sa.Engine, name: str) -> None:
    _row(engine, name)
    with engine.begin() as conn:
        conn.execute(sa.delete(S).where(S.c.name == name))


def _fire(settings: Settings, engine: sa.Engine, row: sa.Row[Any], slot: datetime) -> Fired:
    fired = Fired(row.name, slot)
    request = LoadRequest(
        path=Path(row.list_path),
        sender=row.sender,
        template=row.template,
        name=f"{row.name} {slot.astimezone(zone(row.tz)).strftime('%Y-%m-%d %H:%M %Z')}",
        region=row.region,
        window=row.window,
        days=row.days,
        tz=row.tz,
        validity=row.validity,
        schedule_id=row.id,
        slot=slot,
    )
    try:
        fired.summary = load_campaign(settings, engine, request)
    except (RecipientListError, TextError, TimingError, OSError) as exc:
        fired.error = f"slot {slot.isoformat()}: {exc}"
    except sa.exc.IntegrityError:
        fired.error = None  # another beat fired this slot first: nothing to do
        return fired
    with engine.begin() as conn:
        conn.execute(
            sa.update(S)
            .where(S.c.id == row.id)
            .values(
                last_error=fired.error,
                last_campaign_id=(
                    fired.summary.campaign if fired.summary else S.c.last_campaign_id
                ),
            )
        )
    return fired


def _take_slot(engine: sa.Engine, row: sa.Row[Any], latest: datetime, missed: int) -> bool:
    # Compare-and-set: only the beat that moves last_slot forward acts on these slots.
    guard = S.c.last_slot.is_(None) if row.last_slot is None else S.c.last_slot == row.last_slot
    with engine.begin() as conn:
        result = conn.execute(
            sa.update(S)
            .where(S.c.id == row.id, guard)
            .values(last_slot=latest, missed=S.c.missed + missed)
        )
    return result.rowcount == 1


def fire_due(settings: Settings, engine: sa.Engine, now: datetime | None = None) -> list[Fired]:
    """Fire every schedule whose slot has come; record missed ones. One failure stops none."""
    now = now or utcnow()
    with engine.connect() as conn:
        rows = conn.execute(sa.select(S).where(S.c.paused.is_(False))).all()
    done = []
    for row in rows:
        decision = due_slots(
            row.cron, row.tz, row.last_slot, row.created_at, now, settings.schedule_grace
        )
        if decision.latest is None:
            continue
        if not _take_slot(engine, row, decision.latest, len(decision.missed)):
            continue
        if decision.missed:
            log.warning("schedule %s missed %d slot(s)", row.name, len(decision.missed))
            with engine.begin() as conn:
                conn.execute(
                    sa.update(S)
                    .where(S.c.id == row.id)
                    .values(last_error=f"missed slot {decision.missed[-1].isoformat()}")
                )
        if decision.fire is not None:
            done.append(_fire(settings, engine, row, decision.fire))
    return done


def fire_now(settings: Settings, engine: sa.Engine, name: str) -> Fired:
    """`schedule run NAME`: fire once now, outside the cron (slot = now)."""
    return _fire(settings, engine, _row(engine, name), utcnow())
