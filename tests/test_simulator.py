"""Tests of the SMS gateway simulator over real HTTP: replies, DLR lifecycle, faults, control."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests

from simulator.__main__ import build_parser
from simulator.config import SimulatorConfig, parse_mix
from simulator.segments import encoding_of, segment_count
from simulator.server import SimulatorThread, mask_key

KEY = "test-key"
MOBILE = "447483938220"
ACCEPTED = '{"status":true,"error":0}'
NOT_ACCEPTED = '{"status":false,"error":"Message not accepted"}'
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def sim() -> Iterator[SimulatorThread]:
    with SimulatorThread(SimulatorConfig(port=0)) as running:
        yield running


def params(**overrides: str | None) -> dict[str, str]:
    """The document's example message, with fields changed or (None) removed."""
    base: dict[str, str | None] = {
        "key": KEY,
        "mobile": MOBILE,
        "sender": "InfoSMS",
        "msgtext": "Hello How Are You",
        "ref": "h01txyo25k",
        "response": "json",
    }
    base.update(overrides)
    return {name: value for name, value in base.items() if value is not None}


def send(sim: SimulatorThread, method: str = "GET", **overrides: str | None) -> requests.Response:
    url = f"{sim.url}/api/sms/send_sms.php"
    if method == "GET":
        return requests.get(url, params=params(**overrides), timeout=10)
    return requests.post(url, data=params(**overrides), timeout=10)


def dlr(sim: SimulatorThread, mobile: str, ref: str, key: str = KEY) -> dict[str, Any]:
    reply = requests.get(
        f"{sim.url}/api/sms/dlr.php",
        params={"key": key, "full_number": mobile, "ref": ref},
        timeout=10,
    )
    assert reply.status_code == 200
    return reply.json()


# ----- send_sms.php ----------------------------------------------------------------------------


def test_document_example_url_is_accepted(sim: SimulatorThread) -> None:
    url = (
        f"{sim.url}/api/sms/send_sms.php?key={KEY}&mobile=447483938220&sender=InfoSMS"
        "&msgtext=Hello How Are You&ref=h01txyo25k&response=json"
    )
    reply = requests.get(url, timeout=10)
    assert reply.status_code == 200
    assert reply.headers["Content-Type"] == "text/html; charset=UTF-8"
    assert reply.text == ACCEPTED
    [stored] = sim.messages("h01txyo25k")
    assert stored["mobile"] == MOBILE
    assert stored["sender"] == "InfoSMS"
    assert stored["text"] == "Hello How Are You"


@pytest.mark.parametrize("response", [None, "", "xml"])
def test_numeric_mode_answers_bare_code(sim: SimulatorThread, response: str | None) -> None:
    reply = send(sim, response=response)
    assert reply.status_code == 200
    assert reply.text == "200"


def test_post_form_body_and_query_string_together(sim: SimulatorThread) -> None:
    body = params(key=None, ref="post-1")
    reply = requests.post(f"{sim.url}/api/sms/send_sms.php?key={KEY}", data=body, timeout=10)
    assert reply.text == ACCEPTED
    assert sim.messages("post-1")[0]["text"] == "Hello How Are You"


def test_utf8_text_survives_post(sim: SimulatorThread) -> None:
    assert send(sim, "POST", msgtext="Hej på dig – ж 😀", ref="utf8").text == ACCEPTED
    [stored] = sim.messages("utf8")
    assert stored["text"] == "Hej på dig – ж 😀"
    assert stored["encoding"] == "UCS-2"


@pytest.mark.parametrize("name", ["mobile", "sender", "msgtext", "ref"])
@pytest.mark.parametrize("value", [None, ""])
def test_missing_parameter(sim: SimulatorThread, name: str, value: str | None) -> None:
    reply = send(sim, **{name: value})
    assert reply.status_code == 200
    expected = {"status": False, "error": f"Missing {name.capitalize()} Parameter"}
    assert reply.json() == expected
    assert send(sim, response=None, **{name: value}).text == "400"
    assert sim.stats()["accepted"] == 0


