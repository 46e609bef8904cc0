"""Chaos suite: faults the real world brings, with real processes, mid-campaign.

Each scenario runs its own redis-server, the simulator (behind a door it can shut), two workers
and a beat on the real PostgreSQL, breaks one thing mid-campaign and then checks what a user
would: every message final and delivered, counts equal to the input, no ref accepted twice at
the gateway, and `dlr.php` look-ups within bounds of the same run without a fault. It prints the
time from the fault's end to the last message final. `SMS_CHAOS_SCALE=10` makes the outages ten
times longer (a run by hand); `-m "not chaos"` skips the suite.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.chaos import (
    SUBMIT_LEASE,
    Figures,
    Stack,
    continue_group,
    cut_database,
    kill_group,
    now,
    scaled,
    stack,
    stop_group,
)
from tests.conftest import _clean

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(900)]

TOTAL = 300
SETTLE = 90.0  # after the fault: how long the test waits for the campaign to end
OUTAGE = 8.0  # beat dead (seconds before SMS_CHAOS_SCALE)
# Gateway faults start halfway and outlast the retry budget of what is left (150 messages x 3
# attempts at 50/s = 9 s), so a sender that spends attempts on a sick gateway fails them.
GATEWAY_OUTAGE = 15.0
REDIS_OUTAGE = 5.0
DB_OUTAGE = 6.0
MAX_LOOKUP_RATIO = 1.5  # dlr.php look-ups per message, against the run without a fault
MAX_LOOKUPS_ONE_REF = 12


@pytest.fixture(scope="module")
def baseline(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Figures:
    """The same campaign and settings with nothing going wrong: the look-ups it costs."""
    _clean(pg_url)
    with stack(tmp_path_factory.mktemp("baseline"), pg_url) as world:
        before = world.gateway.stats()
        started = time.monotonic()
        campaign = world.send(TOTAL)
        figures = world.settle(
            "no fault (baseline)",
            campaign,
            TOTAL,
            sent_at=started,
            fault_end=None,
            timeout=SETTLE,
            stats_before=before,
        )
    assert figures.done, f"the baseline did not finish: {figures.line()}; {figures.diagnosis}"
    return figures


@pytest.fixture
def world(pg_url: str, tmp_path: Path) -> Iterator[Stack]:
    _clean(pg_url)
    with stack(tmp_path, pg_url) as running:
        yield running


@pytest.fixture
def show(figure: Callable[[str], None]) -> Callable[[str], None]:
    """The figures of each run, in the summary at the end of pytest's output (tests/conftest.py)."""
    return figure


def broken_promises(
    world: Stack, figures: Figures, baseline: Figures, show: Callable[[str], None]
) -> list[str]:
    """Prints the run's figures; returns every promise it broke, with its numbers."""
    figures.baseline_polls = baseline.polls_per_message
    show(figures.line())
    figures.record()
    problems = []
    if not figures.done:
        problems.append(f"not every message final within {SETTLE:.0f} s: {figures.diagnosis}")
    if sum(figures.counts.values()) != figures.total:
        problems.append(f"counts {figures.counts} do not add up to {figures.total}")
    if figures.counts != {"delivered": figures.total}:
        problems.append(f"the gateway delivers everything, yet the ledger says {figures.counts}")
    if figures.duplicates:
        problems.append(f"{figures.duplicates} refs accepted twice, e.g. {figures.duplicate_refs}")
    ratio = figures.polls_per_message / baseline.polls_per_message
    if ratio > MAX_LOOKUP_RATIO:
        problems.append(
            f"{figures.polls_per_message:.2f} look-ups per message, {ratio:.2f}x the "
            f"{baseline.polls_per_message:.2f} without a fault (limit {MAX_LOOKUP_RATIO}x)"
        )
    if figures.max_polls_per_ref > MAX_LOOKUPS_ONE_REF:
        problems.append(
            f"one ref looked up {figures.max_polls_per_ref} times (limit {MAX_LOOKUPS_ONE_REF})"
        )
    return [f"{figures.scenario}: {problem}" for problem in problems]


def check(world: Stack, figures: Figures, baseline: Figures, show: Callable[[str], None]) -> None:
    problems = broken_promises(world, figures, baseline, show)
    assert not problems, "\n".join(problems)


