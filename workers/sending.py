"""Sending one batch: claim its due messages, submit them at the shared rate, record outcomes.

The claim comes before any request, so a message is only ever in one sender's hands; an
attempt whose answer never came stays `submitting` until tracking looks its ref up.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, wait
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from workers import budget, campaign_moves, circuit, claims, fencing, ledger_reads
from workers.fencing import BatchClaim
from workers.gateway import GatewayClient, Outcome, SendResult, Withheld
from workers.ledger import Status, utcnow
from workers.lifecycle import NOT_SENT, Change, Claimed, NotSent, change_for_send
from workers.notices import halt_campaigns, halt_reason
from workers.outages import OUTAGE_ERRORS, REDIS_ERRORS, retry_database, tracker
from workers.runtime import Runtime
from workers.throttle import Admission, SlotFeeder
from workers.windows import WindowPlanner, parse_window

log = logging.getLogger("sms.sending")
YIELDED = "not sent yet: higher-priority campaigns have the rate"
WATCH_EVERY = 0.2  # seconds between a batch's looks at halt flags, the circuit and lanes
# When only requests still waiting for their answer remain, and each has been on the wire this
# many times the batch's median answer time (at least STRAGGLER_MIN, at most STRAGGLER_WAIT
# seconds), the batch ends and leaves them to the look-up (their in-flight markers stay): one
# late reply must not hold a whole process idle for the gateway timeout. Every process's
# batches end at about the same moment (they share the rate evenly), so each second a batch
# waits at its end is a second the whole account sends nothing.
STRAGGLER_FACTOR = 4.0
STRAGGLER_MIN = 0.25
STRAGGLER_WAIT = 1.0
STRAGGLER = "no answer yet when its batch ended; looked up"


@dataclass
class BatchReport:
    """What one batch did, for the task's return value and logs (counts only, no numbers)."""

    campaign: int
    batch: int
    claimed: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    paused: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "campaign": self.campaign,
            "batch": self.batch,
            "claimed": self.claimed,
            "outcomes": self.outcomes,
            "paused": self.paused,
        }


