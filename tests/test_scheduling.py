"""Time as part of a campaign: --at, recurring schedules across DST, send windows per recipient,
with a controlled clock and the real ledgers."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
import time_machine

from dispatcher.campaigns import LoadRequest, load_campaign
from dispatcher.reports import campaign_status
from dispatcher.schedules import add_schedule, fire_due, list_schedules
from dispatcher.time_options import parse_at
from workers import campaign_moves, claims, ledger_reads
from workers.database import get_engine
from workers.ledger import CampaignState, campaign_table, message_table
from workers.wallclock import TimingError

STOCKHOLM = "Europe/Stockholm"


@pytest.fixture
def ledger(db_url, make_settings):
    settings = make_settings(database_url=db_url, schedule_grace=3600)
    return settings, get_engine(settings)


def write(tmp_path, text, name="list.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def campaigns(engine):
    c = campaign_table
    with engine.connect() as conn:
        return conn.execute(sa.select(c).order_by(c.c.id)).all()


# --- --at ------------------------------------------------------------------------------------


@time_machine.travel(datetime(2030, 2, 1, 12, 0, tzinfo=UTC), tick=False)
@pytest.mark.parametrize(
    ("value", "tz", "expected"),
    [
        ("2030-03-01T09:00", STOCKHOLM, datetime(2030, 3, 1, 8, 0, tzinfo=UTC)),
        ("2030-03-01T09:00", "America/New_York", datetime(2030, 3, 1, 14, 0, tzinfo=UTC)),
        ("2030-03-01T09:00", "Asia/Kolkata", datetime(2030, 3, 1, 3, 30, tzinfo=UTC)),
        ("2030-07-01T09:00", STOCKHOLM, datetime(2030, 7, 1, 7, 0, tzinfo=UTC)),  # summer time
        ("2030-03-01T09:00+05:30", STOCKHOLM, datetime(2030, 3, 1, 3, 30, tzinfo=UTC)),
    ],
)
def test_at_is_read_in_its_zone_and_resolved_to_utc(value, tz, expected):
    assert parse_at(value, tz) == expected


@time_machine.travel(datetime(2030, 2, 1, 12, 0, tzinfo=UTC), tick=False)
def test_at_in_the_past_or_unknown_zone_is_refused():
    with pytest.raises(TimingError, match="past"):
        parse_at("2030-02-01T12:00", "UTC")
    with pytest.raises(TimingError, match="time zone"):
        parse_at("2030-03-01T09:00", "Mars/Olympus")


def test_scheduled_campaign_waits_for_its_time_and_can_be_paused(ledger, tmp_path):
    settings, engine = ledger
    lst = write(tmp_path, "mobile\n0701234567\n0701234568\n")
    start = datetime(2030, 2, 1, 12, 0, tzinfo=UTC)
    with time_machine.travel(start, tick=False):
        request = LoadRequest(lst, "Shop", "Hi", send_after=start + timedelta(hours=1))
        cid = load_campaign(settings, engine, request).campaign
        assert ledger_reads.get_campaign(engine, cid).state == CampaignState.SCHEDULED
        assert claims.claim_batch(engine, cid, 0, limit=10, lease=60) == []
        assert campaign_moves.start_due_scheduled(engine) == []
        campaign_moves.pause_running(engine, "paused by operator", cid)
        assert campaign_moves.resume(engine, cid) == CampaignState.SCHEDULED
    with time_machine.travel(start + timedelta(hours=1, seconds=1), tick=False):
        assert campaign_moves.start_due_scheduled(engine) == [cid]
        assert len(claims.claim_batch(engine, cid, 0, limit=10, lease=60)) == 2


# --- recurring schedules --------------------------------------------------------------------


def add_daily(engine, settings, lst, cron="0 9 * * *", name="reminders"):
    return add_schedule(
        engine,
        settings,
        name=name,
        cron=cron,
        tz=STOCKHOLM,
        list_path=lst,
        sender="Clinic",
        template="Reminder: your appointment tomorrow",
    )


def local(y, mo, d, h, mi=0, sec=0):
    from zoneinfo import ZoneInfo

    return datetime(y, mo, d, h, mi, sec, tzinfo=ZoneInfo(STOCKHOLM))


def test_daily_reminder_stays_at_nine_local_across_both_dst_changes(ledger, tmp_path):
    settings, engine = ledger
    lst = write(tmp_path, "mobile\n0701234567\n")
    with time_machine.travel(local(2026, 3, 27, 12), tick=False):
        add_daily(engine, settings, lst)
    fired_at = []
    for day in [(2026, 3, 28), (2026, 3, 29), (2026, 3, 30), (2026, 10, 24), (2026, 10, 25)]:
        with time_machine.travel(local(*day, 9, 0) + timedelta(seconds=20), tick=False):
            # Resume the clock's story from the day before, as a long-running beat would.
            fired = fire_due(settings, engine)
            fired_at += [f.slot for f in fired if f.summary]
    hours = [slot.astimezone(UTC).hour for slot in fired_at]
    assert [s.astimezone(local(2026, 1, 1, 0).tzinfo).hour for s in fired_at] == [9] * 5
    assert hours == [8, 7, 7, 7, 8]  # UTC+1, then summer time UTC+2, then back


def test_nonexistent_local_time_fires_once_at_the_next_valid_instant(ledger, tmp_path):
    settings, engine = ledger
    lst = write(tmp_path, "mobile\n0701234567\n")
    with time_machine.travel(local(2026, 3, 28, 12), tick=False):
        add_daily(engine, settings, lst, cron="30 2 * * *")
    with time_machine.travel(datetime(2026, 3, 29, 1, 0, 30, tzinfo=UTC), tick=False):
        fired = fire_due(settings, engine)
    assert [f.slot for f in fired] == [datetime(2026, 3, 29, 1, 0, tzinfo=UTC)]  # 03:00 CEST
    with time_machine.travel(datetime(2026, 3, 29, 3, 0, tzinfo=UTC), tick=False):
        assert fire_due(settings, engine) == []


def test_ambiguous_local_time_fires_once(ledger, tmp_path):
    settings, engine = ledger
    lst = write(tmp_path, "mobile\n0701234567\n")
    with time_machine.travel(local(2026, 10, 24, 12), tick=False):
        add_daily(engine, settings, lst, cron="30 2 * * *")
    slots = []
    for minute in range(0, 180, 15):  # ticks through the repeated hour
        at = datetime(2026, 10, 25, 0, 0, tzinfo=UTC) + timedelta(minutes=minute)
        with time_machine.travel(at, tick=False):
            slots += [f.slot for f in fire_due(settings, engine)]
    assert slots == [datetime(2026, 10, 25, 0, 30, tzinfo=UTC)]  # 02:30 CEST, the first one


def test_missed_slot_fires_inside_the_grace_period_and_is_recorded_outside(ledger, tmp_path):
    settings, engine = ledger
    lst = write(tmp_path, "mobile\n0701234567\n")
    with time_machine.travel(local(2026, 5, 4, 8), tick=False):
        add_daily(engine, settings, lst)
    with time_machine.travel(local(2026, 5, 4, 9, 40), tick=False):  # down 40 min: still fires
        late = fire_due(settings, engine)
    assert [f.slot for f in late] == [local(2026, 5, 4, 9).astimezone(UTC)]
    with time_machine.travel(local(2026, 5, 5, 12, 0), tick=False):  # 3 h late: missed
        assert fire_due(settings, engine) == []
        (info,) = list_schedules(engine)
    assert info["missed"] == 1 and "missed slot" in info["last_error"]
    assert info["next"] == local(2026, 5, 6, 9).astimezone(UTC).isoformat()
    assert len(campaigns(engine)) == 1


def test_two_beats_ticking_the_same_slot_make_one_campaign(ledger, tmp_path):
    settings, engine = ledger
    lst = write(tmp_path, "mobile\n0701234567\n")
    with time_machine.travel(local(2026, 5, 4, 8), tick=False):
        add_daily(engine, settings, lst)
    results = []
    with time_machine.travel(local(2026, 5, 4, 9, 0, 5), tick=False):
        beats = [
            threading.Thread(target=lambda: results.append(fire_due(settings, engine)))
            for _ in range(2)
        ]
        for beat in beats:
            beat.start()
        for beat in beats:
            beat.join()
        results.append(fire_due(settings, engine))  # and a late, restarted one
    assert sum(len(r) for r in results) == 1
    (made,) = campaigns(engine)
    assert made.slot == local(2026, 5, 4, 9).astimezone(UTC)
    assert made.name.startswith("reminders 2026-05-04 09:00")


def test_broken_list_is_recorded_and_other_schedules_still_fire(ledger, tmp_path):
    settings, engine = ledger
    good = write(tmp_path, "mobile\n0701234567\n", "good.csv")
    bad = write(tmp_path, "mobile\n0701234568\n", "bad.csv")
    with time_machine.travel(local(2026, 5, 4, 8), tick=False):
        add_daily(engine, settings, bad, name="a-broken")
        add_daily(engine, settings, good, name="b-fine")
    bad.unlink()
    with time_machine.travel(local(2026, 5, 4, 9, 0, 5), tick=False):
        fired = fire_due(settings, engine)
        info = {s["name"]: s for s in list_schedules(engine)}
    assert [f.schedule for f in fired if f.summary] == ["b-fine"]
    assert "no such file" in info["a-broken"]["last_error"]
    assert info["b-fine"]["last_error"] is None
    assert [c.name for c in campaigns(engine)] == ["b-fine 2026-05-04 09:00 CEST"]


# --- send windows ---------------------------------------------------------------------------


def send_after_by_mobile(engine, cid):
    m = message_table
    with engine.connect() as conn:
        rows = conn.execute(sa.select(m.c.mobile, m.c.send_after).where(m.c.campaign_id == cid))
        return {r.mobile: r.send_after for r in rows}


def test_window_that_opens_tomorrow_holds_messages_until_then(ledger, tmp_path):
    settings, engine = ledger
    lst = write(tmp_path, "mobile\n0701234567\n")
    with time_machine.travel(local(2026, 6, 10, 22, 30), tick=False):
        request = LoadRequest(lst, "Shop", "Hi", window="09:00-20:00", tz=STOCKHOLM)
        cid = load_campaign(settings, engine, request).campaign
        assert send_after_by_mobile(engine, cid) == {"46701234567": local(2026, 6, 11, 9)}
        assert claims.claim_batch(engine, cid, 0, limit=10, lease=60) == []
        assert campaign_status(engine, cid).waiting_for_window == 1
    with time_machine.travel(local(2026, 6, 11, 9, 0, 1), tick=False):
        assert len(claims.claim_batch(engine, cid, 0, limit=10, lease=60)) == 1


def test_recipients_in_three_zones_are_each_released_at_their_own_nine(ledger, tmp_path):
    settings, engine = ledger
    lst = write(tmp_path, "mobile\n+46701234567\n+447911123456\n+12125550123\n")
    with time_machine.travel(datetime(2026, 6, 1, 4, 0, tzinfo=UTC), tick=False):
        request = LoadRequest(lst, "Shop", "Hi", window="09:00-17:00", tz="UTC")
        cid = load_campaign(settings, engine, request).campaign
    assert send_after_by_mobile(engine, cid) == {
        "46701234567": datetime(2026, 6, 1, 7, 0, tzinfo=UTC),  # Stockholm, CEST
        "447911123456": datetime(2026, 6, 1, 8, 0, tzinfo=UTC),  # London, BST
        "12125550123": datetime(2026, 6, 1, 13, 0, tzinfo=UTC),  # New York, EDT
    }


def test_weekday_window_on_a_friday_evening_waits_for_monday(ledger, tmp_path):
    settings, engine = ledger
    lst = write(tmp_path, "mobile\n0701234567\n")
    with time_machine.travel(local(2026, 6, 12, 21, 0), tick=False):  # a Friday
        request = LoadRequest(lst, "Shop", "Hi", window="09:00-20:00", days="MON-FRI")
        cid = load_campaign(settings, engine, request).campaign
    assert send_after_by_mobile(engine, cid) == {"46701234567": local(2026, 6, 15, 9)}


def test_window_that_never_opens_is_refused_before_anything_is_written(ledger, tmp_path):
    settings, engine = ledger
    lst = write(tmp_path, "mobile\n0701234567\n")
    with pytest.raises(TimingError):
        load_campaign(settings, engine, LoadRequest(lst, "Shop", "Hi", window="09:00-09:00"))
    assert campaigns(engine) == []
