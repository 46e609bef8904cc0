"""`gateway send` checks locally before anything reaches the gateway: opt-outs, empty texts."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import TEST_KEY
from tests.processes import cli


def run(sim, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        "SMS_DATA_DIR": str(tmp_path / "data"),
        "SMS_GATEWAY_URL": sim.url,
        "SMS_GATEWAY_KEY": TEST_KEY,
        "SMS_GATEWAY_TIMEOUT": "2",
    }
    return cli(*args, env=env, check=False, timeout=60, cwd=tmp_path)


def test_an_opted_out_number_is_refused_unless_forced(sim, tmp_path):
    assert run(sim, tmp_path, "suppress", "add", "+44 7483 938220").returncode == 0
    args = ("gateway", "send", "447483938220", "Hi", "--sender", "Shop", "--ref", "optout01")
    refused = run(sim, tmp_path, *args)
    assert refused.returncode != 0
    assert refused.stderr.strip().splitlines() == [
        "sms-dispatch: '447483938220' is on the opt-out list; --force sends to it anyway"
    ]
    assert sim.messages("optout01") == []
    forced = run(sim, tmp_path, *args, "--force")
    assert forced.returncode == 0, forced.stderr
    assert len(sim.messages("optout01")) == 1


def test_an_empty_text_never_reaches_the_gateway(sim, tmp_path):
    for text in ("", "   "):
        result = run(
            sim, tmp_path, "gateway", "send", "447483938220", text, "--sender", "S", "--ref", "e1"
        )
        assert result.returncode != 0
        assert result.stderr.strip() == "sms-dispatch: the text is empty"
    assert sim.messages("e1") == []


def test_a_landline_is_refused_unless_allowed(sim, tmp_path):
    args = ("gateway", "send", "+46 8 123 456 78", "Hi", "--sender", "S", "--ref", "land01")
    refused = run(sim, tmp_path, *args)
    assert refused.returncode != 0
    assert "not a mobile number" in refused.stderr
    allowed = run(sim, tmp_path, *args, "--allow-landlines")
    assert allowed.returncode == 0, allowed.stderr
    assert sim.messages("land01")[0]["mobile"] == "46812345678"
