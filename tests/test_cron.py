"""Cron slots of recurring schedules on local wall clocks: DST days, grace, doubled beats."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine

from dispatcher.time_options import validate_cron
from workers import cron
from workers.cron import (
    MAX_SLOTS,
    SlotDecision,
    due_slots,
    next_slot,
    slots_between,
)
from workers.wallclock import TimingError, wall_instants

STOCKHOLM = "Europe/Stockholm"
HOUR = 3600.0


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def local(at: datetime, tz: str = STOCKHOLM) -> str:
    return at.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M %Z")


# -- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("0 9 * * MON-FRI", "0 9 * * MON-FRI"),
        ("  0  9 1 * *  ", "0 9 1 * *"),
        ("*/15 8-17 * * 1-5", "*/15 8-17 * * 1-5"),
        ("@daily", "@daily"),
        ("0 0 29 2 *", "0 0 29 2 *"),  # leap days only, but it does fire
    ],
)
def test_valid_cron_expressions_are_kept(expr: str, expected: str) -> None:
    assert validate_cron(expr) == expected


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("", "--cron is empty (like '0 9 * * MON-FRI')"),
        (
            "61 9 * * *",
            "--cron '61 9 * * *' is not a valid cron expression (like '0 9 * * MON-FRI')",
        ),
        ("every day", "--cron 'every day' needs five fields: minute hour day-of-month month"),
        ("* * * * * *", "--cron '* * * * * *' needs five fields"),
        ("0 9 * * FUNDAY", "--cron '0 9 * * FUNDAY' is not a valid cron expression"),
        ("0 0 30 2 *", "--cron '0 0 30 2 *' never fires"),
    ],
)
def test_bad_cron_expressions_are_refused_with_one_line(expr: str, message: str) -> None:
    with pytest.raises(TimingError) as caught:
        validate_cron(expr)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


# -- daylight saving ----------------------------------------------------------------------------


def test_nine_o_clock_stays_nine_local_across_spring_forward() -> None:
    fired = slots_between("0 9 * * *", STOCKHOLM, utc(2026, 3, 27, 12), utc(2026, 3, 30, 12))
    assert fired == [utc(2026, 3, 28, 8), utc(2026, 3, 29, 7), utc(2026, 3, 30, 7)]
    assert [local(at) for at in fired] == [
        "2026-03-28 09:00 CET",
        "2026-03-29 09:00 CEST",
        "2026-03-30 09:00 CEST",
    ]


def test_nine_o_clock_stays_nine_local_across_fall_back() -> None:
    fired = slots_between("0 9 * * *", STOCKHOLM, utc(2026, 10, 24, 0), utc(2026, 10, 26, 12))
    assert fired == [utc(2026, 10, 24, 7), utc(2026, 10, 25, 8), utc(2026, 10, 26, 8)]


def test_a_skipped_local_time_fires_once_when_the_clock_jumps() -> None:
    fired = slots_between("30 2 * * *", STOCKHOLM, utc(2026, 3, 27, 12), utc(2026, 3, 30, 12))
    assert fired == [utc(2026, 3, 28, 1, 30), utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 30)]
    assert local(fired[1]) == "2026-03-29 03:00 CEST"


def test_a_repeated_local_time_fires_once_at_its_first_occurrence() -> None:
    fired = slots_between("30 2 * * *", STOCKHOLM, utc(2026, 10, 24, 0), utc(2026, 10, 26, 12))
    assert fired == [utc(2026, 10, 24, 0, 30), utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]
    assert local(fired[1]) == "2026-10-25 02:30 CEST"


def test_wall_times_landing_on_one_instant_in_the_gap_fire_once() -> None:
    # 02:00 and 02:30 do not exist that night; both, and 03:00 itself, are the jump at 01:00 UTC.
    fired = slots_between("*/30 * * * *", STOCKHOLM, utc(2026, 3, 29, 0, 0), utc(2026, 3, 29, 2, 0))
    assert fired == [
        utc(2026, 3, 29, 0, 30),  # 01:30 CET
        utc(2026, 3, 29, 1, 0),  # 02:00, 02:30 and 03:00 -> 03:00 CEST
        utc(2026, 3, 29, 1, 30),  # 03:30 CEST
        utc(2026, 3, 29, 2, 0),
    ]


def test_the_repeated_hour_s_second_pass_does_not_fire_again() -> None:
    fired = slots_between("*/30 * * * *", STOCKHOLM, utc(2026, 10, 25, 0, 0), utc(2026, 10, 25, 2))
    assert [local(at) for at in fired] == [
        "2026-10-25 02:30 CEST",
        "2026-10-25 03:00 CET",
    ]


def test_wall_instants_names_both_passes_and_the_jump() -> None:
    tz = ZoneInfo(STOCKHOLM)
    assert wall_instants(datetime(2026, 6, 1, 9), tz) == (utc(2026, 6, 1, 7),)
    assert wall_instants(datetime(2026, 3, 29, 2, 30), tz) == (utc(2026, 3, 29, 1),)
    assert wall_instants(datetime(2026, 10, 25, 2, 30), tz) == (
        utc(2026, 10, 25, 0, 30),
        utc(2026, 10, 25, 1, 30),
    )
    half_hour_jump = ZoneInfo("Australia/Lord_Howe")  # 02:00 -> 02:30 on 2026-10-04
    assert wall_instants(datetime(2026, 10, 4, 2, 10), half_hour_jump) == (
        datetime(2026, 10, 4, 2, 30, tzinfo=half_hour_jump).astimezone(UTC),
    )


# -- ranges -------------------------------------------------------------------------------------


def test_a_range_excludes_its_start_and_includes_its_end() -> None:
    nine = utc(2026, 6, 10, 7)
    assert slots_between("0 9 * * *", STOCKHOLM, nine, nine + timedelta(days=1)) == [
        nine + timedelta(days=1)
    ]


def test_continuing_from_the_jump_does_not_repeat_it() -> None:
    jump = utc(2026, 3, 29, 1, 0)
    assert slots_between("30 2 * * *", STOCKHOLM, jump, utc(2026, 3, 29, 23)) == []
    assert next_slot("30 2 * * *", STOCKHOLM, jump) == utc(2026, 3, 30, 0, 30)


def test_after_the_first_pass_the_next_slot_is_tomorrow() -> None:
    second_pass = utc(2026, 10, 25, 1, 10)  # 02:10 CET, the 02:30 CEST slot already passed
    assert next_slot("30 2 * * *", STOCKHOLM, second_pass) == utc(2026, 10, 26, 1, 30)


def test_next_slot_follows_weekday_schedules() -> None:
    friday_evening = utc(2026, 6, 5, 17)
    assert next_slot("0 9 * * MON-FRI", STOCKHOLM, friday_evening) == utc(2026, 6, 8, 7)
    assert next_slot("0 9 1 * *", "America/New_York", friday_evening) == utc(2026, 7, 1, 13)


def test_too_many_slots_is_an_error_not_a_hang() -> None:
    with pytest.raises(TimingError, match="fires more than 10000 times"):
        slots_between("* * * * *", STOCKHOLM, utc(2026, 1, 1), utc(2026, 2, 1))


def test_a_bad_stored_expression_is_a_timing_error() -> None:
    with pytest.raises(TimingError, match="not a valid cron expression"):
        slots_between("0 25 * * *", STOCKHOLM, utc(2026, 1, 1), utc(2026, 1, 2))


def test_an_unknown_zone_is_refused() -> None:
    with pytest.raises(TimingError, match="unknown time zone"):
        next_slot("0 9 * * *", "Europe/Atlantis", utc(2026, 1, 1))


# -- due slots ----------------------------------------------------------------------------------

WEEKDAYS_NINE = "0 9 * * MON-FRI"
CREATED = utc(2026, 6, 1, 6)  # Monday 08:00 CEST


def test_a_tick_just_after_the_slot_fires_it() -> None:
    decision = due_slots(WEEKDAYS_NINE, STOCKHOLM, None, CREATED, utc(2026, 6, 1, 7, 0, 3), HOUR)
    assert decision == SlotDecision(fire=utc(2026, 6, 1, 7), missed=[])


def test_nothing_is_due_before_the_first_slot() -> None:
    decision = due_slots(WEEKDAYS_NINE, STOCKHOLM, None, CREATED, utc(2026, 6, 1, 6, 59), HOUR)
    assert decision == SlotDecision(fire=None, missed=[])
    assert decision.latest is None


def test_a_slot_before_the_schedule_existed_is_not_due() -> None:
    created_late = utc(2026, 6, 1, 7, 30)
    decision = due_slots(WEEKDAYS_NINE, STOCKHOLM, None, created_late, utc(2026, 6, 1, 12), HOUR)
    assert decision == SlotDecision(fire=None, missed=[])


def test_a_slot_missed_within_the_grace_period_fires_late() -> None:
    back_up = utc(2026, 6, 1, 7, 40)  # everything was down from 08:50 to 09:40 local
    decision = due_slots(WEEKDAYS_NINE, STOCKHOLM, None, CREATED, back_up, HOUR)
    assert decision == SlotDecision(fire=utc(2026, 6, 1, 7), missed=[])


def test_a_slot_missed_beyond_the_grace_period_is_recorded_missed() -> None:
    back_up = utc(2026, 6, 1, 8, 0, 1)  # an hour and a second late
    decision = due_slots(WEEKDAYS_NINE, STOCKHOLM, None, CREATED, back_up, HOUR)
    assert decision == SlotDecision(fire=None, missed=[utc(2026, 6, 1, 7)])
    assert decision.latest == utc(2026, 6, 1, 7)


def test_after_days_down_only_the_fresh_slot_fires_and_the_rest_are_missed() -> None:
    last = utc(2026, 6, 1, 7)  # Monday's slot fired; back up Thursday 09:10 local
    decision = due_slots(WEEKDAYS_NINE, STOCKHOLM, last, CREATED, utc(2026, 6, 4, 7, 10), HOUR)
    assert decision.fire == utc(2026, 6, 4, 7)
    assert decision.missed == [utc(2026, 6, 2, 7), utc(2026, 6, 3, 7)]


def test_two_beats_ticking_the_same_slot_decide_alike() -> None:
    args = (WEEKDAYS_NINE, STOCKHOLM, utc(2026, 6, 1, 7), CREATED, utc(2026, 6, 2, 7, 0, 1), HOUR)
    assert due_slots(*args) == due_slots(*args)
    assert due_slots(*args).fire == utc(2026, 6, 2, 7)


def test_once_recorded_a_slot_is_not_due_again() -> None:
    now = utc(2026, 6, 2, 7, 0, 1)
    first = due_slots(WEEKDAYS_NINE, STOCKHOLM, utc(2026, 6, 1, 7), CREATED, now, HOUR)
    again = due_slots(
        WEEKDAYS_NINE, STOCKHOLM, first.latest, CREATED, now + timedelta(seconds=5), HOUR
    )
    assert again == SlotDecision(fire=None, missed=[])


def test_a_restarted_beat_picks_up_from_the_recorded_slot_on_the_clock() -> None:
    # The beat restarts Wednesday 09:00:30 local, having last fired Tuesday's slot.
    with time_machine.travel(utc(2026, 6, 3, 7, 0, 30), tick=False):
        now = datetime.now(UTC)
    decision = due_slots(WEEKDAYS_NINE, STOCKHOLM, utc(2026, 6, 2, 7), CREATED, now, HOUR)
    assert decision == SlotDecision(fire=utc(2026, 6, 3, 7), missed=[])


def test_the_spring_forward_slot_is_due_once() -> None:
    last = utc(2026, 3, 28, 1, 30)
    now = utc(2026, 3, 29, 1, 0, 5)  # just after the jump to 03:00 CEST
    first = due_slots("30 2 * * *", STOCKHOLM, last, CREATED, now, HOUR)
    assert first == SlotDecision(fire=utc(2026, 3, 29, 1, 0), missed=[])
    later = due_slots("30 2 * * *", STOCKHOLM, first.latest, CREATED, utc(2026, 3, 29, 2), HOUR)
    assert later == SlotDecision(fire=None, missed=[])


def test_the_fall_back_slot_is_due_once() -> None:
    last = utc(2026, 10, 24, 0, 30)
    first = due_slots("30 2 * * *", STOCKHOLM, last, CREATED, utc(2026, 10, 25, 0, 31), HOUR)
    assert first == SlotDecision(fire=utc(2026, 10, 25, 0, 30), missed=[])
    second_pass = utc(2026, 10, 25, 1, 31)  # 02:31 CET, the wall clock's second 02:30
    later = due_slots("30 2 * * *", STOCKHOLM, first.latest, CREATED, second_pass, HOUR)
    assert later == SlotDecision(fire=None, missed=[])


def test_a_very_long_outage_lists_only_the_newest_missed_slots() -> None:
    created = utc(2026, 1, 1)
    now = utc(2026, 2, 1, 0, 0, 20)  # a minutely schedule down for a month
    decision = due_slots("* * * * *", STOCKHOLM, None, created, now, 60)
    assert decision.truncated
    assert decision.fire == utc(2026, 2, 1)
    assert len(decision.missed) == MAX_SLOTS - 1
    assert decision.missed[-1] == utc(2026, 1, 31, 23, 59)
    assert decision.missed[0] == utc(2026, 2, 1) - timedelta(minutes=MAX_SLOTS - 1)


def test_a_long_outage_around_a_dst_change_walks_back_without_doubles() -> None:
    created = utc(2026, 10, 1)
    now = utc(2026, 10, 25, 2, 0, 30)
    decision = due_slots("*/2 * * * *", STOCKHOLM, None, created, now, 60)
    assert decision.truncated
    everything = [*decision.missed, decision.fire]
    assert everything == sorted(set(everything))
    assert len(everything) == cron.MAX_SLOTS
