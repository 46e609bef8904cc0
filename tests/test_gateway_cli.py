"""`sms-dispatch gateway send|report`: one request each, for checking an account by hand."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from tests.conftest import TEST_KEY
from tests.processes import ROOT, base_env


def run(sim, *args, key=TEST_KEY, method="POST", response="json"):
    env = base_env(
        {
            "SMS_GATEWAY_URL": sim.url,
            "SMS_GATEWAY_KEY": key,
            "SMS_GATEWAY_METHOD": method,
            "SMS_GATEWAY_RESPONSE": response,
            "SMS_GATEWAY_TIMEOUT": "1",
        }
    )
    return subprocess.run(
        [sys.executable, "-m", "dispatcher", "gateway", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(("method", "response"), [("POST", "json"), ("GET", "numeric")])
def test_send_prints_the_outcome_and_exits_zero_when_accepted(sim, method, response):
    result = run(
        sim, "send", "+44 7483 938220", "Hello How Are You", "--sender", "InfoSMS",
        "--ref", "h01txyo25k", "--json", method=method, response=response,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "outcome": "accepted",
        "code": 200,
        "error": None,
        "ref": "h01txyo25k",
    }
    assert sim.messages("h01txyo25k")[0]["mobile"] == "447483938220"


def test_refused_send_is_one_line_and_nonzero(sim):
    result = run(sim, "send", "447483938220", "Hi", "--sender", "InfoSMS", "--json", key="nope")
    assert result.returncode != 0
    assert json.loads(result.stdout)["outcome"] == "account"
    assert json.loads(result.stdout)["code"] == 407
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "account" in lines[0]
    assert "nope" not in result.stderr + result.stdout


def test_report_shows_our_status_and_the_cost(sim):
    sim.configure(pending=0.2, sending=0.2)
    assert run(sim, "send", "447483938220", "Hi", "--sender", "S", "--ref", "rep1").returncode == 0
    time.sleep(0.5)
    last = run(sim, "report", "447483938220", "rep1", "--json")
    assert last.returncode == 0
    assert json.loads(last.stdout) == {
        "status": "delivered",
        "queue_status": "processed",
        "dlr_status": "delivered",
        "dlr_error": None,
        "cost": "0.05",
    }


def test_report_of_unknown_ref_is_nonzero(sim):
    result = run(sim, "report", "447483938220", "never", "--json")
    assert result.returncode != 0
    assert json.loads(result.stdout)["status"] == "unknown"
    assert len(result.stderr.strip().splitlines()) == 1


def test_bad_number_is_one_line(sim):
    result = run(sim, "send", "12", "Hi", "--sender", "S")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_simulator_command_answers_the_documents_example_url(tmp_path):
    import socket

    import requests

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "dispatcher", "simulator", "--port", str(port), "--key", "abc"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = (
        f"http://127.0.0.1:{port}/api/sms/send_sms.php?key=abc&mobile=447483938220"
        "&sender=InfoSMS&msgtext=Hello How Are You&ref=h01txyo25k&response=json"
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                reply = requests.get(url, timeout=2)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "simulator did not start"
                time.sleep(0.1)
        assert reply.text.strip() == '{"status":true,"error":0}'
        dlr = requests.get(
            f"http://127.0.0.1:{port}/api/sms/dlr.php?key=abc&full_number=447483938220"
            "&ref=h01txyo25k",
            timeout=2,
        ).json()
        assert dlr == {"status": True, "queue_status": "pending", "queue_error": 0}
    finally:
        proc.terminate()
        proc.wait(10)
