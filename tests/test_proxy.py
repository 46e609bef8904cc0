"""A real reverse proxy (nginx) in front of the simulator: its 504s and 502s never cause a resend.

Gateways often sit behind nginx. When the script takes longer than the proxy waits, the
proxy answers 504 while the script goes on and queues the message; when the script's
connection breaks after it took the message, the proxy answers 502. Either way the message
may be on its way, so it must be looked up, not sent again.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import TEST_KEY, unavailable
from tests.processes import free_port, wait_for
from tests.test_sending import counts, drain, load, messages
from workers import circuit, sending
from workers.gateway import GatewayClient, Outcome, ServerFailedMidwayError

NGINX = shutil.which("nginx", path=os.environ.get("PATH", "") + os.pathsep + "/usr/sbin")
# How long the proxy waits for the script: well under the batch's straggler wait (1 s), so
# the proxy's answer, not our own cut, is what the sender acts on.
PROXY_WAIT = "200ms"

_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass {upstream};
            proxy_read_timeout {wait};
        }}
    }}
}}
"""


@contextmanager
def nginx(upstream: str, folder: Path) -> Iterator[str]:
    """nginx on a free port, proxying to `upstream`; yields its URL."""
    if NGINX is None:
        unavailable("nginx (Debian package nginx-light)", FileNotFoundError("nginx"))
    port = free_port()
    folder.mkdir()
    conf = folder / "nginx.conf"
    conf.write_text(_CONF.format(dir=folder, port=port, upstream=upstream, wait=PROXY_WAIT))
    proc = subprocess.Popen(
        [NGINX, "-p", str(folder), "-c", str(conf), "-e", str(folder / "error.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError("nginx exited: " + (folder / "error.log").read_text())
        try:
            return requests.get(url + "/api/sms/dlr.php", timeout=1).status_code > 0
        except requests.ConnectionError:
            return False

    try:
        wait_for(up, timeout=15, interval=0.1, what="nginx to listen")
        yield url
    finally:
        proc.send_signal(signal.SIGQUIT)  # nginx's graceful stop
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def proxy(sim, tmp_path: Path) -> Iterator[str]:
    """nginx in front of the simulator; yields its URL."""
    with nginx(sim.url, tmp_path / "nginx") as url:
        yield url


@pytest.fixture
def behind_proxy(setup, proxy) -> Any:
    """A worker Runtime whose gateway URL is the proxy's."""

    def build(**overrides: Any) -> Any:
        return setup(gateway_url=proxy, **overrides)

    return build


def test_the_proxy_s_504_and_502_reach_the_client_as_maybe_taken(sim, proxy):
    with GatewayClient(proxy, TEST_KEY, timeout=5.0) as client:
        sim.configure(late=1.0, late_delay=1.0)  # takes the message, answers after 1 s
        timed_out = client.send("447483938220", "InfoSMS", "Hi", "proxy504")
        sim.configure(late=0.0, drop=1.0)  # takes the message, then the connection breaks
        broken = client.send("447483938221", "InfoSMS", "Hi", "proxy502")
    assert (timed_out.outcome, timed_out.code, timed_out.kind) == (
        Outcome.UNKNOWN,
        504,
        ServerFailedMidwayError,
    )
    assert (broken.outcome, broken.code, broken.kind) == (
        Outcome.UNKNOWN,
        502,
        ServerFailedMidwayError,
    )
    assert sim.stats()["accepted"] == 2  # the gateway has both


@pytest.mark.parametrize(
    ("fault", "status"), [({"late": 1.0, "late_delay": 1.0}, 504), ({"drop": 1.0}, 502)]
)
def test_messages_the_proxy_answered_for_are_looked_up_and_sent_once(
    behind_proxy, sim, tmp_path, figure, fault, status
):
    rt = behind_proxy(circuit_threshold=100)
    sim.configure(**fault)
    cid = load(rt, tmp_path, 8)
    started = time.monotonic()
    sending.send_batch(rt, cid, 0)
    after_send = counts(rt, cid)
    errors = {r.last_error for r in messages(rt, cid)}
    sim.configure(late=0.0, drop=0.0)
    drain(rt, cid)
    stats = sim.stats()
    figure(
        f"behind nginx, HTTP {status} to every send: all final "
        f"{time.monotonic() - started:.1f} s after send; {stats['duplicates']} sent twice"
    )
    assert (stats["unique"], stats["duplicates"]) == (8, 0)  # no recipient got it twice
    assert counts(rt, cid) == {"delivered": 8}
    # Every request got the proxy's error, and every one of them was left for the look-up.
    assert after_send == {"submitting": 8}
    assert all(f"HTTP {status}" in (e or "") for e in errors)
    assert all(r.attempts == 1 for r in messages(rt, cid))


def test_a_run_of_proxy_504s_opens_the_circuit(behind_proxy, sim, tmp_path):
    # Like any 5xx they are gateway trouble: after a run of them sending holds everywhere.
    rt = behind_proxy(circuit_threshold=3, concurrency=1)
    sim.configure(late=1.0, late_delay=1.0)
    cid = load(rt, tmp_path, 6)
    sending.send_batch(rt, cid, 0)
    state = circuit.state(rt.redis)
    assert state is not None and "504" in state.describe()
    assert sim.stats()["attempts"] < 6  # the circuit stopped the batch part way
    sim.configure(late=0.0)
    rt.redis.delete(circuit.PROBE_KEY)
    assert circuit.probe(rt.redis, rt.gateway) == "closed"
    drain(rt, cid)
    assert counts(rt, cid) == {"delivered": 6}
    assert sim.stats()["duplicates"] == 0


def test_a_gateway_down_behind_the_proxy_fails_nothing_and_sends_once(setup, tmp_path, figure):
    # The gateway's server is down and nginx answers 502 for it (connection refused behind
    # the proxy): the common shape of an outage when a proxy fronts the gateway. Nothing may
    # fail for it, nothing may go twice, and the campaign finishes by itself once it is back.
    from simulator.config import SimulatorConfig
    from simulator.server import SimulatorThread

    port = free_port()  # where the gateway will listen once it is back
    with nginx(f"http://127.0.0.1:{port}", tmp_path / "nginx") as url:
        rt = setup(gateway_url=url, circuit_threshold=3, max_attempts=2)
        cid = load(rt, tmp_path, 12)
        drain(rt, cid, rounds=5)
        during = counts(rt, cid)
        state = circuit.state(rt.redis)
        config = SimulatorConfig(port=port, key=TEST_KEY, pending=0.2, sending=0.3, seed=1)
        with SimulatorThread(config) as gateway:
            back = time.monotonic()
            rt.redis.delete(circuit.PROBE_KEY)  # the probe's backoff has passed
            drain(rt, cid, rounds=100)
            recovery = time.monotonic() - back
            stats = gateway.stats()
    assert state is not None and "502" in state.describe()  # the circuit held sending
    assert set(during) <= {"queued", "submitting"}  # nothing final while it was down
    figure(
        f"gateway down behind nginx (502): all final {recovery:.1f} s after it came back; "
        f"{stats['duplicates']} sent twice"
    )
    assert counts(rt, cid) == {"delivered": 12}
    assert (stats["unique"], stats["duplicates"]) == (12, 0)
