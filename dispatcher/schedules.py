"""Recurring schedules: reminder batches fired from a cron expression in a time zone.

Each firing reads the list file as it is at that moment and creates a campaign named after the
schedule and the slot. A slot is taken with one compare-and-set on `last_slot`, and a unique
(schedule, slot) on campaigns backs it up, so doubled or restarted beats never repeat a slot.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from config import Settings, UserError
from dispatcher.campaigns import LoadRequest, LoadSummary, NothingToSend, load_campaign
from dispatcher.consent import check_consent_column, check_purpose
from dispatcher.recipients import RecipientList, RecipientListError
from dispatcher.sendtimes import check_date_order, find_column, parse_offset
from dispatcher.suppression import SuppressionError
from dispatcher.texts import Template, TextError, check_sender, check_text
from dispatcher.time_options import read_window, validate_cron
from workers import outbox
from workers.cron import due_slots, next_slot
from workers.ledger import Priority, campaign_table, schedule_table, utcnow
from workers.wallclock import TimingError, zone

log = logging.getLogger("sms.schedules")


class ScheduleError(UserError, ValueError):
    """A schedule that does not exist, or a name already taken; one line for the user."""


class ScheduleNotFound(ScheduleError):
    """No schedule by that name."""


class ScheduleExists(ScheduleError):
    """The name is taken by another schedule."""


@dataclass
class Fired:
    """What one firing did: the campaign it made, or why it made none."""

    schedule: str
    slot: datetime
    summary: LoadSummary | None = None
    error: str | None = None
    note: str | None = None  # a firing with nothing new to send (every key reminded already)


# The `send` options a schedule may carry in its `options` JSON (issue 13).
OPTIONS = ("send_at_column", "before", "after", "date_order", "dedupe_column", "max_cost",
           "gsm_safe")  # fmt: skip


def schedule_options(
    *,
    send_at_column: str | None = None,
    before: str | None = None,
    after: str | None = None,
    date_order: str | None = None,
    dedupe_column: str | None = None,
    max_cost: Decimal | None = None,
    gsm_safe: bool = False,
) -> dict[str, Any]:
    """The extra options a schedule fires with, checked; only those given."""
    if send_at_column:
        parse_offset(before, after)
    elif before or after or date_order:
        raise TimingError("--before, --after and --date-order need --send-at-column")
    values: dict[str, Any] = {
        "send_at_column": send_at_column,
        "before": before,
        "after": after,
        "date_order": check_date_order(date_order),
        "dedupe_column": dedupe_column,
        "max_cost": None if max_cost is None else str(max_cost),
        "gsm_safe": gsm_safe or None,
    }
    return {k: v for k, v in values.items() if v not in (None, "")}


def _options(row: sa.Row[Any]) -> dict[str, Any]:
    return json.loads(row.options) if row.options else {}


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
    purpose: str = "service",
    consent_column: str | None = None,
    priority: str = Priority.HIGH,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Check everything that can be checked now, then store the schedule.

    `options` are further `send` options (schedule_options); reminders default to the high lane.
    """
    purpose = check_purpose(purpose, consent_column)
    cron = validate_cron(cron)
    zone(tz)
    read_window(window, days)
    sender = check_sender(sender)
    parsed = Template(template)
    if not parsed.placeholders:
        check_text(template, settings.max_parts)
    # The list must be readable now; it is read again, as it then is, at every firing.
    recipients = RecipientList.open(list_path, region=region or settings.region)
    parsed.check_columns(recipients.columns)
    consent_column = check_consent_column(consent_column, recipients.columns)
    options = dict(options or {})
    if set(options) - set(OPTIONS):
        raise ValueError(f"not schedule options: {sorted(set(options) - set(OPTIONS))}")
    for key, option in (
        ("send_at_column", "--send-at-column"),
        ("dedupe_column", "--dedupe-column"),
    ):
        if options.get(key):
            options[key] = find_column(options[key], recipients.columns, option)
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
        "purpose": purpose,
        "consent_column": consent_column,
        "priority": Priority(priority),
        "options": json.dumps(options, sort_keys=True) if options else None,
        "paused": False,
        "missed": 0,
        "created_at": utcnow(),
    }
    try:
        with engine.begin() as conn:
            conn.execute(sa.insert(schedule_table).values(**values))
    except sa.exc.IntegrityError:
        raise ScheduleExists(f"a schedule named {name!r} exists already") from None
    return describe(engine, name)


def _row(engine: sa.Engine, name: str) -> sa.Row[Any]:
    with engine.connect() as conn:
        row = conn.execute(sa.select(schedule_table).where(schedule_table.c.name == name)).first()
    if row is None:
        raise ScheduleNotFound(f"no schedule named {name!r}")
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
        "purpose": row.purpose,
        "consent_column": row.consent_column,
        "priority": row.priority,
        "options": _options(row),
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
        rows = conn.execute(sa.select(schedule_table).order_by(schedule_table.c.name)).all()
    return [_as_dict(row, now) for row in rows]


