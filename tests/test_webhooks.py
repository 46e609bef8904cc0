"""Webhooks: outbox rows written with the change they report, delivered signed (checked with the
`standardwebhooks` package by a real receiver), retried, in order, exactly once per id."""

from __future__ import annotations

import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from dispatcher.campaigns import LoadRequest, load_campaign
from tests.webhook_receiver import SECRET, receiver
from workers import (
    campaign_moves,
    claims,
    ledger,
    ledger_reads,
    lifecycle,
    outbox,
    sending,
    tracking,
    webhooks,
)
from workers.ledger import FINAL, message_table, outbox_table, utcnow
from workers.runtime import Runtime

FAST = {
    "webhook_secret": SECRET,
    "webhook_timeout": 0.5,
    "webhook_retry_base": 0.05,
    "webhook_retry_max": 0.2,
}


def write_list(path: Path, count: int, invalid: int = 0) -> Path:
    lines = ["name;mobile"] + [f"N{i};+4670{3000000 + i:07d}" for i in range(count)]
    lines += [f"Bad{i};12" for i in range(invalid)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def load(rt: Runtime, tmp_path: Path, count: int, invalid: int = 0, **extra) -> int:
    request = LoadRequest(write_list(tmp_path / "list.csv", count, invalid), "Shop", "Hi", **extra)
    summary = load_campaign(rt.settings, rt.engine, request)
    assert summary.campaign is not None
    return summary.campaign


def drain(rt: Runtime, campaign_id: int) -> None:
    """Send and look up as the workers would, until every message is final and completed."""
    for _ in range(60):
        for batch in claims.due_batches(rt.engine, campaign_id, limit=100):
            sending.send_batch(rt, campaign_id, batch)
        ids = claims.claim_lookups(rt.engine, limit=5000, lease=30)
        if ids:
            tracking.poll_reports(rt, ids)
        if campaign_id in campaign_moves.complete_finished(rt.engine):
            return
        time.sleep(0.2)
    raise AssertionError("campaign did not finish")


def deliver_all(rt: Runtime, timeout: float = 60) -> None:
    """Run the tick and the lane deliveries as the webhook worker would, until none pending."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lanes = webhooks.due_lanes(rt.engine)
        for lane in lanes:
            token = webhooks.lock_lane(rt.redis, lane, 30)
            if token:
                webhooks.deliver_lane(rt.engine, rt.redis, rt.settings, lane, token)
        if not pending(rt):
            return
        time.sleep(0.05)
    raise AssertionError(f"{pending(rt)} events still pending")


def pending(rt: Runtime) -> int:
    o = outbox_table
    with rt.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).where(o.c.state == "pending")).scalar_one()


def refs(rt: Runtime, campaign_id: int) -> list[str]:
    m = message_table
    with rt.engine.connect() as conn:
        return list(
            conn.execute(sa.select(m.c.ref).where(m.c.campaign_id == campaign_id)).scalars()
        )


def test_every_message_and_campaign_event_arrives_signed_in_order_once_per_id(setup, tmp_path):
    with receiver() as r:
        rt = setup(webhook_url=r.url, **FAST)
        r.refuse_first = 3
        r.hang_every, r.hang_for = 5, 1.0  # past the 0.5 s timeout: retried, arrives twice
        cid = load(rt, tmp_path, 1200, invalid=3)
        drain(rt, cid)
        deliver_all(rt)
    assert r.bad_signatures == 0
    assert r.refused == 3
    assert r.deliveries > len(r.events)  # the hung requests did arrive, and were sent again
    finals = r.final_messages()
    assert Counter(m["ref"] for m in finals) == Counter(refs(rt, cid))  # each exactly once
    assert all(len(e["data"]["messages"]) <= 500 for e in r.of_type("message.final"))
    invalid = [m for m in finals if m["status"] == "invalid"]
    assert len(invalid) == 3 and all(m["line"] > 0 for m in invalid)
    sample = next(m for m in finals if m["status"] == "delivered")
    assert sample["mobile"].startswith("4670") and sample["cost"] and sample["final_at"]
    assert sample["campaign"] == cid
    kinds = [e["type"] for e in (r.events[i] for i in r.order)]
    # Ordered per campaign: the load's own finals, started, the sends, completed last.
    assert kinds.index("campaign.started") < kinds.index("campaign.completed")
    assert kinds[-1] == "campaign.completed"
    completed = r.of_type("campaign.completed")[0]["data"]
    assert completed["counts"] == ledger_reads.status_counts(rt.engine, cid)
    assert completed["total"] == 1203
    with rt.engine.connect() as conn:
        ids_in_order = list(
            conn.execute(sa.select(outbox_table.c.event_id).order_by(outbox_table.c.id)).scalars()
        )
    assert r.order == ids_in_order


def test_other_4xx_is_not_retried_and_429_waits_with_the_lane_behind_it(setup, tmp_path):
    with receiver() as r:
        rt = setup(webhook_url=r.url, **FAST)
        cid = load(rt, tmp_path, 5)
        r.status_for = {"campaign.started": 410}
        campaign_moves.pause_running(rt.engine, "paused by operator", cid)
        deliver_all(rt)
        o = outbox_table
        with rt.engine.connect() as conn:
            rows = conn.execute(sa.select(o).order_by(o.c.id)).all()
        assert [(x.type, x.state, x.attempts) for x in rows] == [
            ("campaign.started", "failed", 1),  # refused for good: one attempt only
            ("campaign.paused", "delivered", 1),
        ]
        assert "410" in rows[0].last_error
        assert r.of_type("campaign.paused")[0]["data"]["reason"] == "paused by operator"

        r.status_for = {"campaign.resumed": 429}
        campaign_moves.resume(rt.engine, cid)
        campaign_moves.pause_running(rt.engine, "paused by operator", cid)
        for lane in webhooks.due_lanes(rt.engine):
            token = webhooks.lock_lane(rt.redis, lane, 30)
            webhooks.deliver_lane(rt.engine, rt.redis, rt.settings, lane, token)
        with rt.engine.connect() as conn:
            resumed, paused = conn.execute(
                sa.select(o).where(o.c.id > rows[-1].id).order_by(o.c.id)
            ).all()
        assert (resumed.state, resumed.attempts, resumed.last_error) == ("pending", 1, "HTTP 429")
        assert resumed.next_attempt_at > utcnow() - timedelta(seconds=1)
        assert (paused.state, paused.attempts) == ("pending", 0)  # waits behind it, in order
        r.status_for = {}
        deliver_all(rt)
    assert [e["type"] for e in (r.events[i] for i in r.order)][-2:] == [
        "campaign.resumed",
        "campaign.paused",
    ]


def test_an_event_that_cannot_be_written_undoes_the_change_it_reports(setup, tmp_path, monkeypatch):
    rt = setup(**FAST)
    cid = load(rt, tmp_path, 5)

    def broken(conn, rows):
        raise RuntimeError("outbox unavailable")

    monkeypatch.setattr(outbox, "_insert", broken)
    with pytest.raises(RuntimeError):
        campaign_moves.pause_running(rt.engine, "paused by operator", cid)
    assert ledger_reads.get_campaign(rt.engine, cid).state == "running"


def test_without_a_url_events_are_skipped_and_replay_sends_them_again(setup, tmp_path):
    with receiver() as r:
        rt = setup(**FAST)  # no SMS_WEBHOOK_URL, and the campaign has none
        cid = load(rt, tmp_path, 20)
        other = load(rt, tmp_path, 4, webhook_url=r.url)
        drain(rt, cid)
        drain(rt, other)
        assert webhooks.skip_unaddressed(rt.engine) > 0
        deliver_all(rt)
        assert {e["data"]["campaign"] for e in r.events.values()} == {other}
        before = len(r.events)
        status = {d["url"]: d for d in webhooks.status(rt.engine, rt.settings)}
        assert status[None]["skipped"] > 0 and status[None]["pending"] == 0
        assert webhooks.replay(rt.engine, campaign_id=other) == before
        deliver_all(rt)
    assert len(r.events) == before  # same ids again: the receiver dropped the repeats
    assert r.deliveries == 2 * before


def test_message_final_is_written_once_even_when_two_workers_report_the_same_message(
    setup, tmp_path
):
    rt = setup(**FAST)
    cid = load(rt, tmp_path, 3)
    drain(rt, cid)
    o = outbox_table
    with rt.engine.connect() as conn:
        finals = conn.execute(
            sa.select(sa.func.count()).where(o.c.type == "message.final")
        ).scalar_one()
    # A late report for an already final message is skipped by the guard: no second event.
    m = message_table
    with rt.engine.connect() as conn:
        first = conn.execute(sa.select(m.c.id, m.c.status).where(m.c.campaign_id == cid)).first()
    assert first.status in {s.value for s in FINAL}
    late = lifecycle.Change(
        first.id, ledger.Status.DELIVERED, expect=ledger.Status.SENT, final_at=utcnow()
    )
    claims.apply_changes(rt.engine, [late])
    with rt.engine.connect() as conn:
        again = conn.execute(
            sa.select(sa.func.count()).where(o.c.type == "message.final")
        ).scalar_one()
    assert again == finals


def test_final_statuses_set_outside_transitions_write_message_final_in_the_same_transaction(
    setup, tmp_path
):
    """Opt-outs mid-campaign (suppressed), erasure of a number at the gateway (unknown) and a
    passed deadline (skipped) each tell the receiver, once, like any other final status."""
    from dispatcher import erasure, suppression

    m = message_table
    with receiver() as r:
        rt = setup(webhook_url=r.url, erasure_secret="e" * 32, **FAST)
        cid = load(rt, tmp_path, 8)
        with rt.engine.connect() as conn:
            rows = conn.execute(
                sa.select(m.c.id, m.c.mobile, m.c.ref)
                .where(m.c.campaign_id == cid)
                .order_by(m.c.id)
            ).all()
        assert suppression.add_numbers(rt.engine, [rows[0].mobile, rows[1].mobile]) == 2
        assert erasure.forget(rt.settings, rt.engine, rows[2].mobile).stopped == 1
        with rt.engine.begin() as conn:
            conn.execute(
                sa.update(m).where(m.c.id == rows[3].id).values(deadline=utcnow() - timedelta(1))
            )
        assert campaign_moves.skip_past_deadline(rt.engine) == 1
        for batch in claims.due_batches(rt.engine, cid, limit=100):
            sending.send_batch(rt, cid, batch)  # the other four are now at the gateway
        assert erasure.forget(rt.settings, rt.engine, rows[4].mobile).in_flight == 1
        drain(rt, cid)
        deliver_all(rt)
    finals = {m["ref"]: m for m in r.final_messages()}
    assert Counter(m["ref"] for m in r.final_messages()) == Counter(refs(rt, cid))
    got = [(finals[x.ref]["status"], finals[x.ref]["mobile"]) for x in rows[:5]]
    assert got == [
        ("suppressed", rows[0].mobile),
        ("suppressed", rows[1].mobile),
        ("suppressed", "[erased]"),  # the event says what became of it, not to whom
        ("skipped", rows[3].mobile),
        ("unknown", "[erased]"),
    ]
    assert all(finals[x.ref]["status"] == "delivered" for x in rows[5:])
    assert rows[2].mobile not in r.dump() and rows[4].mobile not in r.dump()
    completed = r.of_type("campaign.completed")[0]["data"]
    assert completed["counts"] == ledger_reads.status_counts(rt.engine, cid)


def test_the_readme_receiver_snippet_accepts_our_requests_and_refuses_tampered_ones():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("A receiver checks each request", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    seen: set[str] = set()
    handled: list[str] = []
    scope = {
        "SMS_WEBHOOK_SECRET": SECRET,
        "already_seen": lambda i: i in seen or seen.add(i),
        "handle": lambda kind, data: handled.append(kind),
    }
    exec(code, scope)  # the README's own snippet, run as a receiver would
    body = '{"type":"campaign.started","timestamp":"2026-01-01T00:00:00","data":{}}'
    headers = webhooks.sign_headers(SECRET, "msg_1", body, utcnow())
    title_case = {k.title(): v for k, v in headers.items()}  # as some servers hand them over
    assert scope["receive"](body.encode(), title_case) == 204
    assert scope["receive"](body.encode(), headers) == 204  # a retry: dropped by its id
    assert handled == ["campaign.started"]
    assert scope["receive"](body.replace("started", "paused").encode(), headers) == 401
