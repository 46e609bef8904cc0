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
from workers import sending, ticks, tracking, transitions
from workers.ledger import FINAL, CampaignState, Status, campaign_table, message_table
from workers.notices import halt_campaigns, halt_reason, unhalt_campaign
from workers.runtime import Runtime


@pytest.fixture
def setup(db_url, sim, redis_client, make_settings, tmp_path):
    """Returns a factory: (settings overrides) -> Runtime against the simulator."""
    runtimes: list[Runtime] = []

    def build(**overrides):
        s = make_settings(database_url=db_url, gateway_url=sim.url, **overrides)
        rt = Runtime.build(s)
        runtimes.append(rt)
        return rt

    yield build
    for rt in runtimes:
        rt.close()


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
    return transitions.status_counts(rt.engine, campaign_id)


def drain(rt: Runtime, campaign_id: int, rounds: int = 40) -> None:
    """Run sends and look-ups the way beat and workers would, until nothing is waiting."""
    for _ in range(rounds):
        for batch in transitions.due_batches(rt.engine, campaign_id, limit=100):
            sending.send_batch(rt, campaign_id, batch)
        ids = transitions.claim_lookups(rt.engine, limit=1000, lease=30)
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
    assert transitions.campaign_cost(rt.engine, cid) == Decimal(stats["cost"])
    assert transitions.campaign_cost(rt.engine, cid) == Decimal("3.00")
    assert ticks.sweep(rt)["completed"] == 1
    assert transitions.get_campaign(rt.engine, cid).state == CampaignState.COMPLETED


def test_account_error_pauses_campaign_without_spending_attempts(setup, sim, tmp_path):
    rt = setup()
    sim.configure(credit="0")
    cid = load(rt, tmp_path, 50)
    report = sending.send_batch(rt, cid, 0)
    campaign = transitions.get_campaign(rt.engine, cid)
    assert campaign.state == CampaignState.PAUSED
    assert "credit" in (campaign.reason or "").lower()
    rows = messages(rt, cid)
    assert {r.status for r in rows} == {Status.QUEUED}
    assert all(r.attempts == 0 for r in rows)
    # It stopped within a few requests, not after burning the list.
    assert sim.stats()["attempts"] <= rt.settings.concurrency + 2
    assert report.paused and halt_reason(rt.redis, cid)
    # A paused campaign claims nothing.
    assert transitions.claim_batch(rt.engine, cid, 0, limit=100, lease=60) == []


def test_resume_after_top_up_sends_everything_once(setup, sim, tmp_path):
    rt = setup()
    sim.configure(credit="0")
    cid = load(rt, tmp_path, 40)
    sending.send_batch(rt, cid, 0)
    sim.configure(credit="100")
    assert transitions.resume(rt.engine, cid) == CampaignState.RUNNING
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


def test_server_errors_are_retried_then_failed(setup, sim, tmp_path):
    rt = setup(max_attempts=2)
    sim.configure(error_5xx=1.0)
    cid = load(rt, tmp_path, 5)
    drain(rt, cid)
    rows = messages(rt, cid)
    assert {r.status for r in rows} == {Status.FAILED}
    assert all(r.attempts == 2 for r in rows)


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


def test_never_received_message_is_resent_after_the_grace_period(setup, sim, tmp_path):
    rt = setup(report_grace=0.5)
    cid = load(rt, tmp_path, 3)
    claimed = transitions.claim_batch(rt.engine, cid, 0, limit=10, lease=0.1)
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
    cancelled = transitions.cancel(rt.engine, cid)
    assert cancelled == 15
    drain(rt, cid)
    c = counts(rt, cid)
    assert c == {"cancelled": 15, "delivered": 5}
    assert sim.stats()["unique"] == 5


def test_claims_are_exclusive(setup, tmp_path):
    rt = setup()
    cid = load(rt, tmp_path, 10)
    first = transitions.claim_batch(rt.engine, cid, 0, limit=100, lease=60)
    second = transitions.claim_batch(rt.engine, cid, 0, limit=100, lease=60)
    assert len(first) == 10 and second == []


def test_slow_batch_keeps_its_lease_so_look_ups_never_cause_a_second_send(setup, sim, tmp_path):
    # 15 messages at 5/s take 3 s, three times the lease; look-ups run all the while.
    rt = setup(send_rate=5, submit_lease=1.0, report_grace=0.3, unknown_recheck=0.1)
    cid = load(rt, tmp_path, 15)
    stop = threading.Event()

    def look_ups() -> None:
        while not stop.is_set():
            ids = transitions.claim_lookups(rt.engine, limit=100, lease=0.2)
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
    transitions.cancel(rt.engine, cid)
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
    with pytest.raises(transitions.CampaignNotFound):
        transitions.get_campaign(rt.engine, cid)
