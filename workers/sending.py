"""Sending one batch: claim its due messages, submit them at the shared rate, record outcomes.

The claim comes before any request, so a message is only ever in one sender's hands; an
attempt whose answer never came stays `submitting` until tracking looks its ref up.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from concurrent.futures import Future, wait
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from config import Settings
from workers import transitions
from workers.gateway import BusyError, GatewayClient, Outcome, SendResult
from workers.ledger import Status, utcnow
from workers.notices import halt_campaigns, halt_reason
from workers.runtime import Runtime
from workers.throttle import SlotFeeder
from workers.transitions import Change, Claimed
from workers.windows import WindowPlanner, parse_window

log = logging.getLogger("sms.sending")
NOT_SENT = "not sent: campaign stopped"


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


def retry_delay(settings: Settings, attempts: int) -> float:
    """Exponential backoff with full jitter, capped: spreads retries of a busy gateway."""
    ceiling = min(settings.retry_max, settings.retry_base * 2 ** max(0, attempts - 1))
    return random.uniform(ceiling / 2, ceiling)


def change_for(settings: Settings, claimed: Claimed, result: SendResult | None) -> Change:
    """The ledger change one send result calls for (None: stopped before it was sent)."""
    now = utcnow()
    if result is None:
        return Change(claimed.id, Status.QUEUED, refund=1, last_error=NOT_SENT)
    if result.outcome is Outcome.ACCEPTED:
        first_poll = now + timedelta(seconds=settings.poll_backoff[0])
        return Change(claimed.id, Status.ACCEPTED, accepted_at=now, next_poll_at=first_poll)
    error = result.error
    if result.outcome is Outcome.ACCOUNT:
        return Change(claimed.id, Status.QUEUED, refund=1, last_error=error)
    if result.outcome is Outcome.REJECTED:
        return Change(claimed.id, Status.REJECTED, last_error=error, final_at=now)
    if result.outcome is Outcome.UNKNOWN:
        check = now + timedelta(seconds=settings.unknown_recheck)
        return Change(claimed.id, Status.SUBMITTING, last_error=error, next_attempt_at=check)
    # Retryable: again later, until the attempts run out.
    if claimed.attempts >= settings.max_attempts:
        final = Status.REJECTED if result.kind is BusyError else Status.FAILED
        return Change(claimed.id, final, last_error=error, final_at=now)
    later = now + timedelta(seconds=retry_delay(settings, claimed.attempts))
    return Change(claimed.id, Status.QUEUED, last_error=error, next_attempt_at=later)


class _Sender:
    """Submits claimed messages from a thread pool, each at its own rate-limit slot."""

    def __init__(
        self, rt: Runtime, gateway: GatewayClient, feeder: SlotFeeder, campaign: int
    ) -> None:
        self.rt = rt
        self.gateway = gateway
        self.feeder = feeder
        self.campaign = campaign
        self.stop = threading.Event()
        self.stop_reason: str | None = None
        self._checked = 0.0
        self.lost: set[int] = set()  # claims whose lease ran out: someone else has them now
        self._lock = threading.Lock()

    def _halted(self) -> bool:
        # Another worker may have paused or cancelled the campaign: look at most every 200 ms.
        if self.stop.is_set():
            return True
        now = time.monotonic()
        with self._lock:
            if now - self._checked < 0.2:
                return False
            self._checked = now
        reason = halt_reason(self.rt.redis, self.campaign)
        if reason:
            self.stop_reason = reason
            self.stop.set()
        return self.stop.is_set()

    def send(self, claimed: Claimed, sender: str, template: str) -> SendResult | None:
        if self._halted() or not self.feeder.wait(self.stop) or self._halted():
            return None
        if claimed.id in self.lost:
            return None
        result = self.gateway.send(claimed.mobile, sender, claimed.text or template, claimed.ref)
        if result.outcome is Outcome.ACCOUNT and not self.stop.is_set():
            self.stop_reason = result.error or "account problem"
            self.stop.set()
        return result


def _outside_window(
    rt: Runtime, campaign: Any, claimed: list[Claimed]
) -> tuple[list[Claimed], list[Change]]:
    """Hold back messages whose send window closed while they waited in a backlog."""
    window = parse_window(campaign.window, campaign.days)
    if window is None:
        return claimed, []
    planner = WindowPlanner(window, campaign.tz or rt.settings.tz, utcnow())
    keep, held = [], []
    for claim in claimed:
        opens = planner.send_after(claim.mobile)
        if opens is None:
            keep.append(claim)
        else:
            held.append(Change(claim.id, Status.QUEUED, refund=1, send_after=opens))
    return keep, held


def _hold_leases(rt: Runtime, sender: _Sender, by_future: dict[Future[Any], Claimed]) -> None:
    """Wait for the batch, renewing the lease of what it still holds.

    A slow batch (a low rate, many workers sharing it) must not look abandoned: a look-up
    of a message that is about to be sent could otherwise lead to a second send.
    """
    lease = rt.settings.submit_lease
    pending: set[Future[Any]] = set(by_future)
    while pending:
        _, pending = wait(pending, timeout=lease / 3)
        if pending:
            held = [by_future[f].id for f in pending]
            kept = transitions.renew_lease(rt.engine, held, lease)
            sender.lost.update(set(held) - kept)


def send_batch(rt: Runtime, campaign_id: int, batch: int) -> BatchReport:
    """Claim and send one batch of a running campaign. Safe to run twice: claims guard it."""
    report = BatchReport(campaign_id, batch)
    settings = rt.settings
    if halt_reason(rt.redis, campaign_id):
        return report
    claimed = transitions.claim_batch(
        rt.engine, campaign_id, batch, limit=settings.batch_size, lease=settings.submit_lease
    )
    report.claimed = len(claimed)
    if not claimed:
        return report
    campaign = transitions.get_campaign(rt.engine, campaign_id)
    claimed, changes = _outside_window(rt, campaign, claimed)
    sender = _Sender(rt, rt.gateway, rt.send_feeder, campaign_id)
    futures = [rt.pool.submit(sender.send, c, campaign.sender, campaign.template) for c in claimed]
    _hold_leases(rt, sender, dict(zip(futures, claimed, strict=True)))
    account_error: str | None = None
    for claim, future in zip(claimed, futures, strict=True):
        try:
            result = future.result()
        except Exception:  # a bug in one send must not strand the others in `submitting`
            log.exception("send of message %s crashed", claim.id)
            result = SendResult(Outcome.UNKNOWN, claim.ref, error="internal error during send")
        change = change_for(settings, claim, result)
        changes.append(change)
        key = "not_sent" if result is None else str(result.outcome)
        report.outcomes[key] = report.outcomes.get(key, 0) + 1
        if result is not None and result.outcome is Outcome.ACCOUNT:
            account_error = result.error
    transitions.apply_changes(rt.engine, changes)
    if account_error:
        paused = transitions.pause_running(rt.engine, account_error)
        halt_campaigns(rt.redis, paused or [campaign_id], account_error)
        report.paused = account_error
        log.warning("gateway refused the account (%s): paused campaigns %s", account_error, paused)
    return report
