"""Send windows read on each recipient's wall clock: parsing, openings, zones, DST, the planner."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine

from workers import windows
from workers.timing import TimingError
from workers.windows import (
    ALL_DAYS,
    SendWindow,
    WindowPlanner,
    choose_zone,
    inside,
    opening,
    parse_window,
    zones_for_number,
)

STOCKHOLM = "Europe/Stockholm"
SWEDEN = "46701234567"  # Europe/Stockholm
UK = "447911123456"  # Europe/London (and the Crown Dependencies, same clock)
NEW_YORK = "12124567890"  # America/New_York
SOUTH_DAKOTA = "16052221234"  # America/Denver and America/North_Dakota/Center
UNPLACED = "80012345678"  # a valid-looking number phonenumbers puts in no zone

WORKDAYS = parse_window("09:00-20:00", "MON-FRI")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# -- parsing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("window", "days", "expected"),
    [
        ("09:00-20:00", None, SendWindow(time(9), time(20), ALL_DAYS)),
        ("9:00-20:00", None, SendWindow(time(9), time(20), ALL_DAYS)),
        (" 08:30 - 17:45 ", None, SendWindow(time(8, 30), time(17, 45), ALL_DAYS)),
        ("20:00-02:00", None, SendWindow(time(20), time(2), ALL_DAYS)),
        ("18:00-24:00", None, SendWindow(time(18), time(0), ALL_DAYS)),
        ("00:00-24:00", None, SendWindow(time(0), time(0), ALL_DAYS)),
        ("09:00-20:00", "MON-FRI", SendWindow(time(9), time(20), frozenset({0, 1, 2, 3, 4}))),
        ("09:00-20:00", "mon,Wed,FRI", SendWindow(time(9), time(20), frozenset({0, 2, 4}))),
        (None, "SAT-SUN", SendWindow(time(0), time(0), frozenset({5, 6}))),
        (None, "MON-FRI,SUN", SendWindow(time(0), time(0), frozenset({0, 1, 2, 3, 4, 6}))),
        (None, "FRI-MON", SendWindow(time(0), time(0), frozenset({4, 5, 6, 0}))),
        (None, "TUE-TUE", SendWindow(time(0), time(0), frozenset({1}))),
        (None, "sun", SendWindow(time(0), time(0), frozenset({6}))),
    ],
)
def test_parse_window_accepts_the_documented_forms(
    window: str | None, days: str | None, expected: SendWindow
) -> None:
    assert parse_window(window, days) == expected


def test_no_window_and_no_days_is_no_window() -> None:
    assert parse_window(None, None) is None


@pytest.mark.parametrize(
    ("window", "days", "message"),
    [
        ("9-20", None, "--window '9-20' is not HH:MM-HH:MM (like 09:00-20:00)"),
        ("0900-2000", None, "--window '0900-2000' is not HH:MM-HH:MM (like 09:00-20:00)"),
        ("09:00", None, "--window '09:00' is not HH:MM-HH:MM (like 09:00-20:00)"),
        ("", None, "--window '' is not HH:MM-HH:MM (like 09:00-20:00)"),
        ("25:00-26:00", None, "--window '25:00-26:00': 25:00 is not a time of day"),
        ("09:60-10:00", None, "--window '09:60-10:00': 9:60 is not a time of day"),
        ("09:00-24:30", None, "--window '09:00-24:30': 24:30 is not a time of day"),
        ("24:00-08:00", None, "--window '24:00-08:00': 24:00 is not a time of day"),
        ("09:00-09:00", None, "--window '09:00-09:00' never opens: it ends when it starts"),
        (None, "", "--days '' names no days, so the window would never open"),
        (
            None,
            "MON-FRX",
            "--days 'MON-FRX': 'FRX' is not a day "
            "(use MON TUE WED THU FRI SAT SUN, like MON-FRI or MON,WED,FRI)",
        ),
        (
            "09:00-20:00",
            "MON,,FRI",
            "--days 'MON,,FRI': '' is not a day "
            "(use MON TUE WED THU FRI SAT SUN, like MON-FRI or MON,WED,FRI)",
        ),
        (
            None,
            "MONDAY",
            "--days 'MONDAY': 'MONDAY' is not a day "
            "(use MON TUE WED THU FRI SAT SUN, like MON-FRI or MON,WED,FRI)",
        ),
    ],
)
def test_bad_windows_are_refused_with_one_clear_line(
    window: str | None, days: str | None, message: str
) -> None:
    with pytest.raises(TimingError) as caught:
        parse_window(window, days)
    assert str(caught.value) == message
    assert "\n" not in str(caught.value)


def test_a_window_reads_back_as_text() -> None:
    assert str(WORKDAYS) == "09:00-20:00 MON-FRI"
    assert str(parse_window(None, "FRI-MON")) == "all day MON,FRI-SUN"
    assert str(parse_window("20:00-02:00", None)) == "20:00-02:00"


def test_a_window_without_days_cannot_be_built() -> None:
    with pytest.raises(TimingError):
        SendWindow(time(9), time(20), frozenset())


# -- inside and opening -------------------------------------------------------------------------


def test_friday_evening_waits_for_monday_nine_local() -> None:
    friday_evening = utc(2026, 6, 5, 19, 30)  # 21:30 in Stockholm, a Friday
    monday_nine = utc(2026, 6, 8, 7, 0)  # 09:00 CEST
    assert opening(WORKDAYS, (STOCKHOLM,), "UTC", friday_evening) == monday_nine


def test_a_window_that_closed_today_opens_tomorrow() -> None:
    wednesday_late = utc(2026, 6, 10, 20, 0)  # 22:00 in Stockholm
    assert opening(WORKDAYS, (STOCKHOLM,), "UTC", wednesday_late) == utc(2026, 6, 11, 7, 0)


def test_a_window_still_to_come_today_opens_today() -> None:
    wednesday_early = utc(2026, 6, 10, 4, 0)  # 06:00 in Stockholm
    assert opening(WORKDAYS, (STOCKHOLM,), "UTC", wednesday_early) == utc(2026, 6, 10, 7, 0)


def test_inside_the_window_sends_now() -> None:
    wednesday_noon = utc(2026, 6, 10, 10, 0)
    assert inside(WORKDAYS, STOCKHOLM, wednesday_noon)
    assert opening(WORKDAYS, (STOCKHOLM,), "UTC", wednesday_noon) is None


def test_the_window_end_is_exclusive_and_its_start_inclusive() -> None:
    assert inside(WORKDAYS, STOCKHOLM, utc(2026, 6, 10, 7, 0))
    assert not inside(WORKDAYS, STOCKHOLM, utc(2026, 6, 10, 18, 0))
    assert opening(WORKDAYS, (STOCKHOLM,), "UTC", utc(2026, 6, 10, 7, 0)) is None


def test_after_midnight_belongs_to_the_day_the_window_started() -> None:
    friday_nights = parse_window("20:00-02:00", "FRI")
    assert inside(friday_nights, STOCKHOLM, utc(2026, 6, 5, 18, 0))  # Fri 20:00
    assert inside(friday_nights, STOCKHOLM, utc(2026, 6, 5, 23, 30))  # Sat 01:30
    assert not inside(friday_nights, STOCKHOLM, utc(2026, 6, 6, 0, 0))  # Sat 02:00
    assert not inside(friday_nights, STOCKHOLM, utc(2026, 6, 6, 19, 0))  # Sat 21:00
    assert not inside(friday_nights, STOCKHOLM, utc(2026, 6, 4, 22, 30))  # Fri 00:30
    saturday_evening = utc(2026, 6, 6, 19, 0)
    assert opening(friday_nights, (STOCKHOLM,), "UTC", saturday_evening) == utc(2026, 6, 12, 18)


def test_days_without_hours_open_at_local_midnight() -> None:
    weekend = parse_window(None, "SAT-SUN")
    friday_noon = utc(2026, 6, 5, 10, 0)
    assert opening(weekend, (STOCKHOLM,), "UTC", friday_noon) == utc(2026, 6, 5, 22, 0)
    assert inside(weekend, STOCKHOLM, utc(2026, 6, 7, 21, 59))  # Sunday 23:59
    assert not inside(weekend, STOCKHOLM, utc(2026, 6, 7, 22, 0))  # Monday 00:00


def test_naive_times_are_a_programming_error() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        inside(WORKDAYS, STOCKHOLM, datetime(2026, 6, 10, 12, 0))


# -- zones --------------------------------------------------------------------------------------


def test_zones_come_from_phonenumbers() -> None:
    assert zones_for_number(SWEDEN) == ("Europe/Stockholm",)
    assert zones_for_number(NEW_YORK) == ("America/New_York",)
    assert "Europe/London" in zones_for_number(UK)
    assert zones_for_number(SOUTH_DAKOTA) == ("America/Denver", "America/North_Dakota/Center")


def test_numbers_phonenumbers_cannot_place_have_no_zone() -> None:
    assert zones_for_number(UNPLACED) == ()  # phonenumbers says Etc/Unknown
    assert zones_for_number("") == ()
    assert zones_for_number("12") == ()


def test_recipients_in_three_zones_are_each_released_at_their_own_nine() -> None:
    window = parse_window("09:00-20:00", None)
    load_time = utc(2026, 6, 10, 5, 0)  # 07:00 Stockholm, 06:00 London, 01:00 New York
    planner = WindowPlanner(window, STOCKHOLM, load_time)
    assert planner.send_after(SWEDEN) == utc(2026, 6, 10, 7, 0)  # 09:00 CEST
    assert planner.send_after(UK) == utc(2026, 6, 10, 8, 0)  # 09:00 BST
    assert planner.send_after(NEW_YORK) == utc(2026, 6, 10, 13, 0)  # 09:00 EDT


def test_the_same_campaign_in_winter_follows_each_zone_s_standard_time() -> None:
    window = parse_window("09:00-20:00", None)
    planner = WindowPlanner(window, STOCKHOLM, utc(2026, 1, 14, 5, 0))
    assert planner.send_after(SWEDEN) == utc(2026, 1, 14, 8, 0)  # 09:00 CET
    assert planner.send_after(UK) == utc(2026, 1, 14, 9, 0)  # 09:00 GMT
    assert planner.send_after(NEW_YORK) == utc(2026, 1, 14, 14, 0)  # 09:00 EST


def test_a_number_spanning_zones_waits_for_the_latest_starting_one() -> None:
    # South Dakota is split between Central and Mountain time: 09:00 comes an hour later in
    # Denver, so Central recipients are not the ones deciding.
    window = parse_window("09:00-20:00", None)
    now = utc(2026, 6, 10, 14, 30)  # 09:30 Central (open), 08:30 Mountain (not yet)
    zones = zones_for_number(SOUTH_DAKOTA)
    assert choose_zone(window, zones, STOCKHOLM, now) == "America/Denver"
    assert choose_zone(window, zones[::-1], STOCKHOLM, now) == "America/Denver"
    assert opening(window, zones, STOCKHOLM, now) == utc(2026, 6, 10, 15, 0)  # 09:00 MDT


def test_a_toll_free_number_waits_for_its_latest_zone() -> None:
    # phonenumbers maps +1 800 numbers to every North American zone, Guam to Pago Pago.
    toll_free = "18002345678"
    zones = zones_for_number(toll_free)
    assert len(zones) > 10
    window = parse_window("09:00-20:00", None)
    now = utc(2026, 6, 10, 14, 0)  # 10:00 New York
    chosen = choose_zone(window, zones, STOCKHOLM, now)
    latest = max(opening(window, (name,), "UTC", now) or now for name in zones)
    assert opening(window, zones, STOCKHOLM, now) == latest
    assert opening(window, (chosen,), "UTC", now) == latest


def test_a_number_without_a_zone_uses_the_fallback() -> None:
    window = parse_window("09:00-20:00", None)
    now = utc(2026, 6, 10, 5, 0)
    assert choose_zone(window, zones_for_number(UNPLACED), STOCKHOLM, now) == STOCKHOLM
    planner = WindowPlanner(window, "America/New_York", now)
    assert planner.send_after(UNPLACED) == utc(2026, 6, 10, 13, 0)


def test_an_unknown_fallback_zone_is_refused_before_any_row() -> None:
    with pytest.raises(TimingError, match="unknown time zone 'Mars/Olympus'"):
        WindowPlanner(WORKDAYS, "Mars/Olympus", utc(2026, 6, 10))


# -- daylight saving ----------------------------------------------------------------------------


def test_a_window_keeps_its_local_hour_across_spring_forward() -> None:
    saturday_night = utc(2026, 3, 28, 22, 0)  # 23:00 CET; CEST from Sunday 02:00
    daily = parse_window("09:00-20:00", None)
    assert opening(daily, (STOCKHOLM,), "UTC", saturday_night) == utc(2026, 3, 29, 7, 0)
    before = utc(2026, 3, 27, 22, 0)
    assert opening(daily, (STOCKHOLM,), "UTC", before) == utc(2026, 3, 28, 8, 0)


def test_a_window_starting_in_the_skipped_hour_opens_when_the_clock_jumps() -> None:
    small_hours = parse_window("02:30-05:00", None)
    sunday_midnight = utc(2026, 3, 28, 23, 0)  # 00:00 CET on the spring-forward day
    assert opening(small_hours, (STOCKHOLM,), "UTC", sunday_midnight) == utc(2026, 3, 29, 1, 0)


def test_a_window_lying_wholly_in_the_skipped_hour_waits_a_day() -> None:
    lost_hour = parse_window("02:00-02:45", None)
    sunday_midnight = utc(2026, 3, 28, 23, 0)
    assert opening(lost_hour, (STOCKHOLM,), "UTC", sunday_midnight) == utc(2026, 3, 30, 0, 0)


def test_a_window_starting_in_the_repeated_hour_opens_on_the_second_pass_too() -> None:
    small_hours = parse_window("02:30-05:00", None)
    first_pass = utc(2026, 10, 25, 0, 10)  # 02:10 CEST
    second_pass = utc(2026, 10, 25, 1, 10)  # 02:10 CET, after the clocks went back
    assert opening(small_hours, (STOCKHOLM,), "UTC", first_pass) == utc(2026, 10, 25, 0, 30)
    assert opening(small_hours, (STOCKHOLM,), "UTC", second_pass) == utc(2026, 10, 25, 1, 30)


@pytest.mark.parametrize(
    "tz",
    ["Europe/Stockholm", "America/New_York", "America/Santiago", "Australia/Lord_Howe"],
)
@pytest.mark.parametrize("hours", ["09:00-20:00", "22:00-06:00", "02:30-05:00", None])
@pytest.mark.parametrize("days", ["SUN", "MON-FRI"])
def test_the_opening_is_the_first_open_minute_around_dst_changes(
    tz: str, hours: str | None, days: str
) -> None:
    # Brute force: step minute by minute and compare. Santiago changes at midnight, Lord Howe
    # by half an hour; the weeks hold each zone's 2026 changes.
    window = parse_window(hours, days)
    tzinfo = ZoneInfo(tz)
    starts = [utc(2026, 4, 3, 13), utc(2026, 9, 4, 17), utc(2026, 3, 27, 20), utc(2026, 10, 2)]
    starts += [utc(2026, 10, 23, 21), utc(2026, 11, 1, 3), utc(2026, 3, 6, 11)]
    for now in starts:
        found = opening(window, (tz,), "UTC", now)
        step, minute = timedelta(minutes=1), now
        while not windows._inside(window, tzinfo, minute):
            minute = (minute + step).replace(second=0, microsecond=0)
        assert found == (None if minute == now else minute), (tz, hours, days, now)


# -- the planner --------------------------------------------------------------------------------


def test_the_planner_works_out_one_opening_per_zone_set(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, ...]] = []
    real_opening = windows.opening

    def counting_opening(window, zones, fallback_tz, now):  # type: ignore[no-untyped-def]
        calls.append(tuple(zones))
        return real_opening(window, zones, fallback_tz, now)

    monkeypatch.setattr(windows, "opening", counting_opening)
    planner = WindowPlanner(WORKDAYS, STOCKHOLM, utc(2026, 6, 10, 5, 0))
    swedes = [f"4670{n:07d}" for n in range(1_000)]
    new_yorkers = [f"1212456{n:04d}" for n in range(1_000)]
    for mobile in swedes + new_yorkers + [UNPLACED, "80012345679"]:
        planner.send_after(mobile)
    assert sorted(calls) == [(), ("America/New_York",), ("Europe/Stockholm",)]
    assert planner.zone_sets == 3


def test_a_planner_without_a_window_sends_everything_now() -> None:
    planner = WindowPlanner(None, STOCKHOLM, utc(2026, 6, 10, 2, 0))
    assert planner.send_after(SWEDEN) is None


def test_a_load_at_night_on_the_clock_waits_for_morning() -> None:
    with time_machine.travel(utc(2026, 6, 10, 0, 0), tick=False):
        planner = WindowPlanner(WORKDAYS, STOCKHOLM, datetime.now(UTC))
    assert planner.send_after(SWEDEN) == utc(2026, 6, 10, 7, 0)
    with time_machine.travel(utc(2026, 6, 10, 12, 0), tick=False):
        planner = WindowPlanner(WORKDAYS, STOCKHOLM, datetime.now(UTC))
    assert planner.send_after(SWEDEN) is None
