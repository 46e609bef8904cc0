"""Sending and tracking, called as the tasks call them, on real ledgers, Redis and simulator."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
import time_machine

from dispatcher.campaigns import LoadRequest, load_campaign
from workers import (
    campaign_moves,
    circuit,
    claims,
    fencing,
    ledger,
    ledger_reads,
    sending,
    ticks,
    tracking,
)
from workers.ledger import FINAL, CampaignState, Status, campaign_table, message_table
from workers.notices import halt_campaigns, halt_reason, unhalt_campaign
from workers.runtime import Runtime


def write_list(path: Path, count: int, start: int = 0) -> Path:
    lines = ["name;mobile"] + [f"N{i};+4670{1000000 + i:07d}" for i in range(start, start + count)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def load(rt: Runtime, tmp_path: Path, count: int, text: str = "Hi {name}") -> int:
    request = LoadRequest(write_list(tmp_path / "list.csv", count), "Shop", text)
    summary = load_campaign(rt.settings, rt.engine, request)
    assert summary.campaign is not None
    return summary.campaign


def messages(rt: Runtime, campaign_id: int) -> list[sa.Row]:
    m = message_table
    with rt.engine.connect() as conn:
        return conn.execute(
            sa.select(m).where(m.c.campaign_id == campaign_id).order_by(m.c.id)
        ).all()


def counts(rt: Runtime, campaign_id: int) -> dict[str, int]:
    tally = ledger_reads.status_counts(rt.engine, campaign_id)
    # The tally the triggers keep is what counting every row gives, after every step.
    assert tally == ledger_reads.counted_status(rt.engine, campaign_id)
    return tally


def drain(rt: Runtime, campaign_id: int, rounds: int = 40) -> None:
    """Run sends and look-ups the way beat and workers would, until nothing is waiting."""
    for _ in range(rounds):
        circuit.probe(rt.redis, rt.gateway)  # the dispatch tick's probe, when the circuit is open
        for batch in claims.due_batches(rt.engine, campaign_id, limit=100):
            sending.send_batch(rt, campaign_id, batch)
        ids = claims.claim_lookups(rt.engine, limit=1000, lease=30)
        if ids:
            tracking.poll_reports(rt, ids)
        if set(counts(rt, campaign_id)) <= {s.value for s in FINAL}:
            return
        time.sleep(0.2)


def test_batch_is_sent_once_and_tracked_to_delivered_with_the_gateways_cost(setup, sim, tmp_path):
    rt = setup()
    cid = load(rt, tmp_path, 30, text="Hi {name}, " + "x" * 160)  # two parts each
    drain(rt, cid)
    assert counts(rt, cid) == {"delivered": 30}
    stats = sim.stats()
    assert stats["unique"] == 30 and stats["duplicates"] == 0
    assert ledger_reads.campaign_cost(rt.engine, cid) == Decimal(stats["cost"])
    assert ledger_reads.campaign_cost(rt.engine, cid) == Decimal("3.00")
    assert ticks.sweep(rt)["completed"] == 1
    assert ledger_reads.get_campaign(rt.engine, cid).state == CampaignState.COMPLETED


def test_account_error_pauses_campaign_without_spending_attempts(setup, sim, tmp_path):
    rt = setup()
    sim.configure(credit="0")
    cid = load(rt, tmp_path, 50)
    report = sending.send_batch(rt, cid, 0)
    campaign = ledger_reads.get_campaign(rt.engine, cid)
    assert campaign.state == CampaignState.PAUSED
    assert "credit" in (campaign.reason or "").lower()
    rows = messages(rt, cid)
    assert {r.status for r in rows} == {Status.QUEUED}
    assert all(r.attempts == 0 for r in rows)
    # It stopped within a few requests, not after burning the list.
    assert sim.stats()["attempts"] <= rt.settings.concurrency + 2
    assert report.paused and halt_reason(rt.redis, cid)
    # A paused campaign claims nothing.
    assert claims.claim_batch(rt.engine, cid, 0, limit=100, lease=60) == []


def test_resume_after_top_up_sends_everything_once(setup, sim, tmp_path):
    rt = setup()
    sim.configure(credit="0")
    cid = load(rt, tmp_path, 40)
    sending.send_batch(rt, cid, 0)
    sim.configure(credit="100")
    assert campaign_moves.resume(rt.engine, cid) == CampaignState.RUNNING
    unhalt_campaign(rt.redis, cid)  # as `sms-dispatch resume` does
    drain(rt, cid)
    assert counts(rt, cid) == {"delivered": 40}
    assert sim.stats()["duplicates"] == 0


def test_busy_gateway_is_retried_then_rejected(setup, sim, tmp_path):
    rt = setup(max_attempts=3)
    sim.configure(busy=1.0)
    cid = load(rt, tmp_path, 5)
    drain(rt, cid)
    rows = messages(rt, cid)
    assert {r.status for r in rows} == {Status.REJECTED}
    assert all(r.attempts == 3 for r in rows)
    assert "not accepted" in rows[0].last_error.lower()


def test_server_errors_hold_sending_without_spending_attempts_until_a_probe_closes(
    setup, sim, tmp_path
):
    rt = setup(max_attempts=2, circuit_threshold=3)
    sim.configure(error_5xx=1.0)
    cid = load(rt, tmp_path, 5)
    drain(rt, cid, rounds=5)
    rows = messages(rt, cid)
    # Gateway trouble is not the messages' fault: none failed, no attempt was used up.
    assert {r.status for r in rows} == {Status.QUEUED}
    assert all(r.attempts == 0 for r in rows)
    state = circuit.state(rt.redis)
    assert state is not None and "503" in state.describe()
    assert "waiting for the gateway since" in state.describe()
    # While the circuit is open nothing is sent, however often the batch is offered.
    before = sim.stats()["attempts"]
    sending.send_batch(rt, cid, 0)
    assert sim.stats()["attempts"] == before
    # The gateway recovers: one probe closes the circuit and the campaign finishes by itself.
    sim.configure(error_5xx=0.0)
    rt.redis.delete(circuit.PROBE_KEY)  # the probe's backoff has passed
    assert circuit.probe(rt.redis, rt.gateway) == "closed"
    drain(rt, cid)
    assert counts(rt, cid) == {"delivered": 5}
    assert all(r.attempts == 1 for r in messages(rt, cid))
    assert sim.stats()["duplicates"] == 0


def test_look_ups_open_the_circuit_and_hold_while_it_is_open(setup, sim, tmp_path):
    # Nothing left to send, only reports to fetch, and the gateway answers 503: a run of
    # failed look-ups opens the circuit and the rest of the chunk is not asked at all.
    rt = setup(circuit_threshold=3, concurrency=1, poll_backoff=[0.1])
    cid = load(rt, tmp_path, 8)
    sending.send_batch(rt, cid, 0)
    assert counts(rt, cid) == {"accepted": 8}
    time.sleep(0.2)
    sim.configure(error_5xx=1.0)
    before = sim.stats()["polls"]
    tracking.poll_reports(rt, claims.claim_lookups(rt.engine, limit=100, lease=30))
    assert sim.stats()["polls"] - before == 3
    state = circuit.state(rt.redis)
    assert state is not None and "503" in state.describe()
    assert sorted(r.poll_count for r in messages(rt, cid)) == [0] * 5 + [1] * 3
    # Once a probe closes it, the reports come in.
    sim.configure(error_5xx=0.0)
    rt.redis.delete(circuit.PROBE_KEY)
    assert circuit.probe(rt.redis, rt.gateway) == "closed"
    time.sleep(0.3)
    drain(rt, cid)
    assert counts(rt, cid) == {"delivered": 8}


def test_claim_that_lapsed_before_sending_is_sent_again_at_once_with_its_attempt(
    setup, sim, tmp_path
):
    # A worker claimed the batch and died before any request left: no in-flight marker, so
    # "not found" is believed at once, with no grace period, and the attempt is given back.
    rt = setup(report_grace=3600)
    cid = load(rt, tmp_path, 3)
    token = fencing.new_token(fencing.redis_epoch(rt.redis))
    claimed = claims.claim_batch(rt.engine, cid, 0, limit=10, lease=0.1, token=token)
    assert len(claimed) == 3
    time.sleep(0.2)
    drain(rt, cid)
    assert counts(rt, cid) == {"delivered": 3}
    assert all(r.attempts == 1 for r in messages(rt, cid))
    assert sim.stats()["duplicates"] == 0


def test_a_sender_that_lost_its_claim_sends_nothing_and_records_nothing(setup, sim, tmp_path):
    rt = setup(send_rate=5, submit_lease=1.0, unknown_recheck=0.1)
    cid = load(rt, tmp_path, 10)
    results: list[sending.BatchReport] = []
    stop_renewals = threading.Event()
    real_renew = claims.renew_lease

    def frozen_renew(*args, **kwargs):
        # As if the process were stopped: no renewal reaches the ledger.
        if stop_renewals.is_set():
            return set()
        return real_renew(*args, **kwargs)

    claims.renew_lease = frozen_renew
    try:
        stop_renewals.set()
        worker = threading.Thread(target=lambda: results.append(sending.send_batch(rt, cid, 0)))
        worker.start()
        worker.join(timeout=30)
    finally:
        claims.renew_lease = real_renew
    sent = sim.stats()["unique"]
    assert sent < 10  # it stopped at its deadline, well before the batch's end
    assert results[0].outcomes.get("not_sent", 0) == 10 - sent
    drain(rt, cid)
    assert counts(rt, cid) == {"delivered": 10}
    assert sim.stats()["duplicates"] == 0


def test_a_sender_stopped_between_its_check_and_the_write_sends_nothing(
    setup, sim, tmp_path, monkeypatch
):
    # The claim's deadline passes after the sender's own check but before the request is
    # written (a SIGSTOP in between): the last-moment guard withholds it.
    rt = setup()
    cid = load(rt, tmp_path, 3)
    asked = threading.local()

    def held(self) -> bool:
        asked.count = getattr(asked, "count", 0) + 1
        return asked.count % 2 == 1  # each thread: its own check passes, the last one fails

    monkeypatch.setattr(fencing.BatchClaim, "held", held)
    report = sending.send_batch(rt, cid, 0)
    assert report.outcomes == {"not_sent": 3}
    assert sim.stats()["attempts"] == 0  # nothing reached the gateway
    assert all(r.status == Status.QUEUED and r.attempts == 0 for r in messages(rt, cid))
    assert not rt.redis.keys(fencing.inflight_key(0).replace("0", "*"))
    monkeypatch.undo()
    drain(rt, cid)
    assert counts(rt, cid) == {"delivered": 3}
    assert sim.stats()["duplicates"] == 0


def test_unknown_outcome_is_looked_up_not_resent(setup, sim, tmp_path):
    rt = setup()
    sim.configure(drop=1.0)
    cid = load(rt, tmp_path, 10)
    sending.send_batch(rt, cid, 0)
    assert counts(rt, cid) == {"submitting": 10}
    sim.configure(drop=0.0)
    drain(rt, cid)
    assert counts(rt, cid) == {"delivered": 10}
    stats = sim.stats()
    assert stats["unique"] == 10 and stats["duplicates"] == 0
    assert all(r.attempts == 1 for r in messages(rt, cid))


def test_unknown_outcome_is_not_resent_when_its_marker_is_gone(setup, sim, tmp_path):
    # The replies were lost, then the look-ups could not reach the gateway for longer than any
    # in-flight marker lives (a long outage, a dead beat): the ledger alone must still say the
    # requests may have left, so they are looked up, never sent again.
    rt = setup(report_grace=0.2)
    sim.configure(drop=1.0)
    cid = load(rt, tmp_path, 10)
    sending.send_batch(rt, cid, 0)
    assert counts(rt, cid) == {"submitting": 10}
    sim.configure(drop=0.0)
    rt.redis.delete(*[fencing.inflight_key(r.id) for r in messages(rt, cid)])
    time.sleep(0.3)  # past the grace period too
    drain(rt, cid)
    assert counts(rt, cid) == {"delivered": 10}
    stats = sim.stats()
    assert (stats["unique"], stats["duplicates"]) == (10, 0)


def test_request_of_a_dead_worker_seen_once_is_not_resent_after_its_marker_goes(
    setup, sim, tmp_path
):
    # A worker died with its request on the wire: only the marker says it may have left. The
    # first look-up fails (gateway answering 5xx); by the next one the marker has expired.
    rt = setup(report_grace=0.2, unknown_recheck=0.1, poll_backoff=[0.1])
    cid = load(rt, tmp_path, 1)
    token = fencing.new_token(fencing.redis_epoch(rt.redis))
    (claimed,) = claims.claim_batch(rt.engine, cid, 0, limit=10, lease=0.1, token=token)
    rt.redis.set(fencing.inflight_key(claimed.id), 1)
    assert rt.gateway.send(claimed.mobile, "Shop", claimed.text or "Hi", claimed.ref).outcome == (
        sending.Outcome.ACCEPTED
    )
    time.sleep(0.2)  # the claim lapses
    sim.configure(error_5xx=1.0)
    tracking.poll_reports(rt, claims.claim_lookups(rt.engine, limit=10, lease=0.1))
    assert counts(rt, cid) == {"submitting": 1}
    sim.configure(error_5xx=0.0)
    rt.redis.delete(fencing.inflight_key(claimed.id))
    time.sleep(0.3)
    drain(rt, cid)
    assert counts(rt, cid) == {"delivered": 1}
    assert (sim.stats()["unique"], sim.stats()["duplicates"]) == (1, 0)


def test_never_received_message_is_resent_after_the_grace_period(setup, sim, tmp_path):
    rt = setup(report_grace=0.5)
    cid = load(rt, tmp_path, 3)
    claimed = claims.claim_batch(rt.engine, cid, 0, limit=10, lease=0.1)
    assert len(claimed) == 3  # a worker claimed them, then died before sending anything
    time.sleep(0.6)
    drain(rt, cid)
    assert counts(rt, cid) == {"delivered": 3}
    assert all(r.attempts == 2 for r in messages(rt, cid))
    assert sim.stats()["duplicates"] == 0


def test_failure_and_deleted_reports_are_final(setup, sim, tmp_path):
    rt = setup()
    sim.configure(force={"46701000000": "undelivered", "46701000001": "deleted"})
    cid = load(rt, tmp_path, 3)
    drain(rt, cid)
    by_mobile = {r.mobile: r for r in messages(rt, cid)}
    assert by_mobile["46701000000"].status == Status.UNDELIVERED
    assert by_mobile["46701000000"].dlr_status == "undelivered"
    assert by_mobile["46701000001"].status == Status.UNKNOWN
    assert by_mobile["46701000002"].status == Status.DELIVERED


def test_message_without_final_report_expires_after_its_validity(setup, sim, tmp_path):
    rt = setup(validity=1.0)
    sim.configure(force={"46701000000": "stuck"})
    cid = load(rt, tmp_path, 2)
    drain(rt, cid, rounds=60)
    by_mobile = {r.mobile: r for r in messages(rt, cid)}
    assert by_mobile["46701000000"].status == Status.EXPIRED
    assert by_mobile["46701000001"].status == Status.DELIVERED


def test_cancel_stops_what_has_not_been_sent(setup, sim, tmp_path):
    rt = setup(batch_size=5)
    cid = load(rt, tmp_path, 20)
    sending.send_batch(rt, cid, 0)
    cancelled = campaign_moves.cancel(rt.engine, cid)
    assert cancelled == 15
    drain(rt, cid)
    c = counts(rt, cid)
    assert c == {"cancelled": 15, "delivered": 5}
    assert sim.stats()["unique"] == 5


def test_claims_are_exclusive(setup, tmp_path):
    rt = setup()
    cid = load(rt, tmp_path, 10)
    first = claims.claim_batch(rt.engine, cid, 0, limit=100, lease=60)
    second = claims.claim_batch(rt.engine, cid, 0, limit=100, lease=60)
    assert len(first) == 10 and second == []


def test_slow_batch_keeps_its_lease_so_look_ups_never_cause_a_second_send(setup, sim, tmp_path):
    # 15 messages at 5/s take 3 s, three times the lease; look-ups run all the while.
    rt = setup(send_rate=5, submit_lease=1.0, report_grace=0.3, unknown_recheck=0.1)
    cid = load(rt, tmp_path, 15)
    stop = threading.Event()

    def look_ups() -> None:
        while not stop.is_set():
            ids = claims.claim_lookups(rt.engine, limit=100, lease=0.2)
            if ids:
                tracking.poll_reports(rt, ids)
            time.sleep(0.05)

    checker = threading.Thread(target=look_ups)
    checker.start()
    try:
        report = sending.send_batch(rt, cid, 0)
    finally:
        stop.set()
        checker.join()
    assert report.outcomes == {"accepted": 15}
    drain(rt, cid)
    assert counts(rt, cid) == {"delivered": 15}
    assert sim.stats()["duplicates"] == 0


def test_cancel_during_a_batch_leaves_no_message_waiting(setup, sim, tmp_path):
    rt = setup(send_rate=20)
    cid = load(rt, tmp_path, 60)
    worker = threading.Thread(target=sending.send_batch, args=(rt, cid, 0))
    worker.start()
    time.sleep(0.5)
    campaign_moves.cancel(rt.engine, cid)
    halt_campaigns(rt.redis, [cid], "cancelled")  # as `sms-dispatch cancel` does
    worker.join()
    ticks.sweep(rt)
    drain(rt, cid)
    c = counts(rt, cid)
    assert set(c) == {"cancelled", "delivered"}
    assert c["delivered"] == sim.stats()["unique"] < 60


def test_sweep_removes_a_load_whose_producer_died_but_not_one_in_progress(setup, tmp_path):
    rt = setup(loading_timeout=3600)
    cid = load(rt, tmp_path, 5)
    c = campaign_table
    with rt.engine.begin() as conn:
        conn.execute(sa.update(c).where(c.c.id == cid).values(state="loading"))
    assert ticks.sweep(rt)["abandoned"] == 0  # young: its producer may still be writing
    with time_machine.travel(datetime.now(UTC) + timedelta(hours=2), tick=False):
        assert ticks.sweep(rt)["abandoned"] == 1
    assert messages(rt, cid) == []
    with pytest.raises(ledger_reads.CampaignNotFound):
        ledger_reads.get_campaign(rt.engine, cid)


def test_account_error_pauses_only_campaigns_with_something_left_to_send(setup, sim, tmp_path):
    rt = setup()
    done = load(rt, tmp_path, 3)
    drain(rt, done)  # every message final; the sweep has not completed it yet
    assert ledger_reads.get_campaign(rt.engine, done).state == CampaignState.RUNNING
    sim.configure(credit="0")
    waiting = load(rt, tmp_path, 5, text="Second {name}")
    report = sending.send_batch(rt, waiting, 0)
    assert "credit" in (report.paused or "").lower()
    assert ledger_reads.get_campaign(rt.engine, waiting).state == CampaignState.PAUSED
    # The finished one is not held up by the account's problem: it completes as usual.
    assert ledger_reads.get_campaign(rt.engine, done).state == CampaignState.RUNNING
    assert ticks.sweep(rt)["completed"] == 1
    assert ledger_reads.get_campaign(rt.engine, done).state == CampaignState.COMPLETED


def test_a_paused_campaign_whose_messages_are_all_final_completes(setup, sim, tmp_path):
    rt = setup()
    cid = load(rt, tmp_path, 3)
    drain(rt, cid)
    campaign_moves.pause_running(rt.engine, "paused by operator", cid)
    assert ticks.sweep(rt)["completed"] == 1
    assert ledger_reads.get_campaign(rt.engine, cid).state == CampaignState.COMPLETED


def test_a_message_waiting_for_the_gateway_expires_only_at_its_validity(setup, sim, tmp_path):
    rt = setup(validity=3600)
    cid = load(rt, tmp_path, 2)
    with rt.engine.begin() as conn:  # the campaign started (and the gateway went away) 59 min ago
        conn.execute(
            sa.update(campaign_table)
            .where(campaign_table.c.id == cid)
            .values(started_at=datetime.now(UTC) - timedelta(minutes=59))
        )
    assert ticks.sweep(rt)["expired"] == 0
    with time_machine.travel(datetime.now(UTC) + timedelta(minutes=2), tick=False):
        assert ticks.sweep(rt)["expired"] == 2
    assert counts(rt, cid) == {"expired": 2}


def test_the_tally_stays_equal_to_the_rows_while_batches_write_and_folds_run(setup, sim, tmp_path):
    rt = setup(batch_size=20)
    sim.configure(busy=0.2, force={"46701000003": "undelivered"})
    cid = load(rt, tmp_path, 200)
    stop = threading.Event()

    def fold_all_the_time() -> None:
        while not stop.is_set():
            ledger_reads.fold_tallies(rt.engine, min_rows=0)

    folder = threading.Thread(target=fold_all_the_time)
    folder.start()
    try:
        drain(rt, cid)
    finally:
        stop.set()
        folder.join()
    ledger_reads.fold_tallies(rt.engine, min_rows=0)
    tally = counts(rt, cid)
    assert sum(tally.values()) == 200 and tally.get("undelivered") == 1
    assert ledger_reads.campaign_cost(rt.engine, cid) == Decimal(sim.stats()["cost"])
    with rt.engine.connect() as conn:
        rows = conn.execute(
            sa.select(sa.func.count()).select_from(ledger.campaign_tally_table)
        ).scalar()
    assert rows <= len(tally)  # folded: one row per status
    campaign_moves.discard_loading(rt.engine, cid)  # deleting messages takes them off the tally
    assert ledger_reads.status_counts(rt.engine, cid) == {}


def test_each_message_keeps_the_time_its_own_request_left_and_was_accepted(setup, sim, tmp_path):
    rt = setup(send_rate=10)
    cid = load(rt, tmp_path, 5)
    sending.send_batch(rt, cid, 0)
    rows = messages(rt, cid)
    sent = sorted(r.submitted_at for r in rows)
    # Paced at 10/s, the five requests left about 0.1 s apart, not at one batch time.
    assert len(set(sent)) == 5
    assert (sent[-1] - sent[0]).total_seconds() >= 0.3
    assert all(r.accepted_at >= r.submitted_at for r in rows)


def test_a_batch_does_not_wait_for_late_answers_and_they_are_looked_up_not_resent(
    setup, sim, tmp_path
):
    rt = setup(gateway_timeout=8.0)
    sim.configure(late=1.0, late_delay=4.0)  # accepted at once, answered 4 s later
    cid = load(rt, tmp_path, 3)
    report = sending.send_batch(rt, cid, 0)
    # The batch ended while the answers were still on their way: the look-up settles them.
    assert report.outcomes == {"unknown": 3}
    assert {r.last_error for r in messages(rt, cid)} == {sending.STRAGGLER}
    sim.configure(late=0.0)
    drain(rt, cid)
    assert counts(rt, cid) == {"delivered": 3}
    assert sim.stats()["duplicates"] == 0
    assert all(r.attempts == 1 for r in messages(rt, cid))


def test_a_slow_gateway_s_ordinary_answers_are_not_taken_for_stragglers(setup, sim, tmp_path):
    # The batch stops waiting for a request that is overdue against the gateway's own answer
    # times: at 0.35 s an answer, a request out for 0.3 s is on time, not late.
    rt = setup(send_rate=10, gateway_timeout=3.0)
    sim.configure(latency=0.35)
    cid = load(rt, tmp_path, 6)
    report = sending.send_batch(rt, cid, 0)
    assert report.outcomes == {"accepted": 6}
    assert sim.stats()["polls"] == 0  # nothing left to the look-up


def test_a_look_up_leaves_a_message_that_went_back_to_the_queue_alone(setup, sim, tmp_path):
    # Leased for a look-up, then put back in the queue by its sender before the look-up ran
    # (a claim that never left): the look-up spends no request on it and changes nothing.
    rt = setup()
    cid = load(rt, tmp_path, 3)
    before = messages(rt, cid)
    assert {r.status for r in before} == {"queued"}
    assert tracking.poll_reports(rt, [r.id for r in before]) == {}
    assert sim.stats()["polls"] == 0
    assert messages(rt, cid) == before
