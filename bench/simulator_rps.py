"""Benchmark: requests/s of the simulator's send_sms.php on 127.0.0.1, median of 3 runs.

Loads ``python -m simulator`` with an aiohttp client, and with wrk when installed; bounded runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
from yarl import URL

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"  # loopback only: this is a load test
KEY = "bench-key"
SEND_PATH = "/api/sms/send_sms.php"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}

WRK_SCRIPT = """
local counter = 1
function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end
function init(args)
  n = 0
end
function request()
  n = n + 1
  local body = "key=%s&mobile=447483938220&sender=Bench&msgtext=Hello%%20How%%20Are%%20You"
    .. "&ref=w" .. RUN .. "t" .. tid .. "n" .. n
  return wrk.format("POST", "%s", {["Content-Type"] = "application/x-www-form-urlencoded"}, body)
end
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def start_simulator(port: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulator", "--host", HOST, "--port", str(port), "--key", KEY],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening" not in line:
        proc.kill()
        raise SystemExit(f"simulator did not start: {line!r}")
    return proc


def control(base: str, path: str, method: str = "GET") -> dict:
    request = urllib.request.Request(
        base + path,
        method=method,
        data=b"" if method == "POST" else None,
        headers={"X-Sim-Key": KEY},  # the control API needs the key
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        return json.loads(reply.read())


async def _load(
    base: str, tag: str, connections: int, total: int, duration: float, method: str
) -> tuple[int, int, float]:
    """``connections`` keep-alive workers share ``total`` requests; stop at ``duration`` too."""
    url = base + SEND_PATH
    fixed = urlencode(
        {"key": KEY, "mobile": "447483938220", "sender": "Bench", "msgtext": "Hello How Are You"}
    )
    ok = errors = 0
    issued = 0
    deadline = time.perf_counter() + duration

    async def worker(http: aiohttp.ClientSession, wid: int) -> None:
        nonlocal ok, errors, issued
        n = 0
        while issued < total and time.perf_counter() < deadline:
            issued += 1
            n += 1
            # Encoded here, cheaply: aiohttp's FormData would make the client the bottleneck.
            query = f"{fixed}&ref={tag}w{wid}n{n}"  # a fresh ref per request, as in a real run
            try:
                if method == "GET":
                    reply = await http.get(URL(f"{url}?{query}", encoded=True))
                else:
                    reply = await http.post(url, data=query.encode(), headers=FORM)
                async with reply:
                    body = await reply.read()
                if body == b"200":
                    ok += 1
                else:
                    errors += 1
            except aiohttp.ClientError:
                errors += 1

    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        started = time.perf_counter()
        await asyncio.gather(*(worker(http, w) for w in range(connections)))
        elapsed = time.perf_counter() - started
    return ok, errors, elapsed


def _load_process(args: tuple[str, str, int, int, float, str]) -> tuple[int, int, float]:
    return asyncio.run(_load(*args))


def aiohttp_run(
    base: str, run: int, connections: int, total: int, duration: float, method: str, procs: int
) -> tuple[float, int, int]:
    """One run; with ``procs`` > 1 the client is split over processes so it is not the limit."""
    if procs == 1:
        ok, errors, elapsed = asyncio.run(
            _load(base, f"a{run}p0", connections, total, duration, method)
        )
        return ok / elapsed, ok, errors
    jobs = [
        (base, f"a{run}p{p}", connections // procs, total // procs, duration, method)
        for p in range(procs)
    ]
    with multiprocessing.Pool(procs) as pool:
        results = pool.map(_load_process, jobs)
    ok = sum(r[0] for r in results)
    errors = sum(r[1] for r in results)
    return ok / max(r[2] for r in results), ok, errors


def wrk_run(wrk: str, base: str, run: int, connections: int, duration: float) -> float:
    script = WRK_SCRIPT.replace("RUN", str(run)) % (KEY, SEND_PATH)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
    try:
        out = subprocess.run(
            [
                wrk,
                "-t2",
                f"-c{connections}",
                f"-d{max(1, int(duration))}s",
                "-s",
                handle.name,
                base,
            ],
            capture_output=True,
            text=True,
            timeout=duration + 60,
            check=True,
        ).stdout
    finally:
        os.unlink(handle.name)
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not match:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    if "Non-2xx" in out or "Socket errors" in out:
        print("    wrk reported errors:", " | ".join(out.strip().splitlines()[-4:-2]))
    return float(match.group(1))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--connections", type=int, default=64, help="concurrent keep-alive conns")
    parser.add_argument("--requests", type=int, default=30000, help="max requests per run")
    parser.add_argument("--duration", type=float, default=10.0, help="max seconds per run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--method", choices=["GET", "POST"], default="POST")
    parser.add_argument("--procs", type=int, default=1, help="aiohttp client processes")
    parser.add_argument("--no-wrk", action="store_true", help="skip wrk even when installed")
    args = parser.parse_args(argv)

    port = free_port()
    proc = start_simulator(port)
    base = f"http://{HOST}:{port}"
    cpus = os.cpu_count()
    print(f"simulator pid {proc.pid} at {base}; {cpus} CPUs shared by server and load generator")
    try:
        figures = []
        for run in range(1, args.runs + 1):
            control(base, "/_sim/reset", "POST")  # keeps the message store from growing
            rps, ok, errors = aiohttp_run(
                base, run, args.connections, args.requests, args.duration, args.method, args.procs
            )
            accepted = control(base, "/_sim/stats")["accepted"]
            figures.append(rps)
            print(
                f"  aiohttp {args.method} run {run}: {rps:8.0f} req/s "
                f"({ok} ok, {errors} errors, simulator accepted {accepted})"
            )
        print(
            f"aiohttp client, {args.connections} conns, {args.procs} proc(s), {args.method}: "
            f"median {statistics.median(figures):.0f} req/s"
        )

        wrk = None if args.no_wrk else shutil.which("wrk")
        if wrk is None:
            print("wrk: not installed (or --no-wrk), skipped")
        else:
            figures = []
            for run in range(1, args.runs + 1):
                control(base, "/_sim/reset", "POST")
                rps = wrk_run(wrk, base, run, args.connections, args.duration)
                accepted = control(base, "/_sim/stats")["accepted"]
                figures.append(rps)
                print(f"  wrk POST run {run}: {rps:8.0f} req/s (simulator accepted {accepted})")
            print(
                f"wrk, 2 threads, {args.connections} conns, POST: "
                f"median {statistics.median(figures):.0f} req/s"
            )
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
