"""The message and campaign lifecycle, written down once: which status may follow which, and
the change each send result or delivery report calls for.

Messages (a row is born `queued`, or already final: invalid, duplicate, suppressed, ...)::

    queued ──claim──▶ submitting ──accepted──▶ accepted ◀──report──▶ sent
      ▲                 │   ▲  │                  │                   │
      └──── not sent, ──┘   └──┘ outcome unknown: └─────────┬─────────┘
            retry later          looked up                  ▼
                                         delivered, undelivered, expired, unknown
    queued ─────▶ cancelled, expired, skipped, suppressed   (cancel, sweep, opt-out)
    submitting ─▶ rejected, failed                          (answers about the message)
    submitting ─▶ any report status                         (a lost reply, looked up)

Campaigns::

    loading ──▶ scheduled ──▶ running ──▶ completed
                  ▲    │        ▲    │        ▲
                  │    ▼        │    ▼        │
                  └── paused ◀──┘  paused ────┘  (nothing left to send)
    every state but completed ──▶ cancelled

Every change names the status it was decided from (`Change.expect`); the ledger applies it
only while the row still has that status, so of two deciders racing on one message (a send
and a look-up, a look-up and the sweep) only the first moves it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from config import Settings
from workers.gateway import GatewayError, Outcome, Report, ReportState, SendResult
from workers.ledger import FINAL, CampaignState, Status, utcnow

# --- the moves ------------------------------------------------------------------------------

_REPORTED = frozenset({Status.DELIVERED, Status.UNDELIVERED, Status.EXPIRED, Status.UNKNOWN})

# From-status -> the statuses a change may leave it in. A status that may follow itself
# (a look-up that only reschedules the next one) lists itself. Final statuses move no more.
MESSAGE_MOVES: dict[Status, frozenset[Status]] = {
    Status.QUEUED: frozenset(
        {
            Status.SUBMITTING,  # claimed for a send
            Status.CANCELLED,  # its campaign was cancelled
            Status.EXPIRED,  # waited past the validity period
            Status.SKIPPED,  # its own send time passed
            Status.SUPPRESSED,  # the number opted out meanwhile
        }
    ),
    Status.SUBMITTING: frozenset(
        {
            Status.SUBMITTING,  # outcome unknown: looked up again later
            Status.QUEUED,  # not sent, or to be sent again
            Status.ACCEPTED,
            Status.SENT,  # a lost reply, found on its way by a look-up
            Status.REJECTED,
            Status.FAILED,
            *_REPORTED,
        }
    ),
    Status.ACCEPTED: frozenset({Status.ACCEPTED, Status.SENT, *_REPORTED}),
    # A report may say "pending" again after "sending": the gateway's word is taken as it is.
    Status.SENT: frozenset({Status.SENT, Status.ACCEPTED, *_REPORTED}),
    **{status: frozenset() for status in FINAL},
}

CAMPAIGN_MOVES: dict[CampaignState, frozenset[CampaignState]] = {
    # A load that fails is deleted, not moved; one that ends becomes scheduled or running.
    CampaignState.LOADING: frozenset(
        {CampaignState.SCHEDULED, CampaignState.RUNNING, CampaignState.CANCELLED}
    ),
    CampaignState.SCHEDULED: frozenset(
        {CampaignState.RUNNING, CampaignState.PAUSED, CampaignState.CANCELLED}
    ),
    CampaignState.RUNNING: frozenset(
        {CampaignState.PAUSED, CampaignState.COMPLETED, CampaignState.CANCELLED}
    ),
    # Resumed to scheduled while its start time is still ahead; completed when its last
    # messages became final while it was paused.
    CampaignState.PAUSED: frozenset(
        {
            CampaignState.RUNNING,
            CampaignState.SCHEDULED,
            CampaignState.COMPLETED,
            CampaignState.CANCELLED,
        }
    ),
    CampaignState.COMPLETED: frozenset(),
    CampaignState.CANCELLED: frozenset(),
}


def may_move(expect: Status, status: Status) -> bool:
    """Whether a message in status `expect` may be changed to `status`."""
    return status in MESSAGE_MOVES[expect]


def campaign_sources(state: CampaignState) -> list[CampaignState]:
    """The campaign states from which a campaign may move to `state`."""
    return [source for source in CampaignState if state in CAMPAIGN_MOVES[source]]


# --- the records ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Claimed:
    """A message claimed for one send attempt."""

    id: int
    mobile: str
    text: str | None
    ref: str
    attempts: int
    parts: int = 1


@dataclass(frozen=True, slots=True)
class Tracked:
    """What a report look-up needs to know about one message."""

    id: int
    campaign_id: int
    mobile: str
    ref: str
    status: Status
    attempts: int
    poll_count: int
    submitted_at: datetime | None
    accepted_at: datetime | None
    validity: float | None
    claim: str | None = None
    deadline: datetime | None = None


@dataclass(frozen=True, slots=True)
class Change:
    """The new values of one message's columns after an attempt or a report.

    `expect` is the status the change was decided from: the row changes only while it still
    has it, and (`expect`, `status`) must be a move of `MESSAGE_MOVES`.

    Columns a change resets (written as given, so a field left None clears the column):
    `status`, `last_error`, `next_attempt_at`, `next_poll_at`, `final_at`.
    Columns it keeps unless it gives a value: `submitted_at`, `cost`, `dlr_status`,
    `dlr_raw`, `send_after`; `accepted_at` keeps its first value (the first acceptance).
    Columns it moves by a step: `attempts` (minus `refund`, which gives back the attempt the
    claim spent: account problems, not sent at all), `poll_count` (plus `poll_count_add`).
    `claim`: the claim token the row must still carry (bare or revoked, `~token`) for the
    change to apply; a change that keeps the row `submitting` stores it revoked, so the
    look-up knows whose attempt it was. Leaving `submitting` clears the claim.
    `left`: the request may have reached the gateway; the kept claim says so in the ledger
    (`fencing.left_claim`), so no Redis marker is needed to keep it from a second send.
    Every other column (number, text, ref, parts, batch, deadline, ...) is never touched.
    """

    id: int
    status: Status
    expect: Status
    claim: str | None = None
    refund: int = 0
    last_error: str | None = None
    next_attempt_at: datetime | None = None
    next_poll_at: datetime | None = None
    accepted_at: datetime | None = None
    final_at: datetime | None = None
    cost: Decimal | None = None
    poll_count_add: int = 0
    submitted_at: datetime | None = None  # when this message's own request left
    dlr_status: str | None = None
    dlr_raw: str | None = None
    send_after: datetime | None = None
    left: bool = False


# --- send results ---------------------------------------------------------------------------

NOT_SENT = "not sent: campaign stopped"


@dataclass(frozen=True, slots=True)
class NotSent:
    """A claimed message that was not handed to the gateway, and why (it keeps its attempt)."""

    reason: str


def retry_delay(settings: Settings, attempts: int) -> float:
    """Exponential backoff with full jitter, capped: spreads retries of a busy gateway."""
    ceiling = min(settings.retry_max, settings.retry_base * 2 ** max(0, attempts - 1))
    return random.uniform(ceiling / 2, ceiling)


def change_for_send(
    settings: Settings,
    claimed: Claimed,
    result: SendResult | NotSent | None,
    claim: str | None,
    times: tuple[datetime, datetime] | None = None,
) -> Change:
    """The ledger change one send result calls for (None: stopped before it was sent).

    Every change carries the batch's claim token, so it applies only while the claim is ours.
    `times` are when this message's request left and when its answer came.
    """
    now = utcnow()
    if result is None or isinstance(result, NotSent):
        reason = NOT_SENT if result is None else result.reason
        return Change(
            claimed.id,
            Status.QUEUED,
            expect=Status.SUBMITTING,
            claim=claim,
            refund=1,
            last_error=reason,
        )
    sent_at, answered_at = times or (None, now)
    if result.outcome is Outcome.ACCEPTED:
        first_poll = answered_at + timedelta(seconds=settings.poll_backoff[0])
        return Change(
            claimed.id,
            Status.ACCEPTED,
            expect=Status.SUBMITTING,
            claim=claim,
            accepted_at=answered_at,
            next_poll_at=first_poll,
            submitted_at=sent_at,
        )
    if sent_at is not None:
        # Every other answer keeps the time its request left, then the outcome's own change.
        return replace(_change_after_answer(settings, claimed, result, claim), submitted_at=sent_at)
    return _change_after_answer(settings, claimed, result, claim)


def _change_after_answer(
    settings: Settings, claimed: Claimed, result: SendResult, claim: str | None
) -> Change:
    now = utcnow()
    error = result.error
    sent = Status.SUBMITTING
    if result.outcome is Outcome.ACCOUNT:
        return Change(
            claimed.id, Status.QUEUED, expect=sent, claim=claim, refund=1, last_error=error
        )
    if result.outcome is Outcome.REJECTED:
        return Change(
            claimed.id, Status.REJECTED, expect=sent, claim=claim, last_error=error, final_at=now
        )
    if result.outcome is Outcome.UNKNOWN:
        check = now + timedelta(seconds=settings.unknown_recheck)
        # The request may have reached the gateway: the ledger says so for good (`left`), so
        # the look-up never takes it for one that never left, however long it waits.
        return Change(
            claimed.id,
            Status.SUBMITTING,
            expect=sent,
            claim=claim,
            last_error=error,
            next_attempt_at=check,
            left=True,
        )
    if result.kind is not None and result.kind.gateway_trouble:
        # The gateway's trouble, not the message's: no attempt spent; the circuit decides
        # when sending goes on, and only the validity period ends the message.
        later = now + timedelta(seconds=retry_delay(settings, 1))
        return Change(
            claimed.id,
            Status.QUEUED,
            expect=sent,
            claim=claim,
            refund=1,
            last_error=error,
            next_attempt_at=later,
        )
    # Answers about the message itself: again later, until the attempts run out.
    if claimed.attempts >= settings.max_attempts:
        busy = result.kind is not None and result.kind.busy
        final = Status.REJECTED if busy else Status.FAILED
        return Change(claimed.id, final, expect=sent, claim=claim, last_error=error, final_at=now)
    later = now + timedelta(seconds=retry_delay(settings, claimed.attempts))
    return Change(
        claimed.id,
        Status.QUEUED,
        expect=sent,
        claim=claim,
        last_error=error,
        next_attempt_at=later,
    )


# --- delivery reports -----------------------------------------------------------------------


def status_for(report: Report) -> Status | None:
    """Our message status for a report, or None when the gateway does not know the ref."""
    return {
        ReportState.PENDING: Status.ACCEPTED,
        ReportState.SENDING: Status.SENT,
        ReportState.OTHER: Status.SENT,
        ReportState.DELIVERED: Status.DELIVERED,
        ReportState.FAILED: Status.UNDELIVERED,
        ReportState.DELETED: Status.UNKNOWN,
        ReportState.NOT_FOUND: None,
    }[report.state]


def next_poll(settings: Settings, poll_count: int, now: datetime) -> datetime:
    """Back off: 10 s, 30 s, 1 min ... then the last step over and over."""
    steps = settings.poll_backoff
    return now + timedelta(seconds=steps[min(poll_count, len(steps) - 1)])


def _expired(settings: Settings, msg: Tracked, now: datetime) -> bool:
    if msg.deadline is not None and now >= msg.deadline:
        return True  # a reminder's report after its appointment is of no use either
    since = msg.accepted_at or msg.submitted_at
    validity = msg.validity if msg.validity is not None else settings.validity
    return since is not None and (now - since).total_seconds() > validity


def _expire(msg: Tracked, now: datetime, **extra: Any) -> Change:
    return Change(
        msg.id,
        Status.EXPIRED,
        expect=msg.status,
        last_error="no final report within the validity period",
        final_at=now,
        **extra,
    )


def change_for_report(
    settings: Settings, msg: Tracked, report: Report, *, may_have_left: bool = True
) -> Change:
    """The ledger change one report calls for.

    `may_have_left` is False only for a lapsed claim whose request is known never to have
    left this side: "not found" then needs no grace period.
    """
    now = utcnow()
    status = status_for(report)
    if status is None:
        return change_not_found(settings, msg, now, may_have_left=may_have_left)
    if status in (Status.DELIVERED, Status.UNDELIVERED, Status.UNKNOWN):
        error = report.dlr_error or (report.dlr_status if status is not Status.DELIVERED else None)
        if status is Status.UNKNOWN:
            error = "the gateway has no report (deleted)"
        return Change(
            msg.id,
            status,
            expect=msg.status,
            last_error=error,
            accepted_at=now,
            final_at=now,
            cost=report.cost,
            poll_count_add=1,
            dlr_status=report.dlr_status,
            dlr_raw=report.raw,
        )
    if _expired(settings, msg, now):
        return _expire(msg, now, poll_count_add=1, dlr_status=report.dlr_status, dlr_raw=report.raw)
    # Still on its way: a lost submit reply is now known to be accepted.
    return Change(
        msg.id,
        status,
        expect=msg.status,
        last_error=None,
        accepted_at=now,
        next_poll_at=next_poll(settings, msg.poll_count, now),
        cost=report.cost,
        poll_count_add=1,
        dlr_status=report.dlr_status,
        dlr_raw=report.raw,
    )


def _recheck(settings: Settings, msg: Tracked, now: datetime) -> datetime:
    """When to look an unknown outcome up again: soon at first, then backing off like polls,
    but never past the end of the grace period, when "not found" settles it."""
    if msg.poll_count == 0:
        step = now + timedelta(seconds=settings.unknown_recheck)
    else:
        step = next_poll(settings, msg.poll_count - 1, now)
    if msg.submitted_at is not None:
        grace_end = msg.submitted_at + timedelta(seconds=settings.report_grace)
        if now < grace_end < step:
            return grace_end
    return step


def change_not_found(
    settings: Settings, msg: Tracked, now: datetime, *, may_have_left: bool = True
) -> Change:
    """The change for a message the gateway does not know (or that never left this side)."""
    if msg.status is Status.SUBMITTING:
        if not may_have_left:
            # The claim lapsed before its request left (the sender's marker is missing): the
            # gateway never saw it, so it goes again at once, attempt given back.
            return Change(
                msg.id,
                Status.QUEUED,
                expect=msg.status,
                claim=msg.claim,
                refund=1,
                last_error="not sent before its claim lapsed; queued again",
            )
        # The answer to our send never came. Until the grace period is over the gateway may
        # still register it; after that it never got it, and a resend is safe.
        age = (now - (msg.submitted_at or now)).total_seconds()
        if age < settings.report_grace:
            return Change(
                msg.id,
                Status.SUBMITTING,
                expect=msg.status,
                claim=msg.claim,
                last_error="outcome unknown",
                next_attempt_at=_recheck(settings, msg, now),
                poll_count_add=1,
            )
        if msg.attempts >= settings.max_attempts:
            return Change(
                msg.id,
                Status.FAILED,
                expect=msg.status,
                claim=msg.claim,
                last_error="not received by the gateway",
                final_at=now,
            )
        return Change(
            msg.id,
            Status.QUEUED,
            expect=msg.status,
            claim=msg.claim,
            last_error="not received by the gateway; resending",
        )
    age = (now - (msg.accepted_at or now)).total_seconds()
    if age < settings.report_grace:
        soon = now + timedelta(seconds=settings.poll_backoff[0])
        return Change(msg.id, msg.status, expect=msg.status, next_poll_at=soon, poll_count_add=1)
    return Change(
        msg.id,
        Status.UNKNOWN,
        expect=msg.status,
        last_error="the gateway does not know this message",
        final_at=now,
        poll_count_add=1,
    )


def change_while_gateway_down(settings: Settings, msg: Tracked) -> Change:
    """The gateway circuit is open: no look-up is made and none is counted; the message is
    due again soon, and `poll_due` leases it only once the probe has closed the circuit."""
    now = utcnow()
    if msg.status is Status.SUBMITTING:
        return Change(
            msg.id,
            Status.SUBMITTING,
            expect=msg.status,
            claim=msg.claim,
            last_error="outcome unknown; waiting for the gateway to look it up",
            next_attempt_at=now + timedelta(seconds=settings.unknown_recheck),
        )
    return Change(
        msg.id,
        msg.status,
        expect=msg.status,
        next_poll_at=now + timedelta(seconds=settings.poll_backoff[0]),
    )


def change_after_lookup_error(settings: Settings, msg: Tracked, error: GatewayError) -> Change:
    """The look-up itself failed: try again later; the message's state does not change."""
    now = utcnow()
    if msg.status is Status.SUBMITTING:
        error_text = f"outcome unknown; look-up failed: {error.message}"
        return Change(
            msg.id,
            Status.SUBMITTING,
            expect=msg.status,
            claim=msg.claim,
            last_error=error_text,
            next_attempt_at=_recheck(settings, msg, now),
            poll_count_add=1,
        )
    if _expired(settings, msg, now):
        return _expire(msg, now)
    # Each failed look-up moves the message a step along the backoff, like a poll: a gateway
    # answering 5xx must not be asked again and again at the first step.
    return Change(
        msg.id,
        msg.status,
        expect=msg.status,
        next_poll_at=next_poll(settings, msg.poll_count, now),
        last_error=f"report look-up failed: {error.message}",
        poll_count_add=1,
    )
