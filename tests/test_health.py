"""What `status` says about conditions that hold every campaign: the circuit, a silent beat."""

from __future__ import annotations

import re
import time
from pathlib import Path

from tests.processes import cli
from workers import circuit


def _env(make_settings, db_url: str) -> dict[str, str]:
    settings = make_settings(database_url=db_url, gateway_url="http://127.0.0.1:9")
    return settings.as_env()


def _campaign(tmp_path: Path, env: dict[str, str]) -> None:
    listfile = tmp_path / "l.csv"
    listfile.write_text("mobile\n+46701000001\n", encoding="utf-8")
    cli("send", str(listfile), "--sender", "Shop", "--text", "Hi", "--purpose", "service", env=env)


def test_status_says_when_sending_waits_for_the_gateway_and_why(
    make_settings, pg_url, redis_client, tmp_path
):
    env = _env(make_settings, pg_url)
    _campaign(tmp_path, env)
    circuit.open_circuit(redis_client, "cannot connect to http://127.0.0.1:9")
    out = cli("status", env=env).stdout
    assert "waiting for the gateway since" in out
    assert "cannot connect to http://127.0.0.1:9" in out


def test_status_says_when_no_beat_has_ticked_for_a_while(
    make_settings, pg_url, redis_client, tmp_path
):
    env = _env(make_settings, pg_url)
    _campaign(tmp_path, env)
    redis_client.set("sms:tick:last", f"{time.time() - 120:.3f}")
    out = cli("status", env=env).stdout
    assert re.search(r"no beat tick for 1[2-9]\ds: reports are not polled", out)
    redis_client.set("sms:tick:last", f"{time.time():.3f}")
    assert "beat tick" not in cli("status", env=env).stdout
