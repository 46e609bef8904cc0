"""Metrics: /metrics says what the ledger says, the alert rules and the dashboard read metrics
that exist, and a live scrape during a real campaign equals `status --json`."""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import sys
from decimal import Decimal

import pytest
import requests
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import REDIS_URL
from tests.processes import ROOT, Proc, base_env, celery_group, cli_json, wait_for
from workers import ledger_reads
from workers.metrics import build_registry

ALERTS = ROOT / "config" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "config" / "grafana" / "sms-dispatch.json"
PROMTOOL = shutil.which("promtool")
METRIC = re.compile(r"\b(sms_[a-z_]+)")


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def by_campaign(found: dict, name: str, campaign: int) -> dict[str, float]:
    return {
        labels.get("status", ""): value
        for labels, value in found.get(name, [])
        if labels.get("campaign") == str(campaign)
    }


def served_names(text: str) -> set[str]:
    names = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(s.name for s in family.samples)
    return names


@pytest.fixture
def scrape(db_url, sim, redis_client, make_settings, tmp_path):
    """A drained campaign of 60 rows (3 invalid) and a function returning a scrape's text."""
    from tests.test_webhooks import drain, load
    from workers.runtime import Runtime

    rt = Runtime.build(make_settings(database_url=db_url, gateway_url=sim.url))
    cid = load(rt, tmp_path, 57, invalid=3)
    drain(rt, cid)
    registry = build_registry(rt.engine, rt.redis, rt.settings)

    def text() -> str:
        from workers import counters

        counters.flush()
        return generate_latest(registry).decode()

    yield rt, cid, text
    rt.close()


def test_scrape_counts_and_cost_equal_the_ledger(scrape):
    rt, cid, text = scrape
    body = text()
    found = samples(body)
    assert by_campaign(found, "sms_campaign_messages", cid) == {
        status: float(n) for status, n in ledger_reads.status_counts(rt.engine, cid).items()
    }
    cost = by_campaign(found, "sms_campaign_cost", cid)[""]
    assert Decimal(str(cost)) == ledger_reads.campaign_cost(rt.engine, cid)
    assert ({"state": "completed"}, 1.0) in found["sms_campaigns"]
    # Counted where they happened: every send and look-up, and every final status.
    sends = sum(
        v for lab, v in found["sms_gateway_responses_total"] if lab["endpoint"] == "send_sms.php"
    )
    assert sends >= 57
    assert sum(v for _, v in found["sms_messages_finalized_total"]) == 60  # invalid rows too
    assert found["sms_accepted_to_final_seconds_count"][0][1] == 57
    # No number, ref or text in any label.
    assert "4670" not in "".join(str(lab) for series in found.values() for lab, _ in series)


_CHILD = """
import sys, redis
from workers import counters
counters.FLUSH_EVERY = 3600  # only the SIGTERM handler can write these
counters.bind(redis.Redis.from_url(sys.argv[1]))
counters.flush_before_sigterm()
for status in ["delivered"] * 5 + ["undelivered"] * 2:
    counters.bump(counters.FINALIZED, status)
print("counted", flush=True)
sys.stdin.read()  # waits here until the signal comes
"""


def test_a_pool_child_stopped_by_sigterm_keeps_what_it_counted(redis_client):
    # What a Celery pool child does when a service manager signals the whole group: Celery
    # leaves SIGTERM at its default there, so without the handler these bumps are lost.
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, REDIS_URL],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "counted\n"
        child.send_signal(signal.SIGTERM)
        assert child.wait(10) == -signal.SIGTERM  # it still dies of the signal
    finally:
        child.kill()
    stored = redis_client.hgetall("sms:metrics:sms_messages_finalized_total")
    assert {k.decode(): float(v) for k, v in stored.items()} == {
        '["delivered"]': 5.0,
        '["undelivered"]': 2.0,
    }


_REFUSE_COMMIT = (
    "CREATE FUNCTION refuse_commit() RETURNS trigger LANGUAGE plpgsql"
    " AS $$ BEGIN RAISE EXCEPTION 'commit refused'; END $$",
    # Deferred: the UPDATE itself goes through, the COMMIT fails, as when the database goes
    # away between a transaction's last statement and its commit.
    "CREATE CONSTRAINT TRIGGER refuse_commit AFTER UPDATE ON message"
    " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_commit()",
)
_ALLOW_COMMIT = (
    "DROP TRIGGER IF EXISTS refuse_commit ON message",
    "DROP FUNCTION IF EXISTS refuse_commit()",
)


def test_a_commit_that_fails_counts_nothing_and_the_next_try_counts_once(
    pg_url, sim, redis_client, make_settings, tmp_path
):
    import sqlalchemy as sa

    from tests.conftest import _clean
    from tests.test_sending import load
    from workers import claims, counters, fencing
    from workers.ledger import Status, utcnow
    from workers.lifecycle import Change
    from workers.runtime import Runtime

    def finalized() -> dict[str, float]:
        counters.flush()
        stored = redis_client.hgetall("sms:metrics:sms_messages_finalized_total")
        return {json.loads(k)[0]: float(v) for k, v in stored.items()}

    _clean(pg_url)
    rt = Runtime.build(make_settings(database_url=pg_url, gateway_url=sim.url))
    try:
        cid = load(rt, tmp_path, 5)
        token = fencing.new_token(fencing.redis_epoch(rt.redis))
        claimed = claims.claim_batch(rt.engine, cid, 0, limit=10, lease=30, token=token)
        now = utcnow()
        refused = [
            Change(c.id, Status.REJECTED, expect=Status.SUBMITTING, claim=token, final_at=now)
            for c in claimed
        ]
        with rt.engine.begin() as conn:
            for statement in _REFUSE_COMMIT:
                conn.exec_driver_sql(statement)
        with pytest.raises(sa.exc.DBAPIError, match="commit refused"):
            claims.apply_changes(rt.engine, refused)
        assert finalized() == {}  # the rows did not change, so nothing became final
        with rt.engine.begin() as conn:
            for statement in _ALLOW_COMMIT:
                conn.exec_driver_sql(statement)
        assert claims.apply_changes(rt.engine, refused) == 0  # none skipped: the rows waited
        assert finalized() == {"rejected": 5.0}
        assert ledger_reads.status_counts(rt.engine, cid) == {"rejected": 5}
    finally:
        with rt.engine.begin() as conn:
            for statement in _ALLOW_COMMIT:
                conn.exec_driver_sql(statement)
        rt.close()


@pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian package prometheus) not installed")
def test_promtool_accepts_a_live_scrape(scrape):
    _, _, text = scrape
    result = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=text(), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_and_dashboard_read_only_metrics_that_are_served(scrape):
    _, _, text = scrape
    served = served_names(text())
    from workers.counters import SPECS  # served from their first bump on

    served |= {spec.name for spec in SPECS}
    served |= {f"{n}_bucket" for n in served} | {"sms_schedule_missed_slots_total"}
    rules = yaml.safe_load(ALERTS.read_text())
    names = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    assert {
        "SmsCampaignStalled",
        "SmsGatewayCircuitOpen",
        "SmsFailureRatioHigh",
        "SmsAccountPaused",
        "SmsScheduleMissed",
    } <= names
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    dashboard = json.loads(DASHBOARD.read_text())
    exprs += [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in METRIC.findall(e)}
    assert used - served == set()
    if PROMTOOL is not None:
        result = subprocess.run(
            [PROMTOOL, "check", "rules", str(ALERTS)], capture_output=True, text=True
        )
        assert result.returncode == 0, result.stdout + result.stderr


# --- end to end -------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.e2e
def test_live_metrics_during_a_campaign_equal_status_json(
    pg_url, sim, redis_client, make_settings, tmp_path
):
    from tests.conftest import _clean
    from tests.test_e2e import write_list

    _clean(pg_url)
    settings = make_settings(
        database_url=pg_url, broker_url=REDIS_URL, gateway_url=sim.url, send_rate=100,
        batch_size=100, sweep_interval=2.0,
    )  # fmt: skip
    env = settings.as_env()
    sim.configure(mix={"delivered": 0.8, "undelivered": 0.2}, error_5xx=0.02)
    port = _free_port()
    server = Proc(
        [sys.executable, "-m", "dispatcher", "metrics", "--port", str(port), "--bind", "127.0.0.1"],
        base_env(env),
        tmp_path / "metrics.log",
    )
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        with celery_group(env, tmp_path / "logs"):
            lst = write_list(tmp_path / "list.csv", 797)
            # Rows the `send` process itself makes final (invalid) are counted like a worker's.
            with lst.open("a", encoding="utf-8") as fh:
                fh.write("Bad1,12\nBad2,abc\nBad3,+4670\n")
            cid = cli_json(
                "send",
                str(lst),
                "--sender",
                "Shop",
                "--text",
                "Hi {name}",
                "--purpose",
                "service",
                env=env,
            )["campaign"]

            def mid_campaign() -> dict | None:
                try:
                    found = samples(requests.get(url, timeout=5).text)
                except requests.RequestException:
                    return None
                running = ({"campaign": str(cid), "state": "running"}, 1.0)
                return found if running in found.get("sms_campaign_state", []) else None

            during = wait_for(mid_campaign, timeout=60, what="a scrape mid-campaign")
            assert sum(by_campaign(during, "sms_campaign_messages", cid).values()) == 800
            status = wait_for(
                lambda: (s := cli_json("status", str(cid), env=env))["state"] == "completed" and s,
                timeout=180,
                what="the campaign to complete",
            )
        # The workers were stopped the moment the campaign completed (SIGTERM to the whole
        # group, as a service manager does): what they counted last must still be there.
        want = {k: float(v) for k, v in status["counts"].items()}

        def flushed() -> str | None:
            text = requests.get(url, timeout=5).text
            finalized = {
                lab["status"]: v for lab, v in samples(text)["sms_messages_finalized_total"]
            }
            return text if finalized == want else None

        body = wait_for(flushed, timeout=10, what="the workers' counters to match status.json")
    finally:
        server.stop()
    found = samples(body)
    assert by_campaign(found, "sms_campaign_messages", cid) == {
        k: float(v) for k, v in status["counts"].items()
    }
    assert Decimal(str(by_campaign(found, "sms_campaign_cost", cid)[""])) == Decimal(status["cost"])
    assert by_campaign(found, "sms_campaign_final_messages", cid)[""] == status["final"]
    assert ({"campaign": str(cid), "state": "completed"}, 1.0) in found["sms_campaign_state"]
    finalized = {lab["status"]: v for lab, v in found["sms_messages_finalized_total"]}
    assert finalized == {k: float(v) for k, v in status["counts"].items()}
    if PROMTOOL is not None:
        check = subprocess.run(
            [PROMTOOL, "check", "metrics"], input=body, capture_output=True, text=True
        )
        assert check.returncode == 0, check.stdout + check.stderr


def test_the_api_serves_the_same_metrics(scrape):
    from fastapi.testclient import TestClient

    from dispatcher.api.main import create_app

    rt, cid, _ = scrape
    with TestClient(create_app(rt.settings)) as client:
        reply = client.get("/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    found = samples(reply.text)
    assert by_campaign(found, "sms_campaign_messages", cid) == {
        status: float(n) for status, n in ledger_reads.status_counts(rt.engine, cid).items()
    }