def set_paused(engine: sa.Engine, name: str, paused: bool) -> None:
    _row(engine, name)
    values: dict[str, Any] = {"paused": paused}
    if not paused:
        # Slots that passed while paused are skipped, not fired late.
        values["last_slot"] = utcnow()
    with engine.begin() as conn:
        conn.execute(
            sa.update(schedule_table).where(schedule_table.c.name == name).values(**values)
        )


def remove_schedule(engine: sa.Engine, name: str) -> None:
    row = _row(engine, name)
    with engine.begin() as conn:
        # Its campaigns stay as they are (their names carry the schedule's name and slot);
        # they only stop pointing at it, so the foreign key lets the row go.
        conn.execute(
            sa.update(campaign_table)
            .where(campaign_table.c.schedule_id == row.id)
            .values(schedule_id=None)
        )
        conn.execute(sa.delete(schedule_table).where(schedule_table.c.id == row.id))


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
        purpose=row.purpose,
        consent_column=row.consent_column,
        priority=row.priority,
    )
    options = _options(row)
    for key in ("send_at_column", "before", "after", "date_order", "dedupe_column"):
        setattr(request, key, options.get(key))
    request.max_cost = Decimal(options["max_cost"]) if options.get("max_cost") else None
    request.gsm_safe = bool(options.get("gsm_safe"))
    try:
        fired.summary = load_campaign(settings, engine, request)
    except NothingToSend as exc:
        if not options.get("dedupe_column"):
            fired.error = f"slot {slot.isoformat()}: {exc}"
        else:
            # A list re-read every hour: nothing new is the usual case, not a failure.
            fired.note = f"nothing new to send: {exc}"
    except (RecipientListError, TextError, TimingError, SuppressionError, OSError) as exc:
        fired.error = f"slot {slot.isoformat()}: {exc}"
    except sa.exc.IntegrityError:
        fired.error = None  # another beat fired this slot first: nothing to do
        return fired
    with engine.begin() as conn:
        conn.execute(
            sa.update(schedule_table)
            .where(schedule_table.c.id == row.id)
            .values(
                last_error=fired.error,
                last_campaign_id=(
                    fired.summary.campaign if fired.summary else schedule_table.c.last_campaign_id
                ),
            )
        )
        _fired_event(conn, row, fired)  # webhook: schedule.fired, or .missed with the reason
    return fired


def _fired_event(conn: sa.Connection, row: sa.Row[Any], fired: Fired) -> None:
    if fired.note:
        return  # fired, and found nothing new: no campaign to announce, nothing missed
    slot = fired.slot.isoformat()
    if fired.error or fired.summary is None:
        outbox.schedule_event(
            conn, outbox.SCHEDULE_MISSED, row.id, name=row.name, slots=[slot], reason=fired.error
        )
        return
    campaign = fired.summary.campaign
    outbox.schedule_event(
        conn, outbox.SCHEDULE_FIRED, row.id, name=row.name, slot=slot, campaign=campaign
    )


def _take_slot(engine: sa.Engine, row: sa.Row[Any], latest: datetime, missed: int) -> bool:
    # Compare-and-set: only the beat that moves last_slot forward acts on these slots.
    guard = (
        schedule_table.c.last_slot.is_(None)
        if row.last_slot is None
        else schedule_table.c.last_slot == row.last_slot
    )
    with engine.begin() as conn:
        result = conn.execute(
            sa.update(schedule_table)
            .where(schedule_table.c.id == row.id, guard)
            .values(last_slot=latest, missed=schedule_table.c.missed + missed)
        )
        if missed and result.rowcount == 1:  # webhook: slots passed by more than the grace
            outbox.schedule_event(
                conn, outbox.SCHEDULE_MISSED, row.id, name=row.name, missed=missed,
                until=latest.isoformat(), reason="missed",
            )  # fmt: skip
    return result.rowcount == 1


def fire_due(settings: Settings, engine: sa.Engine, now: datetime | None = None) -> list[Fired]:
    """Fire every schedule whose slot has come; record missed ones. One failure stops none."""
    now = now or utcnow()
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(schedule_table).where(schedule_table.c.paused.is_(False))
        ).all()
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
                    sa.update(schedule_table)
                    .where(schedule_table.c.id == row.id)
                    .values(last_error=f"missed slot {decision.missed[-1].isoformat()}")
                )
        if decision.fire is not None:
            done.append(_fire(settings, engine, row, decision.fire))
    return done


def fire_now(settings: Settings, engine: sa.Engine, name: str) -> Fired:
    """`schedule run NAME`: fire once now, outside the cron (slot = now)."""
    return _fire(settings, engine, _row(engine, name), utcnow())