@pytest.mark.parametrize("key", [None, "", "wrong-key"])
def test_invalid_key_is_407_and_checked_first(sim: SimulatorThread, key: str | None) -> None:
    sim.configure(allow_ips=["192.0.2.1"])  # would be a 405, but the key comes first
    reply = send(sim, key=key, mobile=None)
    assert reply.json() == {"status": False, "error": "Invalid API Key"}
    assert send(sim, key=key, mobile=None, response=None).text == "407"


def test_remote_ip_not_allowed_is_405(sim: SimulatorThread) -> None:
    sim.configure(allow_ips=["192.0.2.1"])
    reply = send(sim, mobile=None)  # the IP check comes before parameter checks
    assert reply.json() == {"status": False, "error": "Remote IP not allowed"}
    assert send(sim, response=None).text == "405"
    sim.configure(allow_ips=["127.0.0.1"])
    assert send(sim).text == ACCEPTED
    assert sim.stats()["replies"]["405"] == 2


def test_not_enough_credit_is_406(sim: SimulatorThread) -> None:
    sim.configure(credit="0.10")
    assert send(sim, ref="c1").text == ACCEPTED
    assert send(sim, ref="c2", response=None).text == "200"
    assert send(sim, ref="c3").json() == {"status": False, "error": "Not Enough Credit"}
    assert send(sim, ref="c4", response=None).text == "406"
    stats = sim.stats()
    assert stats["credit"] == "0.00"
    assert stats["cost"] == "0.10"
    assert stats["accepted"] == 2


def test_credit_covers_every_part(sim: SimulatorThread) -> None:
    sim.configure(credit="0.05")
    assert send(sim, msgtext="a" * 161).text == '{"status":false,"error":"Not Enough Credit"}'
    assert send(sim, msgtext="a" * 160).text == ACCEPTED
    assert sim.stats()["credit"] == "0.00"


@pytest.mark.parametrize("mobile", ["+447483938220", "123456", "1" * 16, "4474x", "4474 8393"])
def test_malformed_mobile_not_accepted(sim: SimulatorThread, mobile: str) -> None:
    assert send(sim, mobile=mobile).text == NOT_ACCEPTED
    assert send(sim, mobile=mobile, response=None).text == "400"


def test_duplicates_are_accepted_and_counted(sim: SimulatorThread) -> None:
    assert send(sim, ref="dup").text == ACCEPTED
    assert send(sim, ref="dup").text == ACCEPTED
    assert send(sim, ref="dup", mobile="46701234567").text == ACCEPTED  # other number: new
    stats = sim.stats()
    assert stats["accepted"] == 3
    assert stats["unique"] == 2
    assert stats["duplicates"] == 1
    assert stats["duplicate_refs"] == ["dup"]
    assert stats["cost"] == "0.15"  # a double send is charged twice, like a real gateway
    [first, _] = sim.messages("dup")
    assert first["times_accepted"] == 2


def test_cost_follows_segments(sim: SimulatorThread) -> None:
    sim.configure(pending=0, sending=0)
    cases = {"g160": "a" * 160, "g161": "a" * 161, "u70": "ж" * 70, "u71": "ж" * 71}
    for ref, text in cases.items():
        assert send(sim, ref=ref, msgtext=text).text == ACCEPTED
    costs = {ref: dlr(sim, MOBILE, ref)["sms_cost"] for ref in cases}
    assert costs == {"g160": "0.05", "g161": "0.10", "u70": "0.05", "u71": "0.10"}
    assert sim.stats()["cost"] == "0.30"
    sim.configure(price="0.035")
    assert send(sim, ref="p3", msgtext="a" * 307).text == ACCEPTED  # 3 parts: 0.105
    assert sim.messages("p3")[0]["cost"] == "0.11"


# ----- dlr.php ---------------------------------------------------------------------------------


