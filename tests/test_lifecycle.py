"""The lifecycle's tables against the changes the code builds: every decided change is a move
the tables allow, from the status it names."""

from __future__ import annotations

import itertools
from datetime import timedelta
from decimal import Decimal

import pytest

from workers import gateway, lifecycle
from workers.gateway import GatewayError, Outcome, Report, ReportState, SendResult
from workers.ledger import FINAL, CampaignState, Status, utcnow
from workers.lifecycle import CAMPAIGN_MOVES, MESSAGE_MOVES, Change, Claimed, NotSent, Tracked


def _error_kinds() -> list[type[GatewayError] | None]:
    found: list[type[GatewayError] | None] = [None]
    todo: list[type[GatewayError]] = [GatewayError]
    while todo:
        kind = todo.pop()
        found.append(kind)
        todo += kind.__subclasses__()
    return found


def _allowed(change: Change) -> None:
    assert lifecycle.may_move(change.expect, change.status), (change.expect, change.status)


def test_the_tables_name_every_status_and_finals_move_no_more() -> None:
    assert set(MESSAGE_MOVES) == set(Status)
    assert set(CAMPAIGN_MOVES) == set(CampaignState)
    assert all(not MESSAGE_MOVES[status] for status in FINAL)
    assert not CAMPAIGN_MOVES[CampaignState.COMPLETED]
    assert not CAMPAIGN_MOVES[CampaignState.CANCELLED]


def test_every_change_for_a_send_result_is_an_allowed_move_from_submitting(make_settings) -> None:
    settings = make_settings()
    now = utcnow()
    results: list[SendResult | NotSent | None] = [None, NotSent("not sent: stopped")]
    for outcome, kind in itertools.product(Outcome, _error_kinds()):
        results.append(SendResult(outcome, "ref", error="x", kind=kind))
    seen = set()
    for attempts, result, times in itertools.product(
        (1, settings.max_attempts), results, (None, (now, now))
    ):
        claimed = Claimed(1, "+46700000000", None, "ref", attempts)
        change = lifecycle.change_for_send(settings, claimed, result, "token", times)
        assert change.expect is Status.SUBMITTING
        _allowed(change)
        seen.add(change.status)
    expected = {Status.QUEUED, Status.SUBMITTING, Status.ACCEPTED, Status.REJECTED, Status.FAILED}
    assert seen == expected


def _tracked(status: Status, *, age: float, attempts: int, poll_count: int) -> Tracked:
    then = utcnow() - timedelta(seconds=age)
    accepted = None if status is Status.SUBMITTING else then
    return Tracked(1, 1, "+46700000000", "ref", status, attempts, poll_count, then, accepted, None)


@pytest.mark.parametrize("status", [Status.SUBMITTING, Status.ACCEPTED, Status.SENT])
def test_every_change_for_a_report_or_a_failed_look_up_is_an_allowed_move(
    make_settings, status
) -> None:
    settings = make_settings()
    # Young, past the report grace, past the validity period.
    ages = (0.0, settings.report_grace + 1, settings.validity + 1)
    seen = set()
    for age, attempts, poll_count in itertools.product(ages, (1, settings.max_attempts), (0, 3)):
        msg = _tracked(status, age=age, attempts=attempts, poll_count=poll_count)
        changes = [
            lifecycle.change_not_found(settings, msg, utcnow(), may_have_left=False),
            lifecycle.change_after_lookup_error(settings, msg, gateway.ServerError("down")),
            lifecycle.change_while_gateway_down(settings, msg),
        ]
        for state, may_have_left in itertools.product(ReportState, (True, False)):
            report = Report(state, dlr_status="x", cost=Decimal("0.1"), raw="{}")
            changes.append(
                lifecycle.change_for_report(settings, msg, report, may_have_left=may_have_left)
            )
        for change in changes:
            assert change.expect is status
            _allowed(change)
            seen.add(change.status)
    assert {Status.DELIVERED, Status.UNDELIVERED, Status.EXPIRED, Status.UNKNOWN} <= seen


def test_moves_made_in_sql_are_in_the_table() -> None:
    # claim_batch, the send window hold-back, cancel and cancel_leftovers, expire_waiting,
    # skip_past_deadline, an opt-out of a waiting number.
    made = [
        (Status.QUEUED, Status.SUBMITTING),
        (Status.SUBMITTING, Status.QUEUED),
        (Status.QUEUED, Status.CANCELLED),
        (Status.QUEUED, Status.EXPIRED),
        (Status.QUEUED, Status.SKIPPED),
        (Status.QUEUED, Status.SUPPRESSED),
    ]
    assert all(lifecycle.may_move(before, after) for before, after in made)


def test_campaign_moves_used_as_guards() -> None:
    assert set(lifecycle.campaign_sources(CampaignState.PAUSED)) == {
        CampaignState.SCHEDULED,
        CampaignState.RUNNING,
    }
    assert set(lifecycle.campaign_sources(CampaignState.COMPLETED)) == {
        CampaignState.RUNNING,
        CampaignState.PAUSED,
    }
    assert CampaignState.RUNNING in CAMPAIGN_MOVES[CampaignState.SCHEDULED]


def test_an_unknown_outcome_is_looked_at_again_when_its_grace_ends_not_a_backoff_later(
    make_settings,
) -> None:
    # A worker was killed mid-request: "not found" settles it once the grace period is over,
    # so the look-up after a long backoff step comes at the grace's end instead.
    settings = make_settings(report_grace=30.0, poll_backoff=[10, 30, 60, 120])
    msg = _tracked(Status.SUBMITTING, age=25.0, attempts=1, poll_count=3)
    error = gateway.ConnectError("cannot connect")
    change = lifecycle.change_after_lookup_error(settings, msg, error)
    assert msg.submitted_at is not None
    assert change.next_attempt_at == msg.submitted_at + timedelta(seconds=30)
    # Past the grace period the usual backoff applies.
    late = _tracked(Status.SUBMITTING, age=40.0, attempts=1, poll_count=3)
    later = lifecycle.change_after_lookup_error(settings, late, error)
    assert later.next_attempt_at is not None
    assert (later.next_attempt_at - utcnow()).total_seconds() == pytest.approx(60, abs=2)
