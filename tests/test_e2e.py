"""End to end with real processes: workers and beat on the real Redis and PostgreSQL, and the
embedded mode, sending through the simulator with faults on."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest
import requests

from tests.conftest import REDIS_URL
from tests.processes import ROOT, Proc, base_env, celery_group, cli, cli_json, free_port, wait_for

pytestmark = pytest.mark.e2e

# Failure words carry a cost like deliveries do, so the ledger's total must equal the gateway's.
# `send` has no default purpose: every campaign says what it is for.
SEND = ("send", "--purpose", "service")
MIX = {"delivered": 0.9, "undelivered": 0.04, "failed": 0.03, "expired": 0.02, "rejected": 0.01}


def write_list(path: Path, count: int) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        fh.write("name,mobile\n")
        for i in range(count):
            fh.write(f"P{i},+4670{2000000 + i:07d}\n")
    return path


@pytest.fixture
def prod_env(pg_url, sim, redis_client, make_settings):
    """Production mode: PostgreSQL ledger, the machine's Redis as broker."""
    from tests.conftest import _clean

    _clean(pg_url)
    settings = make_settings(
        database_url=pg_url,
        broker_url=REDIS_URL,
        gateway_url=sim.url,
        gateway_timeout=1.0,
        send_rate=400,
        batch_size=100,
        submit_lease=3.0,
        sweep_interval=2.0,
        max_attempts=8,
    )
    return settings.as_env()


def finished(env: dict[str, str], campaign: int) -> dict | None:
    status = cli_json("status", str(campaign), env=env)
    return status if status["done"] and status["state"] == "completed" else None


def assert_accounted(status: dict, total: int, sim) -> None:
    assert status["total"] == total
    assert sum(status["counts"].values()) == total
    assert status["final"] == total
    stats = sim.stats()
    assert stats["duplicates"] == 0, stats["duplicate_refs"]
    assert Decimal(status["cost"]) == Decimal(stats["cost"])


def test_campaign_with_faults_and_a_credit_top_up_ends_final_and_sent_once(prod_env, sim, tmp_path):
    sim.configure(
        mix=MIX,
        error_5xx=0.03,
        busy=0.03,
        late=0.01,
        late_delay=2.5,
        drop=0.01,
        credit="50.00",  # about half the list at 0.05 a part
    )
    lst = write_list(tmp_path / "list.csv", 2000)
    with celery_group(prod_env, tmp_path / "logs"):
        sent = cli_json(*SEND, str(lst), "--sender", "Shop", "--text", "Hi {name}", env=prod_env)
        cid = sent["campaign"]
        assert sent["counts"] == {"queued": 2000}
        paused = wait_for(
            lambda: (s := cli_json("status", str(cid), env=prod_env))["state"] == "paused" and s,
            timeout=120,
            what="the campaign to pause for credit",
        )
        assert "credit" in paused["reason"].lower()
        assert paused["counts"].get("queued", 0) > 0
        sim.configure(credit="1000")
        resumed = cli("resume", str(cid), env=prod_env)
        assert "running" in resumed.stdout
        status = wait_for(lambda: finished(prod_env, cid), timeout=240, what="all messages final")
    assert_accounted(status, 2000, sim)
    assert status["counts"].get("delivered", 0) > 1500
    assert set(status["counts"]) <= {"delivered", "undelivered", "rejected", "failed"}


def test_killed_worker_loses_nothing_and_sends_nothing_twice(prod_env, sim, tmp_path):
    env = dict(prod_env, SMS_SEND_RATE="150", SMS_REPORT_GRACE="3")
    sim.configure(latency=0.05)
    lst = write_list(tmp_path / "list.csv", 1000)
    logs = tmp_path / "logs"
    with celery_group(env, logs) as group:
        cid = cli_json(*SEND, str(lst), "--sender", "Shop", "--text", "Hi {name}", env=env)[
            "campaign"
        ]
        wait_for(lambda: sim.stats()["accepted"] >= 200, timeout=60, what="sending to be underway")
        group["worker"].kill()  # SIGKILL to the worker and its pool children, mid-batch
        group["worker"].popen.wait()
        accepted_at_kill = sim.stats()["accepted"]
        assert accepted_at_kill < 1000
        group["worker"] = Proc(group["worker"].popen.args, base_env(env), logs / "worker2.log")
        status = wait_for(lambda: finished(env, cid), timeout=240, what="all messages final")
    assert_accounted(status, 1000, sim)
    assert status["counts"] == {"delivered": 1000}