def test_dlr_shapes_through_the_lifecycle(sim: SimulatorThread) -> None:
    # Deterministic: the lifecycle is read at poll time, so moving the thresholds moves the state.
    sim.configure(pending=3600, sending=3600)
    assert send(sim, ref="life").text == ACCEPTED
    assert dlr(sim, MOBILE, "life") == {"status": True, "queue_status": "pending", "queue_error": 0}
    sim.configure(pending=0)
    assert dlr(sim, MOBILE, "life") == {
        "status": True,
        "queue_status": "processed",
        "queue_error": 0,
        "dlr_status": "sending",
        "dlr_error": "",
        "sms_cost": "0.05",
    }
    sim.configure(sending=0)
    assert dlr(sim, MOBILE, "life") == {
        "status": True,
        "queue_status": "processed",
        "queue_error": 0,
        "dlr_status": "delivered",
        "dlr_error": "",
        "sms_cost": "0.05",
    }
    assert sim.stats()["polls"] == 3
    dlr(sim, MOBILE, "other")
    stats = sim.stats()
    assert (stats["polls"], stats["polled_refs"], stats["max_polls_per_ref"]) == (4, 2, 3)


def test_dlr_walks_pending_sending_delivered_in_real_time(sim: SimulatorThread) -> None:
    sim.configure(pending=0.2, sending=0.2)
    order = ["pending", "sending", "delivered"]
    started = time.monotonic()
    assert send(sim, ref="walk").text == ACCEPTED
    seen: list[str] = []
    delivered_after = None
    while time.monotonic() - started < 30:
        reply = dlr(sim, MOBILE, "walk")
        state = reply.get("dlr_status", reply["queue_status"])
        seen.append(state)
        if state == "delivered":
            delivered_after = time.monotonic() - started
            break
        time.sleep(0.02)
    assert delivered_after is not None, seen
    assert seen == sorted(seen, key=order.index), seen  # never goes backwards
    # Delivery cannot be reported before pending + sending have passed since acceptance.
    assert delivered_after >= 0.39


def test_dlr_not_found_and_bad_key(sim: SimulatorThread) -> None:
    assert send(sim, ref="known").text == ACCEPTED
    notfound = {"status": False, "queue_status": "notfound"}
    assert dlr(sim, MOBILE, "unknown") == notfound
    assert dlr(sim, "46700000000", "known") == notfound
    assert dlr(sim, MOBILE, "known", key="nope") == {"status": False, "error": "Invalid API Key"}


def test_dlr_deleted_shape(sim: SimulatorThread) -> None:
    sim.configure(pending=0, sending=0, force={MOBILE: "deleted"})
    assert send(sim, ref="del").text == ACCEPTED
    assert dlr(sim, MOBILE, "del") == {
        "status": True,
        "queue_status": "processed",
        "queue_error": 0,
        "dlr_exist": False,
        "dlr_status": "notfound",
    }


@pytest.mark.parametrize("word", ["failed", "undelivered", "expired", "rejected"])
def test_dlr_failure_words(sim: SimulatorThread, word: str) -> None:
    sim.configure(pending=0, sending=0, force={MOBILE: word})
    assert send(sim, ref="f").text == ACCEPTED
    reply = dlr(sim, MOBILE, "f")
    assert reply["status"] is True
    assert reply["queue_status"] == "processed"
    assert reply["dlr_status"] == word
    assert reply["dlr_error"]  # a reason text such as "Absent subscriber"
    assert reply["sms_cost"] == "0.05"
    assert sim.stats()["outcomes"][word] == 1


def test_stuck_stays_sending(sim: SimulatorThread) -> None:
    sim.configure(pending=0, sending=0, force={MOBILE: "stuck"})
    assert send(sim, ref="stuck").text == ACCEPTED
    assert dlr(sim, MOBILE, "stuck")["dlr_status"] == "sending"
    assert sim.messages("stuck")[0]["dlr_status"] == "sending"