class _Sender:
    """Submits claimed messages from a thread pool, each at its own rate-limit slot."""

    def __init__(
        self,
        rt: Runtime,
        gateway: GatewayClient,
        feeder: SlotFeeder,
        campaign: int,
        hold: BatchClaim,
        lane: str = "normal",
    ) -> None:
        self.rt = rt
        self.lane = lane
        self.gateway = gateway
        self.feeder = feeder
        self.campaign = campaign
        self.hold = hold
        self.breaker = circuit.Breaker(rt.redis, rt.settings.circuit_threshold)
        self.stop = threading.Event()
        self.stop_reason: str | None = None
        self.times: dict[int, tuple[datetime, datetime]] = {}  # request left, answer came
        self.in_request: dict[int, float] = {}  # message -> when its request left (monotonic)
        self.answer_times: list[float] = []  # seconds each answered request took
        self._checked = 0.0
        self._lock = threading.Lock()
        self.marker_ttl = fencing.MARKER_TTL

    def _stop(self, reason: str) -> None:
        with self._lock:
            if self.stop_reason is None:
                self.stop_reason = reason
        self.stop.set()

    def _halted(self) -> bool:
        # Another worker may have paused or cancelled the campaign, or the gateway circuit may
        # have opened: look at most every 200 ms.
        if self.stop.is_set():
            return True
        now = time.monotonic()
        with self._lock:
            if now - self._checked < 0.2:
                return False
            self._checked = now
        reason = halt_reason(self.rt.redis, self.campaign)
        if reason:
            self._stop(reason)
        else:
            open_circuit = circuit.state(self.rt.redis)
            if open_circuit is not None:
                self._stop(f"not sent: {open_circuit.describe()}")
        return self.stop.is_set()

    def watch(self) -> None:
        """Stop the batch when it was halted, the circuit opened or a lane above needs the rate."""
        if self._halted():
            return
        if self.rt.send_guard.blocked(self.lane):
            self._stop(YIELDED)

    def send(self, claimed: Claimed, sender: str, template: str) -> SendResult | NotSent:
        try:
            return self._send(claimed, sender, template)
        except REDIS_ERRORS as exc:
            # The request never left (the marker comes first): queue it again at once.
            tracker.failed(exc)
            self._stop("not sent: Redis unreachable")
            return NotSent("not sent: Redis unreachable")

    def _send(self, claimed: Claimed, sender: str, template: str) -> SendResult | NotSent:
        if self._halted() or not self.feeder.wait(self.stop) or self._halted():
            return NotSent(self.stop_reason or NOT_SENT)
        # Room in the account's one-second window, and the in-flight marker, in one step.
        admission = self.rt.send_guard.admit(
            fencing.inflight_key(claimed.id), self.marker_ttl, self.stop, self.lane
        )
        if admission is Admission.YIELD:
            self._stop(YIELDED)
        if admission is not Admission.SEND:
            return NotSent(self.stop_reason or NOT_SENT)
        # After the marker, before the request: a claim we may have lost is never sent.
        if not self.hold.held():
            self._stop("not sent: the claim lapsed (worker paused or cut off)")
            fencing.clear_in_flight(self.rt.redis, [claimed.id])
            return NotSent(self.stop_reason or NOT_SENT)
        sent_at = utcnow()
        left = time.monotonic()
        with self._lock:
            self.in_request[claimed.id] = left
        try:
            result = self.gateway.send(
                claimed.mobile, sender, claimed.text or template, claimed.ref, guard=self.hold.held
            )
        except Withheld:
            # Stopped between the check above and the write: the same answer, a moment later.
            self._stop("not sent: the claim lapsed (worker paused or cut off)")
            fencing.clear_in_flight(self.rt.redis, [claimed.id])
            return NotSent(self.stop_reason or NOT_SENT)
        finally:
            with self._lock:
                self.in_request.pop(claimed.id, None)
        self.answer_times.append(time.monotonic() - left)
        self.times[claimed.id] = (sent_at, utcnow())
        if result.outcome is Outcome.ACCOUNT:
            self._stop(result.error or "account problem")
        self.breaker.record(result)
        return result

    def straggler_after(self) -> float:
        """How long a request may be on the wire before the batch stops waiting for it."""
        answered = sorted(self.answer_times[-200:])
        if not answered:
            return STRAGGLER_WAIT
        typical = answered[len(answered) // 2]
        return min(STRAGGLER_WAIT, max(STRAGGLER_MIN, STRAGGLER_FACTOR * typical))


def _outside_window(
    rt: Runtime, campaign: Any, claimed: list[Claimed], claim: str
) -> tuple[list[Claimed], list[Change]]:
    """Hold back messages whose send window closed while they waited in a backlog."""
    window = parse_window(campaign.window, campaign.days)
    if window is None:
        return claimed, []
    planner = WindowPlanner(window, campaign.tz or rt.settings.tz, utcnow())
    keep, held = [], []
    for claimed_message in claimed:
        opens = planner.send_after(claimed_message.mobile)
        if opens is None:
            keep.append(claimed_message)
        else:
            held.append(
                Change(
                    claimed_message.id,
                    Status.QUEUED,
                    expect=Status.SUBMITTING,
                    claim=claim,
                    refund=1,
                    send_after=opens,
                )
            )
    return keep, held


def _hold_leases(
    rt: Runtime, sender: _Sender, by_future: dict[Future[Any], Claimed]
) -> set[Future[Any]]:
    """Wait for the batch, renewing the lease of what it still holds; returns the stragglers.

    A slow batch (a low rate, many workers sharing it) must not look abandoned. Only a renewal
    the ledger confirmed moves the batch's deadline; a renewal that finds a claim revoked, or
    that cannot reach the ledger, lets the deadline run out and the senders stop.
    """
    lease = rt.settings.submit_lease
    pending: set[Future[Any]] = set(by_future)
    renew_at = time.monotonic() + lease / 4
    watch_at = 0.0
    while pending:
        # A short wait, so a batch with only overdue requests left ends soon after they are;
        # the looks at Redis below stay at WATCH_EVERY.
        _, pending = wait(pending, timeout=min(WATCH_EVERY / 4, lease / 4))
        if not pending:
            break
        now = time.monotonic()
        with sender._lock:
            ages = [now - t for f in pending if (t := sender.in_request.get(by_future[f].id))]
        # Only requests on the wire are left, and even the last to leave is overdue.
        if len(ages) == len(pending) and min(ages) >= sender.straggler_after():
            return pending
        # Senders asleep until their slot must hear of a halt, an open circuit or a lane
        # above that needs the rate without waiting for that slot.
        if now >= watch_at:
            watch_at = now + WATCH_EVERY
            try:
                sender.watch()
            except REDIS_ERRORS as exc:
                tracker.failed(exc)
        if time.monotonic() < renew_at:
            continue
        renew_at = time.monotonic() + lease / 4
        held = [by_future[f].id for f in pending]
        asked = time.monotonic()
        try:
            kept = claims.renew_lease(rt.engine, held, lease, sender.hold.token)
        except OUTAGE_ERRORS as exc:
            tracker.failed(exc)
            continue
        if len(kept) == len(held):
            sender.hold.confirmed(asked)
        else:
            # Someone revoked part of the claim: the run is over for every message it holds.
            sender._stop("not sent: the claim was taken over (worker paused past its lease)")
    return set()


def _stop_at_cap(
    rt: Runtime, report: BatchReport, claimed: list[Claimed], token: str, reason: str
) -> BatchReport:
    """The batch would pass a spending cap: nothing is sent and the campaign pauses."""
    not_sent = NotSent(f"not sent: {reason}")
    changes = [change_for_send(rt.settings, c, not_sent, token) for c in claimed]
    skipped = claims.apply_changes(rt.engine, changes)
    if skipped:
        log.warning(
            "batch %s of campaign %s: %s not-sent rows not recorded (claim taken over meanwhile)",
            report.batch,
            report.campaign,
            skipped,
        )
    paused = campaign_moves.pause_running(rt.engine, reason, report.campaign)
    halt_campaigns(rt.redis, paused, reason)
    report.outcomes["not_sent"] = len(claimed)
    report.paused = reason
    log.warning("campaign %s paused: %s", report.campaign, reason)
    return report


def send_batch(rt: Runtime, campaign_id: int, batch: int) -> BatchReport:
    """Claim and send one batch of a running campaign. Safe to run twice: claims guard it."""
    report = BatchReport(campaign_id, batch)
    settings = rt.settings
    if halt_reason(rt.redis, campaign_id) or circuit.state(rt.redis) is not None:
        return report
    if rt.send_guard.blocked(ledger_reads.campaign_lane(rt.engine, campaign_id)):
        return report  # a lane above needs the rate; the next tick offers the batch again
    campaign = ledger_reads.get_campaign(rt.engine, campaign_id)
    caps = budget.caps_for(settings, campaign)
    budget.prepare(rt.redis, rt.engine, settings, caps)
    hold = BatchClaim.start(rt.redis, settings.submit_lease)
    asked = time.monotonic()
    claimed = claims.claim_batch(
        rt.engine,
        campaign_id,
        batch,
        limit=settings.batch_size,
        lease=settings.submit_lease,
        token=hold.token,
    )
    hold.confirmed(asked)
    report.claimed = len(claimed)
    if not claimed:
        return report
    booked_parts = sum(c.parts for c in claimed)
    amount = settings.unit_cost * booked_parts
    over = budget.book(rt.redis, rt.engine, settings, caps, amount, hold.token)
    if over:
        return _stop_at_cap(rt, report, claimed, hold.token, over)
    claimed, changes = _outside_window(rt, campaign, claimed, hold.token)
    # Held back by the window: not sent now, so not spent.
    unspent = settings.unit_cost * (booked_parts - sum(c.parts for c in claimed))
    sender = _Sender(rt, rt.gateway, rt.send_feeder, campaign_id, hold, campaign.priority)
    futures = [rt.pool.submit(sender.send, c, campaign.sender, campaign.template) for c in claimed]
    stragglers = _hold_leases(rt, sender, dict(zip(futures, claimed, strict=True)))
    account_error: str | None = None
    settled: list[int] = []  # messages whose request's fate is known: markers can go
    for claim, future in zip(claimed, futures, strict=True):
        try:
            result: SendResult | NotSent = (
                SendResult(Outcome.UNKNOWN, claim.ref, error=STRAGGLER)
                if future in stragglers
                else future.result()
            )
        except Exception:  # a bug in one send must not strand the others in `submitting`
            log.exception("send of message %s crashed", claim.id)
            result = SendResult(Outcome.UNKNOWN, claim.ref, error="internal error during send")
        changes.append(
            change_for_send(settings, claim, result, hold.token, sender.times.get(claim.id))
        )
        key = "not_sent" if isinstance(result, NotSent) else str(result.outcome)
        report.outcomes[key] = report.outcomes.get(key, 0) + 1
        if isinstance(result, NotSent) or result.outcome is not Outcome.UNKNOWN:
            settled.append(claim.id)
        if isinstance(result, NotSent) or result.outcome not in (Outcome.ACCEPTED, Outcome.UNKNOWN):
            unspent += settings.unit_cost * claim.parts
        if isinstance(result, SendResult) and result.outcome is Outcome.ACCOUNT:
            account_error = result.error
    # Outcomes are what keeps a message from being sent again: wait out a database blip.
    skipped = retry_database(
        lambda: claims.apply_changes(rt.engine, changes), give_up_after=settings.submit_lease
    )
    if skipped:
        log.warning(
            "batch %s of campaign %s: %s outcomes not recorded (claim taken over meanwhile)",
            batch,
            campaign_id,
            skipped,
        )
    try:
        fencing.clear_in_flight(rt.redis, settled)
        budget.give_back(rt.redis, caps, unspent)
    except REDIS_ERRORS as exc:
        tracker.failed(exc)
    if account_error:
        paused = campaign_moves.pause_running(rt.engine, account_error)
        halt_campaigns(rt.redis, paused, account_error)
        report.paused = account_error
        log.warning("gateway refused the account (%s): paused campaigns %s", account_error, paused)
    return report
