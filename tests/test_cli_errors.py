"""CLI error paths a user meets with a broken data folder or a fired schedule: one line, a
non-zero exit, the path and the cause, never a traceback."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TEST_KEY
from tests.processes import ROOT, base_env, cli

# Root ignores file modes; without these two capabilities it obeys them like anyone else.
AS_PLAIN_USER = (
    ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
    if os.geteuid() == 0 and shutil.which("setpriv")
    else []
)


def sms(data_dir: Path, *args: str, plain_user: bool = False) -> subprocess.CompletedProcess[str]:
    env = base_env(
        {
            "SMS_DATA_DIR": str(data_dir),
            "SMS_GATEWAY_URL": "http://127.0.0.1:9",
            "SMS_GATEWAY_KEY": TEST_KEY,
        }
    )
    prefix = AS_PLAIN_USER if plain_user else []
    return subprocess.run(
        [*prefix, sys.executable, "-m", "dispatcher", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def list_file(tmp_path: Path) -> Path:
    path = tmp_path / "list.csv"
    path.write_text("mobile,name\n+46701234567,Ann\n+46701234568,Bo\n")
    return path


@pytest.mark.parametrize(
    "args",
    [("status",), ("db", "upgrade"), ("suppress", "list"), ("run",)],
)
def test_data_dir_that_is_a_file_is_one_line(tmp_path, args):
    data = tmp_path / "data"
    data.write_text("not a folder")
    line = one_line_error(sms(data, *args))
    assert line == f"sms-dispatch: {data} is not a folder (check SMS_DATA_DIR)"


needs_modes = pytest.mark.skipif(
    os.geteuid() == 0 and not AS_PLAIN_USER, reason="root without setpriv ignores file modes"
)


@needs_modes
def test_read_only_data_dir_names_the_path_and_cause(tmp_path):
    data = tmp_path / "data"
    data.mkdir(mode=0o500)
    line = one_line_error(sms(data, "status", plain_user=True))
    assert line == f"sms-dispatch: cannot create the ledger {data}/ledger.db: permission denied"


@needs_modes
def test_read_only_data_dir_with_a_ledger_names_the_folder(tmp_path):
    data = tmp_path / "data"
    assert sms(data, "db", "upgrade").returncode == 0
    data.chmod(0o500)
    try:
        line = one_line_error(sms(data, "status", plain_user=True))
    finally:
        data.chmod(0o700)
    assert line == f"sms-dispatch: cannot use the ledger {data}/ledger.db: {data} is not writable"


@needs_modes
def test_unreadable_data_dir_names_the_path_and_cause(tmp_path):
    data = tmp_path / "data"
    assert sms(data, "db", "upgrade").returncode == 0
    data.chmod(0)
    try:
        line = one_line_error(sms(data, "status", plain_user=True))
    finally:
        data.chmod(0o700)
    assert line == f"sms-dispatch: cannot use the ledger {data}/ledger.db: permission denied"


def test_removing_a_fired_schedule_keeps_its_campaigns(tmp_path, list_file):
    env = {
        "SMS_DATA_DIR": str(tmp_path / "data"),
        "SMS_GATEWAY_URL": "http://127.0.0.1:9",
        "SMS_GATEWAY_KEY": TEST_KEY,
    }
    cli(
        "schedule", "add", "reminders", "--cron", "0 9 * * *", "--tz", "UTC",
        "--list", str(list_file), "--sender", "Clinic", "--text", "Hi {name}", env=env,
    )  # fmt: skip
    fired = cli("schedule", "run", "reminders", env=env)
    assert fired.stdout.startswith("campaign 1 running, 2 rows")

    removed = cli("schedule", "remove", "reminders", env=env, check=False)
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout.strip() == "schedule 'reminders' removed"
    assert cli("schedule", "list", env=env).stdout.strip() == "no schedules"
    campaigns = cli("campaigns", env=env).stdout
    assert "reminders" in campaigns and campaigns.count("\n") == 1
    assert "2 final" not in campaigns  # still waiting to be sent: nothing was cancelled
    status = cli("status", "1", env=env).stdout
    assert "running" in status and "queued       2" in status
    # The name is free again, and its next firing makes a new campaign beside the old one.
    cli(
        "schedule", "add", "reminders", "--cron", "0 9 * * *", "--tz", "UTC",
        "--list", str(list_file), "--sender", "Clinic", "--text", "Hi {name}", env=env,
    )  # fmt: skip
    assert cli("schedule", "run", "reminders", env=env).stdout.startswith("campaign 2 running")


def test_data_dir_and_ledger_modes_survive_a_check(tmp_path):
    # Guard for the helper above: a plain `status` on a fresh folder leaves nothing readable.
    data = tmp_path / "fresh" / "data"
    assert sms(data, "status").returncode == 0
    assert stat.S_IMODE(data.stat().st_mode) == 0o700


# --- a gateway that is not set --------------------------------------------------------------

NO_URL = (
    "sms-dispatch: SMS_GATEWAY_URL is not set: give the gateway's address, e.g. "
    "SMS_GATEWAY_URL=https://gateway.example (or gateway_url in the TOML file)"
)


def _without_gateway(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = base_env({"SMS_DATA_DIR": str(data_dir), "SMS_GATEWAY_KEY": TEST_KEY})
    return subprocess.run(
        [sys.executable, "-m", "dispatcher", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "args",
    [
        ("run",),
        ("send", "LIST", "--sender", "Shop", "--text", "Hi", "--purpose", "service"),
        ("gateway", "send", "46701234567", "Hi", "--sender", "Shop"),
    ],
)
def test_missing_gateway_url_is_one_line_and_nothing_is_loaded(tmp_path, list_file, args):
    data = tmp_path / "data"
    args = tuple(str(list_file) if a == "LIST" else a for a in args)
    assert one_line_error(_without_gateway(data, *args)) == NO_URL
    # No campaign was loaded that nothing could send, and no Redis was left running.
    assert _without_gateway(data, "campaigns").stdout.strip() in ("no campaigns yet", "")
    assert not (data / "redis.sock").exists()


def test_dry_run_needs_no_gateway(tmp_path, list_file):
    result = _without_gateway(
        tmp_path / "data", "send", str(list_file), "--sender", "Shop", "--text", "Hi",
        "--purpose", "service", "--dry-run",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("dry run: ")


def test_worker_refuses_to_start_without_a_gateway_url(tmp_path):
    from tests.conftest import REDIS_URL

    env = base_env({"SMS_BROKER_URL": REDIS_URL, "SMS_GATEWAY_KEY": TEST_KEY})
    result = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "workers", "worker", "--concurrency=1"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert NO_URL.replace("sms-dispatch:", "sms-dispatch worker:") in result.stderr.splitlines()


def test_any_error_the_user_can_act_on_is_one_line_without_a_list_to_keep() -> None:
    # A new error class only has to derive from UserError: the CLI and the API both show it
    # as one line, with no tuple of error classes that it could be forgotten from.
    import click
    from click.testing import CliRunner

    from config import UserError
    from dispatcher.cli import _Group

    class BrandNewError(UserError):
        pass

    @click.group(cls=_Group)
    def group() -> None:
        pass

    @group.command()
    def act() -> None:
        raise BrandNewError("the list has no header row\nsecond line never shown")

    result = CliRunner().invoke(group, ["act"])
    assert result.exit_code == 2
    assert result.output.strip() == "sms-dispatch: the list has no header row"
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_every_user_facing_error_derives_from_one_class() -> None:
    from config import SettingsError, UserError
    from dispatcher.embedded import EmbeddedRedisError
    from dispatcher.errors import OptionError
    from dispatcher.recipients import RecipientListError
    from dispatcher.schedules import ScheduleError
    from dispatcher.suppression import SuppressionError
    from dispatcher.texts import TextError
    from dispatcher.tokens import TokenError
    from workers.campaign_moves import CampaignStateError
    from workers.database import DataDirError, SchemaError
    from workers.ledger_reads import CampaignNotFound
    from workers.wallclock import TimingError

    for kind in (
        SettingsError, RecipientListError, TextError, TimingError, ScheduleError,
        SuppressionError, CampaignNotFound, CampaignStateError, SchemaError, DataDirError,
        EmbeddedRedisError, OptionError, TokenError,
    ):  # fmt: skip
        assert issubclass(kind, UserError), kind