def test_seeded_mix_is_repeatable_and_follows_weights() -> None:
    def outcomes() -> list[str]:
        config = SimulatorConfig(port=0, seed=7, mix="delivered=0.5,failed=0.3,expired=0.2")
        with SimulatorThread(config) as running:
            with requests.Session() as http:
                for n in range(200):
                    reply = http.get(
                        f"{running.url}/api/sms/send_sms.php", params=params(ref=f"m{n}")
                    )
                    assert reply.text == ACCEPTED
            return [running.messages(f"m{n}")[0]["outcome"] for n in range(200)]

    first = outcomes()
    assert first == outcomes()
    assert set(first) == {"delivered", "failed", "expired"}
    assert 60 <= first.count("delivered") <= 140


# ----- faults --------------------------------------------------------------------------------


def test_error_5xx_accepts_nothing(sim: SimulatorThread) -> None:
    sim.configure(error_5xx=1.0)
    reply = send(sim)
    assert reply.status_code == 503
    assert "<html>" in reply.text
    stats = sim.stats()
    assert stats["accepted"] == 0
    assert stats["attempts"] == 1
    assert stats["replies"]["503"] == 1


def test_busy_is_message_not_accepted(sim: SimulatorThread) -> None:
    sim.configure(busy=1.0)
    assert send(sim).text == NOT_ACCEPTED
    assert send(sim, response=None).text == "400"
    assert sim.stats()["accepted"] == 0


def test_max_rate_caps_accepts_per_second(sim: SimulatorThread) -> None:
    sim.configure(max_rate=5)
    refused = 0
    with requests.Session() as http:
        for n in range(200):
            reply = http.get(f"{sim.url}/api/sms/send_sms.php", params=params(ref=f"r{n}"))
            refused += reply.text == NOT_ACCEPTED
            if refused >= 3:
                break
    stats = sim.stats()
    assert refused >= 3
    assert stats["max_per_second"] <= 5
    assert all(count <= 5 for count in stats["per_second"].values())
    assert sum(stats["per_second"].values()) == stats["accepted"]


def test_late_reply_still_accepts(sim: SimulatorThread) -> None:
    sim.configure(late=1.0, late_delay=3)
    with pytest.raises(requests.Timeout):
        requests.get(f"{sim.url}/api/sms/send_sms.php", params=params(ref="late"), timeout=0.5)
    stats = sim.stats()
    assert stats["accepted"] == 1
    assert stats["replies"]["late"] == 1
    assert sim.messages("late")[0]["mobile"] == MOBILE


def test_drop_closes_connection_but_accepts(sim: SimulatorThread) -> None:
    sim.configure(drop=1.0)
    with pytest.raises(requests.ConnectionError):
        requests.post(f"{sim.url}/api/sms/send_sms.php", data=params(ref="drop"), timeout=10)
    stats = sim.stats()
    assert stats["accepted"] == 1
    assert stats["replies"]["drop"] == 1
    assert len(sim.messages("drop")) == 1


def test_drop_on_a_reused_connection_is_not_retried(sim: SimulatorThread) -> None:
    url = f"{sim.url}/api/sms/send_sms.php"
    with requests.Session() as http:
        assert http.post(url, data=params(ref="keep"), timeout=10).text == ACCEPTED
        sim.configure(drop=1.0)
        with pytest.raises(requests.ConnectionError):
            http.post(url, data=params(ref="dropped"), timeout=10)
    assert sim.stats()["accepted"] == 2  # a silent client retry would have made it 3


def test_start_fails_cleanly_when_port_is_taken(sim: SimulatorThread) -> None:
    with pytest.raises(RuntimeError, match="failed to start"):
        SimulatorThread(SimulatorConfig(port=sim.port)).start()


def test_latency_delays_replies(sim: SimulatorThread) -> None:
    sim.configure(latency=0.3, jitter=0.1)
    started = time.monotonic()
    assert send(sim).text == ACCEPTED
    assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    dlr(sim, MOBILE, "h01txyo25k")
    assert time.monotonic() - started >= 0.3