def test_flower_shows_campaign_tasks_without_numbers_or_texts(prod_env, sim, tmp_path):
    port = free_port()
    env = dict(prod_env, FLOWER_UNAUTHENTICATED_API="true")
    flower = Proc(
        [
            sys.executable, "-m", "celery", "-A", "workers", "flower",
            f"--port={port}", "--address=127.0.0.1",
        ],
        base_env(env),
        tmp_path / "flower.log",
    )  # fmt: skip
    try:
        wait_for(lambda: _http_ok(f"http://127.0.0.1:{port}/api/workers"), 30, what="Flower")
        lst = write_list(tmp_path / "list.csv", 150)
        with celery_group(env, tmp_path / "logs"):
            text = "Secret offer code QX77 for {name}"
            cid = cli_json(*SEND, str(lst), "--sender", "Shop", "--text", text, env=env)["campaign"]
            wait_for(lambda: finished(env, cid), timeout=120, what="campaign done")

            def batch_tasks():
                tasks = requests.get(f"http://127.0.0.1:{port}/api/tasks", timeout=5).json()
                found = [t for t in tasks.values() if t.get("name") == "sms.send_batch"]
                return (found, tasks) if found else None

            found, tasks = wait_for(batch_tasks, timeout=30, what="Flower to list tasks")
        assert any(f"'campaign': {cid}" in (t.get("kwargs") or "") for t in found)
        names = {t.get("name") for t in tasks.values()}
        assert {"sms.send_batch", "sms.poll_reports"} <= names
        dump = json.dumps(tasks)
        assert "4670200" not in dump  # no phone number, in any form
        assert "QX77" not in dump  # no message text
    finally:
        flower.stop()


def _http_ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def test_embedded_mode_with_faults_and_a_credit_top_up_ends_final_and_sent_once(sim, tmp_path):
    sim.configure(
        mix=MIX, error_5xx=0.02, busy=0.02, drop=0.01, late=0.01, late_delay=3, credit="50.00"
    )
    data = tmp_path / "data"
    env = {
        "SMS_DATA_DIR": str(data),
        "SMS_GATEWAY_URL": sim.url,
        "SMS_GATEWAY_KEY": "test-key-\u00e5-secret",
        "SMS_SEND_RATE": "400",
        "SMS_POLL_RATE": "500",
        "SMS_RETRY_BASE": "0.2",
        "SMS_RETRY_MAX": "1",
        "SMS_UNKNOWN_RECHECK": "0.5",
        "SMS_REPORT_GRACE": "3",
        "SMS_POLL_BACKOFF": "0.5,1,2",
        "SMS_SWEEP_INTERVAL": "2",
        "SMS_MAX_ATTEMPTS": "8",
        "SMS_GATEWAY_TIMEOUT": "2",
        # Not the default 8000: a demo or another `run` on this machine must not stop this one.
        "SMS_API_PORT": str(free_port()),
    }
    lst = write_list(tmp_path / "list.csv", 2000)
    # With nothing running, send commits the campaign and says when sending will start.
    first = cli(*SEND, str(lst), "--sender", "Shop", "--text", "Hi {name}", env=env)
    assert "starts when `sms-dispatch run`" in first.stdout + first.stderr
    cid = int(first.stdout.split()[1].rstrip(":"))
    run = subprocess.Popen(
        [sys.executable, "-m", "dispatcher", "run"],
        env=base_env(env),
        cwd=ROOT,
        stdout=(tmp_path / "run.log").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        paused = wait_for(
            lambda: (s := cli_json("status", str(cid), env=env))["state"] == "paused" and s,
            timeout=120,
            what="the campaign to pause for credit",
        )
        assert "credit" in paused["reason"].lower()
        sim.configure(credit="1000")
        assert "running" in cli("resume", str(cid), env=env).stdout
        status = wait_for(lambda: finished(env, cid), timeout=240, what="all messages final")
    finally:
        run.send_signal(2)  # Ctrl-C
        code = run.wait(60)
    assert code == 0
    assert_accounted(status, 2000, sim)
    assert not (data / "redis.sock").exists()
    # No process of the group is left behind.
    left = subprocess.run(["pgrep", "-f", str(data)], capture_output=True, text=True).stdout
    assert left.strip() == ""
    time.sleep(0.1)


def test_campaign_sent_at_a_set_time_sends_nothing_before_it(prod_env, sim, tmp_path):
    from datetime import UTC, datetime, timedelta

    import sqlalchemy as sa

    from workers.ledger import campaign_table, utcnow

    lst = write_list(tmp_path / "list.csv", 50)
    with celery_group(prod_env, tmp_path / "logs"):
        # An hour ahead, so a slow machine cannot make `--at` the past before the CLI reads it;
        # the time then arrives by moving the campaign's start, not by waiting for the clock.
        at = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
        sent = cli(
            *SEND, str(lst), "--sender", "Shop", "--text", "Hi {name}",
            "--at", at.strftime("%Y-%m-%dT%H:%M:%S"), "--tz", "UTC",
            env=prod_env,
        )  # fmt: skip
        assert "starts at" in sent.stdout and at.isoformat() in sent.stdout
        cid = int(sent.stdout.split()[1].rstrip(":"))
        for _ in range(4):  # several dispatch ticks (1 s apart) pass it by
            assert sim.stats()["attempts"] == 0
            assert cli_json("status", str(cid), env=prod_env)["state"] == "scheduled"
            time.sleep(0.5)
        engine = sa.create_engine(prod_env["SMS_DATABASE_URL"], poolclass=sa.pool.NullPool)
        with engine.begin() as conn:
            arrived = utcnow()
            conn.execute(
                sa.update(campaign_table)
                .where(campaign_table.c.id == cid)
                .values(send_after=arrived)
            )
        engine.dispose()
        status = wait_for(lambda: finished(prod_env, cid), timeout=120, what="all final")
    first_accept = min(int(s) for s in sim.stats()["per_second"])
    assert first_accept >= int(arrived.timestamp())
    assert status["counts"] == {"delivered": 50}