def check_status(world: Stack, campaign: int, total: int) -> None:
    """What `status` shows the user at the end."""
    status = world.status(campaign)
    assert (status["state"], status["total"], status["final"]) == ("completed", total, total)
    assert sum(status["counts"].values()) == total


def run_fault(
    world: Stack,
    scenario: str,
    fault: Callable[[Stack, int], None],
    *,
    total: int = TOTAL,
    start_share: float = 0.25,
) -> tuple[int, Figures]:
    """Send a campaign, run `fault` once a share of it is accepted, measure from its end."""
    before = world.gateway.stats()
    started = time.monotonic()
    campaign = world.send(total)
    world.wait_accepted(before["accepted"] + int(total * start_share))
    fault(world, campaign)
    fault_end = now()
    figures = world.settle(
        scenario,
        campaign,
        total,
        sent_at=started,
        fault_end=fault_end,
        timeout=SETTLE,
        stats_before=before,
    )
    return campaign, figures


def test_no_fault_baseline(baseline: Figures, show: Callable[[str], None]) -> None:
    show(baseline.line())
    baseline.record()
    assert baseline.counts == {"delivered": TOTAL}
    assert baseline.duplicates == 0
    assert baseline.max_polls_per_ref <= MAX_LOOKUPS_ONE_REF


def test_paused_worker_past_its_lease_sends_nothing_twice_three_times_in_a_row(
    world: Stack, baseline: Figures, show: Callable[[str], None]
) -> None:
    # A VM freeze, `docker pause` or Ctrl-Z: the group stops mid-batch holding claims, stays
    # stopped past its lease while the other worker works on, then wakes up. All three cycles
    # run before the verdict, so a failure shows the figures of each.
    problems: list[str] = []
    for cycle in range(3):
        victim = world.workers[("w1", "w2")[cycle % 2]]
        notes: dict[str, object] = {}

        def pause(world: Stack, campaign: int, victim=victim, notes=notes) -> None:
            accepted = world.gateway.stats()["accepted"]
            stop_group(victim)
            stopped = time.monotonic()
            # Two leases: its claims have lapsed and the other worker is taking them over.
            time.sleep(scaled(2 * SUBMIT_LEASE))
            notes["stopped"] = f"{time.monotonic() - stopped:.0f} s"
            notes["being sent again at SIGCONT"] = world.ledger.retaken(campaign)
            notes["accepted meanwhile"] = world.gateway.stats()["accepted"] - accepted
            continue_group(victim)

        campaign, figures = run_fault(
            world, f"worker paused past its lease #{cycle + 1}", pause, start_share=0.2
        )
        figures.notes = notes
        problems += broken_promises(world, figures, baseline, show)
        if not figures.done:
            break  # its messages would still be on the move in the next cycle
    assert not problems, "\n".join(problems)
    check_status(world, campaign, TOTAL)


def gateway_outage(world: Stack, campaign: int) -> None:
    world.gateway.down()  # connection refused; live connections reset
    time.sleep(scaled(GATEWAY_OUTAGE))
    world.gateway.up()


def gateway_5xx(world: Stack, campaign: int) -> None:
    world.gateway.configure(error_5xx=1.0)  # send_sms.php and dlr.php alike
    time.sleep(scaled(GATEWAY_OUTAGE))
    world.gateway.configure(error_5xx=0.0)


def redis_emptied(world: Stack, campaign: int) -> None:
    world.redis.kill()
    time.sleep(scaled(REDIS_OUTAGE))
    world.redis.start()  # no persistence: every key and queued notice is gone


def worker_paused(world: Stack, campaign: int) -> None:
    """w1's group SIGSTOPped for two leases (its claims lapse and are taken over), then woken."""
    stop_group(world.workers["w1"])
    time.sleep(scaled(2 * SUBMIT_LEASE))
    continue_group(world.workers["w1"])


def worker_killed(world: Stack, campaign: int) -> None:
    kill_group(world.workers["w1"])
    world.workers["w1"].stop()
    world.start_worker("w1")


def test_gateway_down_for_a_while(world: Stack, baseline: Figures, show) -> None:
    scenario = f"gateway down {scaled(GATEWAY_OUTAGE):.0f} s"
    campaign, figures = run_fault(world, scenario, gateway_outage, start_share=0.5)
    check(world, figures, baseline, show)
    check_status(world, campaign, TOTAL)