# ----- control API -----------------------------------------------------------------------------


CONTROL = {"X-Sim-Key": KEY}


def test_control_api_over_http(sim: SimulatorThread) -> None:
    reply = requests.post(
        f"{sim.url}/_sim/config",
        json={"credit": "1.00", "busy": 0.0, "mix": "failed=1"},
        headers=CONTROL,
        timeout=10,
    )
    assert reply.status_code == 200
    config = reply.json()
    assert config["credit"] == "1.00"
    assert config["mix"] == {"failed": 1.0}
    assert config["price"] == "0.05"
    assert config["key"] == "***"

    def post_config(fields: dict[str, Any]) -> requests.Response:
        return requests.post(f"{sim.url}/_sim/config", json=fields, headers=CONTROL, timeout=10)

    bad = post_config({"busy": 2})
    assert bad.status_code == 400
    assert "probability" in bad.json()["error"]
    assert post_config({"bogus": 1}).status_code == 400
    assert post_config({"port": 1}).status_code == 400
    assert sim.configure()["busy"] == 0.0  # the rejected update changed nothing

    assert send(sim, ref="ctl").text == ACCEPTED
    stats = requests.get(f"{sim.url}/_sim/stats", timeout=10).json()
    assert stats["accepted"] == 1
    assert stats["attempts"] == 1
    assert stats["credit"] == "0.95"
    assert stats["outcomes"]["failed"] == 1
    assert stats["replies"]["200"] == 1

    messages = requests.get(f"{sim.url}/_sim/messages/ctl?key={KEY}", timeout=10).json()
    assert messages["messages"][0]["outcome"] == "failed"
    assert messages["messages"][0]["cost"] == "0.05"

    assert requests.post(f"{sim.url}/_sim/reset", headers=CONTROL, timeout=10).status_code == 200
    stats = sim.stats()
    assert stats["accepted"] == stats["unique"] == stats["attempts"] == 0
    assert stats["per_second"] == {}
    assert sim.messages("ctl") == []


# ----- pure functions, config, CLI -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("a", 1),
        ("a" * 160, 1),
        ("a" * 161, 2),
        ("a" * 306, 2),
        ("a" * 307, 3),
        ("€" * 80, 1),  # extension characters take two septets
        ("€" * 81, 2),
        ("a" * 152 + "€" * 5, 2),  # an escape pair is never split across parts
        ("ж" * 70, 1),
        ("ж" * 71, 2),
        ("ж" * 134, 2),
        ("ж" * 135, 3),
        ("😀" * 35, 1),  # outside the BMP: two UCS-2 units
        ("😀" * 36, 2),
    ],
)
def test_segment_count(text: str, parts: int) -> None:
    assert segment_count(text) == parts


def test_encoding_of() -> None:
    assert encoding_of("Hello {world} €5 ÄÖÅ") == "GSM-7"
    assert encoding_of("Hello ж") == "UCS-2"


def test_config_validation_and_mix() -> None:
    assert parse_mix("delivered=3,failed=1") == {"delivered": 0.75, "failed": 0.25}
    config = SimulatorConfig(credit="2.5", mix={"stuck": 2})
    assert config.credit == Decimal("2.5")
    assert config.mix == {"stuck": 1.0}
    for bad in ({"busy": 1.5}, {"mix": "lost=1"}, {"force": {"1": "nope"}}, {"latency": -1}):
        with pytest.raises(ValueError):
            SimulatorConfig(**bad)


