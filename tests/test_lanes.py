"""Lanes, spending caps and deadlines, on the real ledgers, Redis and simulator."""

from __future__ import annotations

import base64
import json
import threading
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import sqlalchemy as sa

from dispatcher.campaigns import LoadRequest, load_campaign
from workers import budget, campaign_moves, claims, ledger_reads, sending, ticks
from workers.celery_app import app
from workers.ledger import CampaignState, Status, campaign_table, message_table, utcnow
from workers.notices import LANE_QUEUES
from workers.runtime import Runtime
from workers.throttle import Admission, SendGuard


def load(rt: Runtime, path: Path, count: int, start: int = 0, **campaign: object) -> int:
    lines = ["mobile"] + [f"+4670{1000000 + i:07d}" for i in range(start, start + count)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    summary = load_campaign(rt.settings, rt.engine, LoadRequest(path, "Shop", "Hi there"))
    assert summary.campaign is not None
    if campaign:
        with rt.engine.begin() as conn:
            conn.execute(
                sa.update(campaign_table)
                .where(campaign_table.c.id == summary.campaign)
                .values(**campaign)
            )
    return summary.campaign


def counts(rt: Runtime, cid: int) -> dict[str, int]:
    tally = ledger_reads.status_counts(rt.engine, cid)
    assert tally == ledger_reads.counted_status(rt.engine, cid)
    return tally


def accepted_times(rt: Runtime, sim, cid: int) -> list[float]:
    """When the gateway accepted each message of a campaign (its own clock)."""
    with rt.engine.connect() as conn:
        refs = conn.execute(
            sa.select(message_table.c.ref).where(message_table.c.campaign_id == cid)
        ).scalars()
        return sorted(t for ref in refs for m in sim.messages(ref) for t in m["accepted"])


def test_a_high_lane_burst_takes_the_rate_and_the_normal_batch_steps_aside(
    setup, sim, tmp_path, figure
):
    rt_normal = setup(send_rate=20, reserved_high=0.2)
    rt_high = setup(send_rate=20, reserved_high=0.2)
    normal = load(rt_normal, tmp_path / "n.csv", 80)
    high = load(rt_high, tmp_path / "h.csv", 30, start=500, priority="high")
    reports: dict[str, sending.BatchReport] = {}
    worker = threading.Thread(
        target=lambda: reports.setdefault("normal", sending.send_batch(rt_normal, normal, 0))
    )
    worker.start()
    time.sleep(1.0)  # the normal campaign is sending at the full rate
    reports["high"] = sending.send_batch(rt_high, high, 0)
    worker.join(timeout=60)
    assert reports["high"].outcomes == {"accepted": 30}
    # The normal batch stepped aside instead of sharing: its unsent messages wait, unspent.
    assert reports["normal"].outcomes.get("not_sent", 0) > 0
    high_times = accepted_times(rt_high, sim, high)
    first, last = high_times[0], high_times[-1]
    beside = [t for t in accepted_times(rt_normal, sim, normal) if first <= t <= last]
    figure(f"lanes: 30 high at rate 20 in {last - first:.1f}s; {len(beside)} normal beside them")
    # Only sends already under way as the high lane began went out beside it; sharing the
    # rate would have let about as many normal messages through as high ones (30). Quiet, 0
    # or 1 go beside; with both cores loaded by other work, up to 7 were seen (the normal
    # sender notices the high lane a little later): a third of the high ones still tells
    # stepping aside from sharing.
    assert len(beside) <= len(high_times) // 3
    rows = counts(rt_normal, normal)
    assert rows.get("queued", 0) > 0
    with rt_normal.engine.connect() as conn:
        spent = conn.execute(
            sa.select(sa.func.max(message_table.c.attempts)).where(
                message_table.c.campaign_id == normal,
                message_table.c.status == Status.QUEUED,
            )
        ).scalar()
    assert spent == 0
    assert sim.stats()["duplicates"] == 0


def test_a_trickle_of_high_sends_keeps_its_reserve_and_normal_the_rest(redis_client):
    guard = SendGuard(redis_client, "sms:rate:test", rate=10, reserved_high=0.2)
    stop = threading.Event()

    def admitted(lane: str, tries: int) -> list[Admission]:
        # A stop set shortly after: an admission that would wait for room ends as STOPPED.
        timer = threading.Timer(0.3, stop.set)
        timer.start()
        try:
            return [guard.admit(f"sms:test:m{lane}{i}", 60, stop, lane) for i in range(tries)]
        finally:
            timer.cancel()
            stop.clear()

    assert admitted("high", 1) == [Admission.SEND]
    normal = admitted("normal", 10)
    # Ten a second, two kept for the high lane while it sends: normal gets 7 more after it.
    assert normal.count(Admission.SEND) == 7
    assert admitted("high", 2) == [Admission.SEND, Admission.SEND]
    assert redis_client.exists("sms:test:mhigh0") and redis_client.exists("sms:test:mnormal0")


def test_low_lane_waits_while_the_normal_lane_sends(redis_client):
    guard = SendGuard(redis_client, "sms:rate:test2", rate=100)
    stop = threading.Event()
    assert guard.admit("sms:test:a", 60, stop, "normal") is Admission.SEND
    assert guard.admit("sms:test:b", 60, stop, "low") is Admission.YIELD
    assert not redis_client.exists("sms:test:b")  # refused: no in-flight marker either


def _queued_notices(client, lane: str) -> list[tuple[int, int]]:
    """The (campaign, batch) of each notice waiting on a lane's queue, oldest first."""
    out = []
    for raw in reversed(client.lrange(LANE_QUEUES[lane], 0, -1)):
        body = json.loads(base64.b64decode(json.loads(raw)["body"]))
        out.append((body[1]["campaign"], body[1]["batch"]))
    return out


def test_campaigns_in_one_lane_take_turns_and_lanes_have_their_own_queues(
    setup, sim, tmp_path, monkeypatch
):
    rt = setup(batch_size=5, notices_ahead=2)
    monkeypatch.setattr(app.conf, "broker_url", rt.settings.broker_url or "")
    first = load(rt, tmp_path / "a.csv", 50)
    second = load(rt, tmp_path / "b.csv", 50, start=100)
    reminders = load(rt, tmp_path / "c.csv", 5, start=300, priority="high")
    client = app.connection_for_write().default_channel.client
    for queue in LANE_QUEUES.values():
        client.delete(queue)
    ticks.dispatch_due(rt, app)
    assert _queued_notices(client, "high") == [(reminders, 0)]
    # Work through the normal queue as a worker would: oldest notice first, and each batch
    # that sent something asks for its campaign's next one (at the back of the queue).
    progress_when_first_done = None
    for _ in range(40):
        waiting = _queued_notices(client, "normal")
        if not waiting:
            break
        client.rpop(LANE_QUEUES["normal"])
        campaign, batch = waiting[0]
        report = sending.send_batch(rt, campaign, batch)
        from workers.notices import release_batch

        release_batch(rt.redis, campaign, batch)
        if report.claimed:
            ticks.dispatch_campaign(rt, app, campaign)
        done = {
            cid: sum(n for s, n in counts(rt, cid).items() if s != "queued")
            for cid in (first, second)
        }
        if progress_when_first_done is None and 50 in done.values():
            progress_when_first_done = done
    assert progress_when_first_done is not None
    # When one campaign had every message sent, the other had nearly all of its own too.
    assert min(progress_when_first_done.values()) >= 40
    assert sim.stats()["duplicates"] == 0


def test_campaign_pauses_at_its_cost_cap_and_resumes_with_a_higher_one(setup, sim, tmp_path):
    rt = setup(batch_size=10, unit_cost=Decimal("0.05"))
    cid = load(rt, tmp_path / "l.csv", 60, max_cost=Decimal("1.00"))
    for batch in range(6):
        sending.send_batch(rt, cid, batch)
    campaign = ledger_reads.get_campaign(rt.engine, cid)
    assert campaign.state == CampaignState.PAUSED
    assert campaign.reason == "cost cap reached (1.00)"
    assert sim.stats()["unique"] == 20  # 20 x 0.05 = 1.00, and not one message more
    assert counts(rt, cid) == {"accepted": 20, "queued": 40}
    with rt.engine.begin() as conn:
        conn.execute(
            sa.update(campaign_table)
            .where(campaign_table.c.id == cid)
            .values(max_cost=Decimal("2.00"))
        )
    campaign_moves.resume(rt.engine, cid)
    rt.redis.delete(f"sms:halt:{cid}")
    for batch in range(6):
        sending.send_batch(rt, cid, batch)
    assert sim.stats()["unique"] == 40


def test_two_workers_racing_at_the_cap_never_pass_it(setup, sim, tmp_path):
    rt_a = setup(batch_size=7, unit_cost=Decimal("0.05"))
    rt_b = setup(batch_size=7, unit_cost=Decimal("0.05"))
    cid = load(rt_a, tmp_path / "l.csv", 70, max_cost=Decimal("1.00"))
    assert claims.due_batches(rt_a.engine, cid, limit=20) == list(range(10))  # 7 each
    barrier = threading.Barrier(2)

    reports = []

    def run(rt: Runtime, batches: range) -> None:
        barrier.wait()
        for batch in batches:
            reports.append(sending.send_batch(rt, cid, batch).as_dict())

    threads = [
        threading.Thread(target=run, args=(rt_a, range(0, 10, 2))),
        threading.Thread(target=run, args=(rt_b, range(1, 10, 2))),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    sent = sim.stats()["unique"]
    assert 14 <= sent <= 20  # whole batches of 7 at 0.35 each: never past 1.00
    assert Decimal(sim.stats()["cost"]) <= Decimal("1.00")
    assert ledger_reads.get_campaign(rt_a.engine, cid).reason == "cost cap reached (1.00)"


def test_daily_cap_counts_every_campaign_and_is_rebuilt_from_the_ledger(setup, sim, tmp_path):
    rt = setup(batch_size=10, unit_cost=Decimal("0.05"), daily_cost_cap=Decimal("0.75"))
    one = load(rt, tmp_path / "a.csv", 10)
    two = load(rt, tmp_path / "b.csv", 10, start=50)
    sending.send_batch(rt, one, 0)  # 0.50 spent today
    caps = budget.caps_for(rt.settings, ledger_reads.get_campaign(rt.engine, two))
    rt.redis.delete(caps[0].key)  # Redis lost its counters: the ledger still knows
    report = sending.send_batch(rt, two, 0)
    assert report.paused == "daily cost cap reached (0.75)"
    assert counts(rt, two) == {"queued": 10}
    assert sim.stats()["unique"] == 10


def test_a_message_past_its_deadline_is_never_sent_and_becomes_skipped(setup, sim, tmp_path):
    rt = setup()
    cid = load(rt, tmp_path / "l.csv", 3)
    with rt.engine.begin() as conn:
        first = conn.execute(
            sa.select(sa.func.min(message_table.c.id)).where(message_table.c.campaign_id == cid)
        ).scalar()
        conn.execute(
            sa.update(message_table)
            .where(message_table.c.id == first)
            .values(deadline=utcnow() - timedelta(seconds=1))
        )
    sending.send_batch(rt, cid, 0)
    ticks.sweep(rt)
    assert counts(rt, cid) == {"accepted": 2, "skipped": 1}
    assert sim.stats()["unique"] == 2
