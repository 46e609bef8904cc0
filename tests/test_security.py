"""Security: redirects are never followed with the key, the simulator's control API needs the key,
Flower refuses to run without a password, the embedded ledger is private to its owner."""

from __future__ import annotations

import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import REDIS_URL, TEST_KEY
from tests.processes import ROOT, Proc, base_env, wait_for
from workers.gateway import GatewayClient, Outcome, RedirectError

CLI = [sys.executable, "-m", "dispatcher"]
CELERY = [sys.executable, "-m", "celery", "-A", "workers"]
MOBILE = "447483938220"
TEXT = "Your code is 4711"


class _Recorder(ThreadingHTTPServer):
    """A real HTTP server that records every request (path, body) and answers `reply(path)`."""

    def __init__(self, reply: Any) -> None:
        self.requests: list[tuple[str, str, str]] = []
        self.reply = reply
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                size = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(size).decode() if size else ""
                server.requests.append((self.command, self.path, body))
                status, headers = server.reply(self.path)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = _handle

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> _Recorder:
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()


@pytest.fixture
def elsewhere() -> Iterator[_Recorder]:
    """The host a redirect points at: it must never hear from us."""
    with _Recorder(lambda path: (200, {})) as server:
        yield server


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirect_is_never_followed_and_names_the_target_host(elsewhere, method, status):
    target = f"{elsewhere.url}/api/sms/send_sms.php?key=echoed-{TEST_KEY}"
    with _Recorder(lambda path: (status, {"Location": target})) as gateway:
        with GatewayClient(gateway.url, TEST_KEY, method=method, timeout=2) as client:
            result = client.send(MOBILE, "InfoSMS", TEXT, "ref1")
            with pytest.raises(RedirectError) as report_error:
                client.report(MOBILE, "ref1")
        assert len(gateway.requests) == 2  # one send, one report: no retry below us
    assert elsewhere.requests == []  # the key, number and text never left for the other host
    assert result.outcome is Outcome.RETRY and result.kind is RedirectError
    assert result.code == status
    for message in (result.error or "", report_error.value.message):
        assert f"redirects to {elsewhere.url} (HTTP {status})" in message
        assert TEST_KEY not in message and "echoed" not in message
        assert MOBILE not in message and TEXT not in message


def test_relative_redirect_names_the_gateways_own_host():
    with (
        _Recorder(lambda path: (302, {"Location": "/login"})) as gateway,
        GatewayClient(gateway.url, TEST_KEY, timeout=2) as client,
    ):
        result = client.send(MOBILE, "InfoSMS", TEXT, "ref2")
    assert f"redirects to {gateway.url} (HTTP 302)" in (result.error or "")
    assert len(gateway.requests) == 1


def test_gateway_send_command_reports_a_redirect_in_one_line(elsewhere):
    with _Recorder(lambda path: (307, {"Location": elsewhere.url + path})) as gateway:
        env = base_env({"SMS_GATEWAY_URL": gateway.url, "SMS_GATEWAY_KEY": TEST_KEY})
        result = subprocess.run(
            [*CLI, "gateway", "send", MOBILE, TEXT, "--sender", "Shop"],
            env=env | {"SMS_GATEWAY_METHOD": "GET"},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"redirects to {elsewhere.url} (HTTP 307)" in lines[0]
    assert TEST_KEY not in result.stderr + result.stdout
    assert elsewhere.requests == []


# --- Flower --------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _flower(tmp_path: Path, extra: dict[str, str]) -> tuple[Proc, int]:
    port = _free_port()
    env = base_env(
        {
            "SMS_BROKER_URL": REDIS_URL,
            "SMS_GATEWAY_URL": "http://127.0.0.1:9",
            "SMS_GATEWAY_KEY": TEST_KEY,
            "FLOWER_PORT": str(port),
            **extra,
        }
    )
    args = [*CELERY, "flower", "--conf=config/flowerconfig.py"]
    return Proc(args, env, tmp_path / f"flower-{port}.log"), port


def _page(port: int, auth: tuple[str, str] | None = None) -> requests.Response | None:
    try:
        return requests.get(f"http://127.0.0.1:{port}/tasks", auth=auth, timeout=2)
    except requests.ConnectionError:
        return None


def test_flower_refuses_to_start_without_a_password(tmp_path):
    flower, port = _flower(tmp_path, {})
    try:
        status = flower.popen.wait(60)
    finally:
        flower.stop()
    assert status != 0
    lines = flower.output().strip().splitlines()
    assert lines[-1] == (
        "flower: refusing to start without a password: set FLOWER_BASIC_AUTH=user:password "
        "(or FLOWER_UNAUTHENTICATED=1 to serve every page to anyone who can reach the port)"
    )
    assert "Traceback" not in flower.output()
    assert _page(port) is None  # nothing listens


def test_flower_with_basic_auth_asks_for_the_password(tmp_path):
    flower, port = _flower(tmp_path, {"FLOWER_BASIC_AUTH": "ops:s3cret-pw"})
    try:
        wait_for(lambda: _page(port) is not None, 60, what="Flower")
        assert _page(port).status_code == 401
        assert _page(port, ("ops", "wrong")).status_code == 401
        assert _page(port, ("ops", "s3cret-pw")).status_code == 200
    finally:
        flower.stop()
    assert "s3cret-pw" not in flower.output()


def test_flower_unauthenticated_only_when_told_and_says_so(tmp_path):
    flower, port = _flower(tmp_path, {"FLOWER_UNAUTHENTICATED": "1"})
    try:
        wait_for(lambda: _page(port) is not None, 60, what="Flower")
        assert _page(port).status_code == 200
    finally:
        flower.stop()
    assert "WARNING: Flower is running WITHOUT AUTHENTICATION" in flower.output()


def test_flower_rejects_a_malformed_password_setting(tmp_path):
    flower, _ = _flower(tmp_path, {"FLOWER_BASIC_AUTH": "just-a-password"})
    try:
        assert flower.popen.wait(60) != 0
    finally:
        flower.stop()
    assert flower.output().strip().splitlines()[-1] == (
        "flower: FLOWER_BASIC_AUTH must be user:password (comma-separated for more)"
    )


# --- the embedded ledger's files -----------------------------------------------------------


def _sms(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = base_env({"SMS_DATA_DIR": str(data_dir), "SMS_GATEWAY_KEY": TEST_KEY})
    return subprocess.run(
        [*CLI, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, umask=0o022
    )


def _modes(folder: Path) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir() if not p.is_socket()}


def test_embedded_data_dir_is_0700_and_its_files_0600(tmp_path):
    data = tmp_path / "new" / "data"
    result = _sms(data, "db", "upgrade")  # under the usual umask, which makes files 0644
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    modes = _modes(data)
    assert modes["ledger.db"] == 0o600
    assert all(mode == 0o600 for mode in modes.values()), modes


def test_a_readable_ledger_from_before_is_narrowed(tmp_path):
    data = tmp_path / "data"
    assert _sms(data, "db", "upgrade").returncode == 0
    (data / "ledger.db").chmod(0o644)
    result = _sms(data, "status")
    assert result.returncode == 0, result.stderr
    assert _modes(data)["ledger.db"] == 0o600