def test_gateway_answering_5xx_for_a_while(world: Stack, baseline: Figures, show) -> None:
    scenario = f"gateway 5xx {scaled(GATEWAY_OUTAGE):.0f} s"
    campaign, figures = run_fault(world, scenario, gateway_5xx, start_share=0.5)
    check(world, figures, baseline, show)
    check_status(world, campaign, TOTAL)


def test_worker_group_killed_three_times(world: Stack, baseline: Figures, show) -> None:
    total = 450
    first = world.gateway.stats()["accepted"]

    def kills(world: Stack, campaign: int) -> None:
        for i, name in enumerate(("w1", "w2", "w1")):
            if i:
                world.wait_accepted(first + total * (i + 1) // 5)
            kill_group(world.workers[name])  # SIGKILL to the group, pool children included
            world.workers[name].stop()
            world.start_worker(name)

    campaign, figures = run_fault(world, "worker group SIGKILLed 3 times", kills, total=total)
    check(world, figures, baseline, show)
    check_status(world, campaign, total)


def test_redis_killed_and_started_empty(world: Stack, baseline: Figures, show) -> None:
    campaign, figures = run_fault(world, "Redis killed, started empty", redis_emptied)
    check(world, figures, baseline, show)
    check_status(world, campaign, TOTAL)


def test_redis_killed_and_restarted_from_aof(
    pg_url: str, tmp_path: Path, baseline: Figures, show
) -> None:
    def restart(world: Stack, campaign: int) -> None:
        world.redis.kill()
        time.sleep(scaled(REDIS_OUTAGE))
        world.redis.start()  # appendonly: keys and queued notices come back

    _clean(pg_url)
    with stack(tmp_path, pg_url, aof=True) as world:
        campaign, figures = run_fault(world, "Redis killed, restarted from AOF", restart)
        check(world, figures, baseline, show)
        check_status(world, campaign, TOTAL)


def test_database_connections_dropped_for_a_while(world: Stack, baseline: Figures, show) -> None:
    def cut(world: Stack, campaign: int) -> None:
        cut_database(world.database_url, scaled(DB_OUTAGE))

    campaign, figures = run_fault(world, f"database cut off {scaled(DB_OUTAGE):.0f} s", cut)
    check(world, figures, baseline, show)
    check_status(world, campaign, TOTAL)


def beat_dead_then_two(world: Stack, campaign: int) -> None:
    kill_group(world.beats["beat1"])
    time.sleep(scaled(OUTAGE))
    world.start_beat("beat2")
    world.start_beat("beat3")  # two beats at once must be harmless


def test_beat_killed_then_two_beats(world: Stack, baseline: Figures, show) -> None:
    scenario = f"beat dead {scaled(OUTAGE):.0f} s, then two beats"
    campaign, figures = run_fault(world, scenario, beat_dead_then_two)
    check(world, figures, baseline, show)
    check_status(world, campaign, TOTAL)


def test_embedded_ledger_under_the_same_faults(tmp_path: Path, baseline, show) -> None:
    # The faults that apply to the embedded ledger (SQLite, one file shared by every process),
    # one campaign each: its database cannot be cut off like a server's, and its Redis keeps
    # no AOF; the rest applies.
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    problems: list[str] = []
    with stack(tmp_path, ledger) as world:
        for scenario, fault, share in (
            ("embedded ledger: worker group SIGKILLed", worker_killed, 0.25),
            ("embedded ledger: worker paused past its lease", worker_paused, 0.2),
            (f"embedded ledger: gateway down {scaled(GATEWAY_OUTAGE):.0f} s", gateway_outage, 0.5),
            (f"embedded ledger: gateway 5xx {scaled(GATEWAY_OUTAGE):.0f} s", gateway_5xx, 0.5),
            ("embedded ledger: Redis killed, started empty", redis_emptied, 0.25),
            # Last: two beats run from here on.
            (f"embedded ledger: beat dead {scaled(OUTAGE):.0f} s, then two beats",
             beat_dead_then_two, 0.25),
        ):  # fmt: skip
            campaign, figures = run_fault(world, scenario, fault, start_share=share)
            problems += broken_promises(world, figures, baseline, show)
            if not figures.done:
                break
            check_status(world, campaign, TOTAL)
    assert not problems, "\n".join(problems)