def test_parser_builds_every_option() -> None:
    argv = [
        *("--port", "0", "--allow-ip", "127.0.0.1", "--allow-ip", "10.0.0.1", "--credit", "5"),
        *("--error-5xx", "0.1", "--late-delay", "2", "--max-rate", "50", "--mix", "failed=1"),
        *("--force", "46700000000=stuck", "--seed", "3", "--access-log"),
    ]
    args = build_parser().parse_args(argv)
    assert args.allow_ips == ["127.0.0.1", "10.0.0.1"]
    assert args.credit == Decimal("5")
    assert args.error_5xx == 0.1
    assert args.late_delay == 2.0
    assert args.max_rate == 50.0
    assert args.force == [("46700000000", "stuck")]
    assert args.access_log is True


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/_sim/config"),
        ("POST", "/_sim/config"),
        ("POST", "/_sim/reset"),
        ("GET", "/_sim/messages/ctl"),
    ],
)
@pytest.mark.parametrize("given", [None, {"X-Sim-Key": "wrong"}, {"X-Sim-Key": KEY.upper()}])
def test_control_api_refuses_without_the_key(
    sim: SimulatorThread, method: str, path: str, given: dict[str, str] | None
) -> None:
    assert send(sim, ref="ctl").text == ACCEPTED
    reply = requests.request(
        method, sim.url + path, json={"busy": 1.0}, headers=given or {}, timeout=10
    )
    assert reply.status_code == 401
    assert "needs the key" in reply.json()["error"]
    assert KEY not in reply.text and MOBILE not in reply.text and "Hello" not in reply.text
    # Nothing changed: no fault switched on, no message forgotten.
    assert sim.configure()["busy"] == 0.0
    assert sim.stats()["accepted"] == 1 and sim.messages("ctl")[0]["mobile"] == MOBILE


def test_config_over_http_never_shows_the_key(sim: SimulatorThread) -> None:
    reply = requests.get(f"{sim.url}/_sim/config", headers={"X-Sim-Key": KEY}, timeout=10)
    assert reply.status_code == 200
    assert reply.json()["key"] == "***" and KEY not in reply.text
    # The stats hold counts and refs only, and stay open for benchmarks.
    assert requests.get(f"{sim.url}/_sim/stats", timeout=10).status_code == 200


def test_mask_key() -> None:
    assert mask_key("/api/sms/dlr.php?key=s3cret&ref=1") == "/api/sms/dlr.php?key=***&ref=1"
    assert mask_key("/x?ref=1&KEY=s3cret") == "/x?ref=1&key=***"
    assert mask_key("/x?monkey=1") == "/x?monkey=1"
    assert (
        mask_key("/api/sms/send_sms.php?key=k&mobile=4670&sender=Shop&msgtext=Hi%20you&ref=r1")
        == "/api/sms/send_sms.php?key=***&mobile=***&sender=Shop&msgtext=***&ref=r1"
    )
    assert mask_key("/api/sms/dlr.php?full_number=4670&ref=r1") == (
        "/api/sms/dlr.php?full_number=***&ref=r1"
    )


def test_cli_serves_and_never_logs_the_key() -> None:
    secret = "very-secret-key-42"
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulator", "--port", "0", "--key", secret, "--access-log"],
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("simulator listening on http://127.0.0.1:"), line
        url = line.rsplit(" ", 1)[1]
        reply = requests.get(
            f"{url}/api/sms/send_sms.php", params=params(key=secret, ref="cli"), timeout=10
        )
        assert reply.text == ACCEPTED
        stats = requests.get(f"{url}/_sim/stats", timeout=10).json()
        assert stats["accepted"] == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert "send_sms.php?key=***" in err
    assert secret not in err
    # Numbers and texts are personal data: masked in GET query strings too.
    assert "mobile=***" in err and "msgtext=***" in err
    assert MOBILE not in err and "Hello" not in err
    assert secret not in err
    assert json.dumps(secret) not in err


def test_control_key_with_a_non_ascii_letter_works_in_the_header():
    key = "test-key-\u00e5-secret"  # sent by requests as Latin-1 bytes
    with SimulatorThread(SimulatorConfig(port=0, key=key)) as running:
        url = running.url + "/_sim/config"
        assert requests.get(url, headers={"X-Sim-Key": key}, timeout=5).status_code == 200
        assert (
            requests.get(url, headers={"X-Sim-Key": "wrong-\u00e9"}, timeout=5).status_code == 401
        )
