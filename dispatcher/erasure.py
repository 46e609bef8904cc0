"""Erasure: `sms-dispatch forget NUMBER` removes a person's number from everything we hold
and keeps them opted out by a keyed hash of it, so the number is never stored in clear again.

The CLI and the HTTP API call `forget`; it says what it removed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlmodel import SQLModel

from config import Settings
from dispatcher.suppression import (
    SuppressionError,
    add_digest,
    digest,
    erasure_key,
    stop_queued,
)
from workers import outbox
from workers.ledger import (
    NOT_FINAL,
    Status,
    message_table,
    schedule_table,
    suppression_table,
    utcnow,
)
from workers.retention import personal_columns

log = logging.getLogger("sms.erasure")
ERASED = "[erased]"
ERASED_NOTE = "erased on request before its final report"

# Other tables whose free text may quote a number (stored API replies, webhook payloads):
# an occurrence is replaced by `[erased]`. Tables that do not exist here are skipped.
TEXT_COLUMNS = {"idempotency_key": ("body",), "outbox": ("payload",)}


@dataclass
class Forgotten:
    """What `forget` removed."""

    messages: int = 0  # message rows whose number and text were blanked
    campaigns: list[int] = field(default_factory=list)
    stopped: int = 0  # waiting messages that will not be sent
    in_flight: int = 0  # messages at the gateway, closed as unknown without their report
    opt_out_in_clear: bool = False  # the number's opt-out in clear, replaced by its hash
    hashed: bool = False  # a new keyed hash (False: the number was erased before)
    other_rows: dict[str, int] = field(default_factory=dict)
    schedule_lists: list[str] = field(default_factory=list)  # your files that hold it

    def as_dict(self) -> dict[str, Any]:
        return {
            "messages": self.messages,
            "campaigns": self.campaigns,
            "stopped": self.stopped,
            "in_flight": self.in_flight,
            "opt_out_in_clear_removed": self.opt_out_in_clear,
            "kept_opted_out_by_hash": True,
            "already_erased": not self.hashed,
            "other_rows": self.other_rows,
            "schedule_lists_holding_it": self.schedule_lists,
        }

    def lines(self) -> list[str]:
        where = f" in campaign(s) {', '.join(map(str, self.campaigns))}" if self.campaigns else ""
        out = [f"{self.messages} message(s){where}: number and text removed"]
        if self.stopped:
            out.append(f"{self.stopped} waiting message(s) will not be sent (suppressed)")
        if self.in_flight:
            out.append(f"{self.in_flight} message(s) at the gateway closed as unknown")
        if self.opt_out_in_clear:
            out.append("opt-out in clear replaced by a keyed hash")
        for table, n in sorted(self.other_rows.items()):
            out.append(f"{n} {table} row(s): number replaced by {ERASED}")
        out.append(
            "kept opted out by a keyed hash (new)"
            if self.hashed
            else "was already kept opted out by a keyed hash"
        )
        for path in self.schedule_lists:
            out.append(
                f"your list {path} (read by a schedule) still holds it: remove it there;"
                " until then its hash keeps it suppressed"
            )
        return out


def forget(settings: Settings, engine: sa.Engine, mobile: str) -> Forgotten:
    """Erase a normalised number everywhere in the ledger; keep it opted out by its hash."""
    key = erasure_key(settings, create=True)
    if key is None:
        raise SuppressionError(
            "set SMS_ERASURE_SECRET (the same on every machine) before erasing numbers:"
            " they are kept opted out as keyed hashes made with it"
        )
    hashed = digest(key, mobile)
    now = utcnow()
    out = Forgotten()
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as conn:
        if sqlite:
            # Overwrite freed cells with zeros, so the old bytes leave the file too.
            _pragma(conn, "PRAGMA secure_delete = ON")
        with conn.begin():
            out.stopped = stop_queued(conn, [mobile], now)
            # Claimed or at the gateway: no report can be fetched without the number.
            out.in_flight = int(
                conn.execute(
                    sa.update(message_table)
                    .where(
                        message_table.c.mobile == mobile,
                        message_table.c.status.in_([s.value for s in NOT_FINAL]),
                    )
                    .values(status=Status.UNKNOWN, final_at=now, last_error=ERASED_NOTE)
                ).rowcount
                or 0
            )
            if out.in_flight:
                # Written before the scrub below, which takes the number out of them too.
                outbox.finals_at(
                    conn,
                    now,
                    message_table.c.mobile == mobile,
                    message_table.c.status == Status.UNKNOWN,
                )
            mine = sa.or_(
                message_table.c.mobile == mobile,
                message_table.c.raw_mobile.contains(mobile, autoescape=True),
            )
            rows = conn.execute(
                sa.update(message_table)
                .where(mine)
                .values(**personal_columns())
                .returning(message_table.c.campaign_id)
            ).all()
            out.messages = len(rows)
            out.campaigns = sorted({r.campaign_id for r in rows})
            out.opt_out_in_clear = bool(
                conn.execute(
                    sa.delete(suppression_table).where(suppression_table.c.mobile == mobile)
                ).rowcount
            )
            out.hashed = add_digest(conn, hashed, reason="erased on request")
            out.other_rows = _scrub_text(conn, mobile)
        if sqlite:
            # The write-ahead log still holds pages from before: fold it in and empty it.
            _pragma(conn, "PRAGMA wal_checkpoint(TRUNCATE)")
            _pragma(conn, "PRAGMA secure_delete = OFF")
    out.schedule_lists = _schedule_lists_holding(engine, settings, mobile)
    log.info("erased a number: %d messages, %d stopped", out.messages, out.stopped)
    return out


def _pragma(conn: sa.Connection, statement: str) -> None:
    # On the driver's connection: outside any transaction (a checkpoint cannot run in one).
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(statement)
        cursor.fetchall()
    finally:
        cursor.close()


def _scrub_text(conn: sa.Connection, mobile: str) -> dict[str, int]:
    done: dict[str, int] = {}
    for name, columns in TEXT_COLUMNS.items():
        table = SQLModel.metadata.tables.get(name)
        if table is None:
            continue
        for column in columns:
            if column not in table.c:
                continue
            col = table.c[column]
            n = conn.execute(
                sa.update(table)
                .where(col.contains(mobile, autoescape=True))
                .values({column: sa.func.replace(col, mobile, ERASED)})
            ).rowcount
            if n:
                done[name] = done.get(name, 0) + int(n)
    return done


def _schedule_lists_holding(engine: sa.Engine, settings: Settings, mobile: str) -> list[str]:
    """Schedules read your files at each firing; we do not change them, but say which hold it."""
    from dispatcher.recipients import RecipientList, RecipientListError

    with engine.connect() as conn:
        rows = conn.execute(sa.select(schedule_table.c.list_path, schedule_table.c.region)).all()
    found = []
    for path, region in sorted(set(rows)):
        try:
            recipients = RecipientList.open(Path(path), region=region or settings.region)
            if any(row.mobile == mobile for row in recipients.rows()):
                found.append(path)
        except (RecipientListError, OSError):
            continue
    return found
