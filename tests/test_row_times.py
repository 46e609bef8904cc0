"""Send times from each row (`--send-at-column` with `--before`/`--after`): the formats lists
come in, zones and DST, rows already too late (`skipped`), send windows on top, on both
ledgers with a controlled clock."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
import time_machine

from dispatcher.campaigns import LoadRequest, NothingToSend, load_campaign
from dispatcher.reports import report_rows
from dispatcher.sendtimes import AmbiguousDates, RowTimeError, parse_cell, parse_offset
from tests.workbooks import write_xlsx
from workers.database import get_engine
from workers.ledger import message_table
from workers.wallclock import TimingError

STOCKHOLM = ZoneInfo("Europe/Stockholm")
NEW_YORK = ZoneInfo("America/New_York")
SE1, SE2, SE3 = "+46701234561", "+46701234562", "+46701234563"
NY = "+12125550123"  # America/New_York only
AU = "+61412345678"  # an Australian mobile: eight zones from UTC+6:30 to UTC+10:30


@pytest.fixture
def ledger(db_url, make_settings):
    settings = make_settings(database_url=db_url)
    return settings, get_engine(settings)


def write(tmp_path, rows, name="appointments.csv"):
    path = tmp_path / name
    path.write_text("name,mobile,appointment\n" + "".join(f"{r}\n" for r in rows), "utf-8")
    return path


def utc(*args):
    return datetime(*args, tzinfo=UTC)


def messages(engine, cid):
    m = message_table
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(m.c.line, m.c.status, m.c.send_after, m.c.deadline, m.c.last_error)
            .where(m.c.campaign_id == cid)
            .order_by(m.c.line)
        ).all()
    return {r.line: r for r in rows}


def load(settings, engine, path, **options):
    request = LoadRequest(path, "Clinic", "Reminder for {name}: {appointment}", **options)
    return load_campaign(settings, engine, request)


# --- the formats a row's time comes in -------------------------------------------------------


@pytest.mark.parametrize(
    ("cell", "order", "expected"),
    [
        ("2031-03-25T09:30:00+01:00", None, utc(2031, 3, 25, 8, 30)),
        ("2031-03-25T08:30Z", None, utc(2031, 3, 25, 8, 30)),
        ("2031-03-25 09:30", None, datetime(2031, 3, 25, 9, 30)),
        ("2031-03-25T09:30:00.000", None, datetime(2031, 3, 25, 9, 30)),
        ("2031-03-25 9:30:00", None, datetime(2031, 3, 25, 9, 30)),  # Google Sheets
        ("25/03/2031 09:30", None, datetime(2031, 3, 25, 9, 30)),  # day > 12: day first
        ("3/25/2031 9:30 AM", None, datetime(2031, 3, 25, 9, 30)),  # Excel, US
        ("3/25/31 9:30:00 PM", None, datetime(2031, 3, 25, 21, 30)),
        ("12/3/2031 12:00 AM", "mdy", datetime(2031, 12, 3, 0, 0)),
        ("12/3/2031 12:15 PM", "dmy", datetime(2031, 3, 12, 12, 15)),
        ("25.03.2031 14:30", None, datetime(2031, 3, 25, 14, 30)),  # dots: day first
        ("46106.395833", None, datetime(2026, 3, 25, 9, 30)),  # a spreadsheet serial number
    ],
)
def test_row_times_in_the_formats_lists_are_exported_in(cell, order, expected):
    assert parse_cell(cell, order) == expected


@pytest.mark.parametrize(
    ("cell", "says"),
    [
        ("tomorrow", "is not a date and time"),
        ("2031-02-30 10:00", "is not a real date"),
        ("13:00 PM 2031-01-01", "is not a date and time"),
        ("2031-03-25", "has a date but no time"),
        ("25/03/2031", "has a date but no time"),
        ("3/25/2031 13:00 PM", "hour 13 with PM"),
        ("", "is empty"),
    ],
)
def test_unreadable_row_times_say_why(cell, says):
    with pytest.raises(RowTimeError, match=says):
        parse_cell(cell)


def test_a_date_that_reads_both_ways_needs_the_date_order():
    with pytest.raises(AmbiguousDates) as caught:
        parse_cell("03/04/2031 10:00")
    assert str(caught.value) == (
        "'03/04/2031 10:00' could be 3 April or March 4; give --date-order dmy (day first)"
        " or mdy (month first)"
    )
    assert parse_cell("03/04/2031 10:00", "dmy") == datetime(2031, 4, 3, 10, 0)
    assert parse_cell("03/04/2031 10:00", "mdy") == datetime(2031, 3, 4, 10, 0)


@pytest.mark.parametrize(
    ("before", "after", "says"),
    [("24h", "2h", "not both"), ("soon", None, "not a duration"), ("0", None, "longer than zero")],
)
def test_bad_offsets_are_refused(before, after, says):
    with pytest.raises(TimingError, match=says):
        parse_offset(before, after)


# --- loading rows with their own times -------------------------------------------------------


@time_machine.travel(utc(2031, 6, 9, 12, 0), tick=False)
def test_each_row_is_sent_its_offset_before_its_own_time_and_never_after_it(ledger, tmp_path):
    settings, engine = ledger
    path = write(
        tmp_path,
        [
            f"Ann,{SE1},2031-06-10 16:00",  # Stockholm, CEST: 14:00 UTC
            f"Bo,{SE2},2031-06-10 10:00",  # its send time, 08:00 UTC today, has passed
            f"Cy,{SE3},2031-06-10T16:00:00-04:00",  # the cell's own offset wins
            f"Di,{NY},2031-06-10 16:00",  # New York, EDT
            "Ed,+46701234564,next tuesday",
        ],
    )
    summary = load(settings, engine, path, send_at_column="appointment", before="24h")
    assert summary.counts == {"queued": 3, "invalid": 1, "skipped": 1}
    rows = messages(engine, summary.campaign)
    assert (rows[2].send_after, rows[2].deadline) == (utc(2031, 6, 9, 14), utc(2031, 6, 10, 14))
    assert rows[3].status == "skipped"
    assert rows[3].last_error == (
        "its send time 2031-06-09 08:00 UTC had passed at load; never sent late"
    )
    assert rows[3].send_after is None
    assert (rows[4].send_after, rows[4].deadline) == (utc(2031, 6, 9, 20), utc(2031, 6, 10, 20))
    assert (rows[5].send_after, rows[5].deadline) == (utc(2031, 6, 9, 20), utc(2031, 6, 10, 20))
    assert rows[6].status == "invalid"
    assert rows[6].last_error == (
        "appointment 'next tuesday' is not a date and time"
        " (write 2026-03-25 09:30, 25/03/2026 09:30 or 3/25/2026 9:30 AM)"
    )
    report = {row[0]: row for row in report_rows(engine, summary.campaign)}
    assert report["3"][4:6] == [rows[3].status, rows[3].last_error]  # the report says it too


@time_machine.travel(utc(2031, 3, 1, 12, 0), tick=False)
def test_hours_are_elapsed_time_and_days_are_the_wall_clock_across_dst(ledger, tmp_path):
    settings, engine = ledger
    path = write(
        tmp_path,
        [
            f"Spring,{SE1},2031-03-30 10:00",  # the day Stockholm moves to summer time
            f"Autumn,{SE2},2031-10-26 10:00",  # the day it moves back
            f"Gap,{SE3},2031-03-30 02:30",  # a time the clock skips: 03:00 CEST
            f"York,{NY},03/10/2031 9:30 AM",  # the day after New York's change (9 March)
        ],
    )
    hours = load(
        settings, engine, path, send_at_column="appointment", before="24h", date_order="mdy"
    )
    days = load(settings, engine, path, send_at_column="appointment", before="1d", date_order="mdy")
    by_hours, by_days = messages(engine, hours.campaign), messages(engine, days.campaign)
    local = {line: row.send_after.astimezone(STOCKHOLM).hour for line, row in by_days.items()}
    # 24h before 10:00 CEST is 09:00 CET the day before; "1d" is 10:00 on that day's clock.
    assert by_hours[2].send_after == utc(2031, 3, 29, 8) and local[2] == 10
    assert by_days[2].send_after == utc(2031, 3, 29, 9)
    assert by_hours[3].send_after == utc(2031, 10, 25, 9)  # 11:00 CEST
    assert by_days[3].send_after == utc(2031, 10, 25, 8) and local[3] == 10
    assert by_days[4].deadline == utc(2031, 3, 30, 1)  # 02:30 does not exist: 03:00 CEST
    assert by_days[5].deadline == utc(2031, 3, 10, 13, 30)  # 09:30 EDT
    assert by_days[5].send_after.astimezone(NEW_YORK).strftime("%d %H:%M %Z") == "09 09:30 EDT"
    assert by_hours[5].send_after == utc(2031, 3, 9, 13, 30)  # 24h before 09:30 EDT


@time_machine.travel(utc(2031, 6, 1, 12, 0), tick=False)
def test_a_number_in_several_zones_is_timed_for_all_of_them(ledger, tmp_path):
    settings, engine = ledger
    path = write(tmp_path, [f"Au,{AU},2031-06-10 10:00"])
    wide = load(settings, engine, path, send_at_column="appointment", before="24h")
    row = messages(engine, wide.campaign)[2]
    # 10:00 is 23:30 UTC the day before on Lord Howe (UTC+10:30) and 03:30 UTC on the Cocos
    # Islands (UTC+6:30): not sent before 24h ahead of the latest, nor after the earliest.
    assert (row.send_after, row.deadline) == (utc(2031, 6, 9, 3, 30), utc(2031, 6, 9, 23, 30))


@time_machine.travel(utc(2031, 6, 1, 12, 0), tick=False)
def test_zones_that_leave_no_common_send_time_skip_the_row_and_tz_fixes_it(ledger, tmp_path):
    settings, engine = ledger
    path = write(tmp_path, [f"Au,{AU},2031-06-10 10:00", f"Se,{SE1},2031-06-10 10:00"])
    summary = load(settings, engine, path, send_at_column="appointment", before="2h")
    rows = messages(engine, summary.campaign)
    assert rows[2].status == "skipped"
    assert rows[2].last_error.startswith("its time zones (Australia/Adelaide, ")
    assert rows[2].last_error.endswith(
        "differ by more than 2h, so no send time suits all of them; give --tz"
    )
    assert rows[3].status == "queued"
    sydney = load(
        settings, engine, path, send_at_column="appointment", before="2h", tz="Australia/Sydney"
    )
    rows = messages(engine, sydney.campaign)
    assert (rows[2].send_after, rows[2].deadline) == (utc(2031, 6, 9, 22), utc(2031, 6, 10, 0))
    assert rows[3].deadline == utc(2031, 6, 10, 0)  # --tz is every offset-less cell's zone


@time_machine.travel(utc(2031, 6, 1, 12, 0), tick=False)
def test_send_window_applies_on_top_but_never_past_the_rows_time(ledger, tmp_path):
    settings, engine = ledger
    path = write(
        tmp_path,
        [
            f"Early,{SE1},2031-06-10 08:00",  # 24h before is 08:00: the window opens at 09:00
            f"Inside,{SE2},2031-06-10 12:00",  # 12:00 the day before: inside, unchanged
            f"Short,{SE3},2031-06-10 08:30",  # 2h before is 06:30, the window opens after it
        ],
    )
    day = load(
        settings, engine, path, send_at_column="appointment", before="24h", window="09:00-20:00"
    )
    rows = messages(engine, day.campaign)
    assert rows[2].send_after == utc(2031, 6, 9, 7)  # 09:00 CEST
    assert rows[3].send_after == utc(2031, 6, 9, 10)
    short = load(
        settings, engine, path, send_at_column="appointment", before="2h", window="09:00-20:00"
    )
    rows = messages(engine, short.campaign)
    assert rows[4].status == "skipped"
    assert rows[4].last_error == (
        "the send window 09:00-20:00 does not open between its send time 2031-06-10 04:30 UTC"
        " and 2031-06-10 06:30 UTC"
    )
    assert rows[3].send_after == utc(2031, 6, 10, 8)


@time_machine.travel(utc(2031, 6, 1, 12, 0), tick=False)
def test_after_sends_later_and_keeps_no_deadline(ledger, tmp_path):
    settings, engine = ledger
    path = write(tmp_path, [f"Ann,{SE1},2031-06-10 16:00"])
    summary = load(settings, engine, path, send_at_column="appointment", after="2h")
    row = messages(engine, summary.campaign)[2]
    assert (row.send_after, row.deadline) == (utc(2031, 6, 10, 16), None)


@time_machine.travel(utc(2031, 6, 9, 12, 0), tick=False)
def test_a_list_whose_every_row_is_too_late_is_an_error_naming_the_first(ledger, tmp_path):
    settings, engine = ledger
    path = write(tmp_path, [f"Ann,{SE1},2031-06-09 13:00", f"Bo,{SE2},2031-06-01 09:00"])
    with pytest.raises(NothingToSend, match=r"no row can be sent \(2 skipped; line 2: .*passed"):
        load(settings, engine, path, send_at_column="appointment", before="1h")


@time_machine.travel(utc(2031, 3, 1, 12, 0), tick=False)
def test_an_ambiguous_date_stops_the_load_before_anything_is_sent(ledger, tmp_path):
    settings, engine = ledger
    path = write(tmp_path, [f"Ann,{SE1},25/03/2031 10:00", f"Bo,{SE2},03/04/2031 10:00"])
    with pytest.raises(AmbiguousDates, match=r"line 3: --send-at-column appointment: '03/04"):
        load(settings, engine, path, send_at_column="appointment", before="24h")
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(message_table)).scalar() == 0
    summary = load(
        settings, engine, path, send_at_column="appointment", before="24h", date_order="dmy"
    )
    assert messages(engine, summary.campaign)[3].deadline == utc(2031, 4, 3, 8)


@time_machine.travel(utc(2031, 3, 1, 12, 0), tick=False)
def test_a_workbooks_serial_number_times_are_read(ledger, tmp_path):
    settings, engine = ledger
    path = write_xlsx(
        tmp_path / "appointments.xlsx",
        [("Sheet1", [["name", "mobile", "appointment"], ["Ann", SE1, 47937.4375]])],
    )  # 47937.4375 is 2031-03-30 10:30 as a spreadsheet serial number
    summary = load(settings, engine, path, send_at_column="Appointment", before="1d")
    row = messages(engine, summary.campaign)[2]
    assert row.deadline == utc(2031, 3, 30, 8, 30)  # 10:30 CEST


def test_a_send_at_column_the_list_lacks_is_one_clear_error(ledger, tmp_path):
    settings, engine = ledger
    path = write(tmp_path, [f"Ann,{SE1},2031-06-10 16:00"])
    with pytest.raises(Exception, match=r"--send-at-column 'when': the list has no such column"):
        load(settings, engine, path, send_at_column="when", before="24h")
    with pytest.raises(TimingError, match="need --send-at-column"):
        load(settings, engine, path, before="24h")
