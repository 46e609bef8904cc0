"""compose.yaml: valid against the compose specification, and safe by default."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_compose_file_is_valid_against_the_compose_specification():
    result = subprocess.run(
        [
            sys.executable, "-m", "check_jsonschema",
            "--builtin-schema", "vendor.compose-spec", str(ROOT / "compose.yaml"),
        ],
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_has_every_part_of_production_and_no_default_password():
    spec = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = spec["services"]
    assert {"redis", "postgres", "migrate", "worker", "beat", "flower", "simulator"} <= set(
        services
    )
    assert services["simulator"]["profiles"] == ["simulator"]
    assert services["migrate"]["command"] == ["sms-dispatch", "db", "upgrade"]
    flower_env = services["flower"]["environment"]
    assert flower_env["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"].startswith(
        "${POSTGRES_PASSWORD:?"
    )
    beat = services["beat"]
    assert beat.get("deploy", {}).get("replicas", 1) == 1


def test_compose_api_is_published_on_loopback_only_and_needs_a_cookie_secret():
    spec = yaml.safe_load((ROOT / "compose.yaml").read_text())
    api = spec["services"]["api"]
    assert api["command"][:2] == ["sms-dispatch", "serve"]
    assert api["ports"] == ["127.0.0.1:8000:8000"]
    assert api["environment"]["SMS_API_SECRET"].startswith("${SMS_API_SECRET:?")
    assert "/readyz" in " ".join(api["healthcheck"]["test"])
