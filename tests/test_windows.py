"""Send windows read on each recipient's wall clock: parsing, openings, zones, DST, the planner."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine

from dispatcher.time_options import read_window
from workers import windows
from workers.wallclock import TimingError
from workers.windows import (
    ALL_DAYS,
    SendWindow,
    WindowPlanner,
    inside,
    opening,
    parse_window,
    plan_opening,
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
        read_window(window, days)
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


def _open_everywhere(window: SendWindow, zones: tuple[str, ...], at: datetime) -> int:
    return sum(windows._inside(window, ZoneInfo(name), at) for name in zones)


def test_a_number_spanning_zones_goes_only_when_all_of_them_are_open() -> None:
    # South Dakota is split between Central and Mountain time: 09:00 comes an hour later in
    # Denver, and 20:00 an hour earlier in Chicago's zone.
    window = parse_window("09:00-20:00", None)
    zones = zones_for_number(SOUTH_DAKOTA)
    now = utc(2026, 6, 10, 14, 30)  # 09:30 Central (open), 08:30 Mountain (not yet)
    assert opening(window, zones, STOCKHOLM, now) == utc(2026, 6, 10, 15, 0)  # 09:00 MDT
    assert opening(window, zones[::-1], STOCKHOLM, now) == utc(2026, 6, 10, 15, 0)
    evening = utc(2026, 6, 11, 1, 30)  # 20:30 Central (closed), 19:30 Mountain (open)
    assert opening(window, zones, STOCKHOLM, evening) == utc(2026, 6, 11, 15, 0)


def test_a_russian_mobile_is_never_messaged_at_night_anywhere_in_russia() -> None:
    # Issue 9: the planner used to pick one zone and message Moscow at 04:00.
    window = parse_window("09:00-20:00", None)
    zones = zones_for_number("79123456789")
    assert "Europe/Moscow" in zones and "Asia/Kamchatka" in zones
    found = plan_opening(window, zones, STOCKHOLM, utc(2026, 6, 10, 12, 0))
    # Moscow (+3) to Kamchatka (+12) share 06:00-08:00 UTC: 09:00 in Moscow, 18:00 there.
    assert found.note is None
    assert found.at == utc(2026, 6, 11, 6, 0)
    assert _open_everywhere(window, zones, found.at) == len(zones)


def test_zones_whose_windows_never_overlap_wait_for_the_most_and_say_why() -> None:
    # A US toll-free number is placed in every North American zone, Guam to Newfoundland:
    # a two-hour window is never open in all of them at once.
    window = parse_window("09:00-11:00", None)
    zones = zones_for_number("18002345678")
    now = utc(2026, 6, 10, 0, 0)
    found = plan_opening(window, zones, STOCKHOLM, now)
    assert found.note is not None and "never overlap" in found.note
    assert found.at is not None
    most = _open_everywhere(window, zones, found.at)
    assert f"sent in the window of {most} of {len(zones)} zones" in found.note
    # No minute of the coming two weeks has more of them open, and none before has as many.
    minute = now
    while minute < now + timedelta(days=14):
        count = _open_everywhere(window, zones, minute)
        assert count <= most
        if minute < found.at:
            assert count < most, minute
        minute += timedelta(minutes=15)
    planner = WindowPlanner(window, STOCKHOLM, now)
    assert planner.note("18002345678") == found.note
    assert planner.note(SWEDEN) is None


RUSSIA = "79123456789"  # Kaliningrad to Kamchatka, and a few zones around them


def test_zones_whose_windows_never_overlap_use_the_campaign_zone_when_it_is_one_of_them() -> None:
    # A three-hour window is never open in all of Russia at once; with --tz Europe/Moscow the
    # sender says where its recipients are, so Moscow's window is used, not the overlap of the
    # most zones (04:00 UTC is 07:00 in Moscow).
    window = parse_window("09:00-12:00", None)
    zones = zones_for_number(RUSSIA)
    now = utc(2026, 6, 10, 0, 0)
    most = plan_opening(window, zones, STOCKHOLM, now)
    assert most.at == utc(2026, 6, 10, 4, 0) and "Europe/Moscow" in (most.note or "")
    found = plan_opening(window, zones, "Europe/Moscow", now)
    assert found.at == utc(2026, 6, 10, 6, 0)  # 09:00 in Moscow
    assert found.note is not None and found.note.startswith(windows.ZONES_NOTE)
    assert "the campaign's zone Europe/Moscow" in found.note
    left_out = found.note.split("(", 1)[1]
    assert "Asia/Kamchatka" in left_out and "Europe/Moscow" not in left_out
    # Inside Moscow's window it goes now; after it, the next morning in Moscow.
    assert plan_opening(window, zones, "Europe/Moscow", utc(2026, 6, 10, 8, 59)).at is None
    assert plan_opening(window, zones, "Europe/Moscow", utc(2026, 6, 10, 9, 0)).at == utc(
        2026, 6, 11, 6, 0
    )
    # A campaign zone that is not one of the number's says nothing of where it is.
    assert plan_opening(window, zones, "America/Chicago", now) == most


def test_the_send_time_check_keeps_a_message_inside_the_campaign_zone_s_window() -> None:
    # The worker checks the window again when it sends, with the campaign's --tz: a message
    # the load planned for Moscow's morning must not be held back to the most zones' overlap.
    from types import SimpleNamespace

    from config import Settings
    from workers.sending import _outside_window

    campaign = SimpleNamespace(window="09:00-12:00", days=None, tz="Europe/Moscow")
    rt = SimpleNamespace(settings=Settings(tz="UTC"))
    claimed = [SimpleNamespace(id=1, mobile=RUSSIA), SimpleNamespace(id=2, mobile=SWEDEN)]
    with time_machine.travel(utc(2026, 6, 10, 7, 30), tick=False):  # 10:30 in Moscow
        keep, held = _outside_window(rt, campaign, claimed, "claim")  # type: ignore[arg-type]
    assert [c.id for c in keep] == [1, 2]  # 09:30 in Stockholm: open there too
    assert held == []


# Multi-zone countries, with a number phonenumbers places in several zones.
MULTI_ZONE = {
    "RU": "79123456789",
    "AU": "61412345678",
    "US": "18002345678",  # toll free: all of North America
    "CA": "16135550123",
    "BR": "55800123456",
    "ID": "628001234567",
    "MX": "528001234567",
    "KZ": "77710009998",
    "CD": "243991234567",
    "MN": "97688123456",
    "EC": "593991234567",
    "ES": "34612345678",
    "PT": "351912345678",
    "NZ": "64211234567",
    "GL": "299221234",
    "PF": "68987123456",
}


def test_multi_zone_numbers_are_numbers_of_several_zones() -> None:
    several = [c for c, mobile in MULTI_ZONE.items() if len(zones_for_number(mobile)) > 1]
    assert len(several) >= 10, several


@pytest.mark.parametrize("country", sorted(MULTI_ZONE))
def test_brute_force_the_opening_is_the_first_minute_open_in_every_zone(country: str) -> None:
    # Minute by minute over a year of dates (every 19 days, so each weekday and both DST
    # changes come up), for a long window, a short one and a weekday one.
    zones = zones_for_number(MULTI_ZONE[country])
    tzinfos = [ZoneInfo(name) for name in zones]
    step = timedelta(minutes=1)
    for hours, days in (("09:00-20:00", None), ("10:00-12:00", None), ("08:00-21:00", "MON-FRI")):
        window = parse_window(hours, days)
        for n in range(20):
            now = utc(2026, 1, 3, 5, 7) + timedelta(days=19 * n, hours=7 * n)
            found = plan_opening(window, zones, "UTC", now)
            at = found.at or now
            counts_at = sum(windows._inside(window, tz, at) for tz in tzinfos)
            if found.note is None:
                assert counts_at == len(zones), (country, hours, days, now)
            minute = now
            while minute < at:
                count = sum(windows._inside(window, tz, minute) for tz in tzinfos)
                assert count < counts_at, (country, hours, days, now, minute)
                minute += step


def test_a_number_without_a_zone_uses_the_fallback() -> None:
    window = parse_window("09:00-20:00", None)
    now = utc(2026, 6, 10, 5, 0)
    assert opening(window, zones_for_number(UNPLACED), STOCKHOLM, now) == utc(2026, 6, 10, 7, 0)
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


def test_a_window_whose_only_day_falls_in_the_gap_opens_the_week_after() -> None:
    # Issue 9: --window 02:00-03:00 --days SUN in Stockholm from 2027-03-22 failed the load
    # ("does not open within 9 days"): Sunday 28 March loses 02:00-03:00 to the clock change.
    window = parse_window("02:00-03:00", "SUN")
    monday = utc(2027, 3, 22, 10, 0)
    assert opening(window, (STOCKHOLM,), "UTC", monday) == utc(2027, 4, 4, 0, 0)  # 02:00 CEST
    planner = WindowPlanner(window, STOCKHOLM, monday)
    assert planner.send_after(SWEDEN) == utc(2027, 4, 4, 0, 0)


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
    real_opening = windows.plan_opening

    def counting_opening(window, zones, fallback_tz, now):  # type: ignore[no-untyped-def]
        calls.append(tuple(zones))
        return real_opening(window, zones, fallback_tz, now)

    monkeypatch.setattr(windows, "plan_opening", counting_opening)
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


def test_at_in_the_skipped_hour_and_a_schedule_slot_there_fire_at_the_same_instant() -> None:
    # Issue 9: `--at 02:30` on the spring-forward day fired at 03:30, a cron slot at 03:00.
    from dispatcher.time_options import parse_at
    from workers.cron import slots_between

    at = parse_at("2027-03-28T02:30", STOCKHOLM)
    slots = slots_between("30 2 * * *", STOCKHOLM, utc(2027, 3, 27, 12, 0), utc(2027, 3, 28, 12, 0))
    assert at == slots[0] == utc(2027, 3, 28, 1, 0)  # 03:00 CEST: the end of the gap
    # A repeated wall time is its first pass in both.
    assert parse_at("2027-10-31T02:30", STOCKHOLM) == utc(2027, 10, 31, 0, 30)
