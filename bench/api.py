"""Benchmark: the HTTP API over PostgreSQL, as a client sees it.

1. `POST /v1/campaigns` with a generated list uploaded as multipart: rows/s (wall clock of the
   request) and the peak RSS of the API server process (and with its loader child).
2. `GET /v1/campaigns/{id}` on that campaign (its messages in the ledger): p50/p99 latency.

A fresh PostgreSQL database is made and dropped; the broker is left unreachable, so nothing
is sent and the campaign only loads.

    .venv/bin/python bench/api.py --rows 1000000 --gets 500
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psycopg
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.load_list import generate  # noqa: E402

PG_ADMIN = os.environ.get("SMS_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    out = []
    for child in map(int, text.split()):
        out += [child, *children(child)]
    return out


class PeakRss(threading.Thread):
    """Samples the server's RSS (alone, and with its children) every 50 ms."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.alone = self.total = 0
        self.running = True

    def run(self) -> None:
        while self.running:
            own = rss_kb(self.pid)
            self.alone = max(self.alone, own)
            self.total = max(self.total, own + sum(rss_kb(c) for c in children(self.pid)))
            time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--gets", type=int, default=500)
    args = parser.parse_args()

    name = f"sms_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + "/" + name
    work = Path(tempfile.mkdtemp(prefix="sms-bench-api-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMS_")}
    env.update(
        SMS_DATABASE_URL=url,
        SMS_BROKER_URL="redis://127.0.0.1:1/0",  # nobody listens: nothing is sent
        SMS_DATA_DIR=str(work / "data"),
        SMS_GATEWAY_URL="http://127.0.0.1:9",  # never called: nothing is sent
    )
    server = None
    try:
        cli = [sys.executable, "-m", "dispatcher"]
        subprocess.run([*cli, "db", "upgrade"], env=env, check=True, capture_output=True)
        token = subprocess.run(
            [*cli, "token", "create", "bench"], env=env, check=True, capture_output=True, text=True
        ).stdout.strip()
        lst = work / "list.csv"
        generate(lst, args.rows)
        port = free_port()
        server = subprocess.Popen(
            [*cli, "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=(work / "api.log").open("wb"),
        )
        base = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                requests.get(f"{base}/healthz", timeout=1)
                break
            except requests.RequestException:
                time.sleep(0.1)
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token}"
        idle = rss_kb(server.pid)
        peak = PeakRss(server.pid)
        peak.start()
        form = {"sender": "Shop", "text": "Hi {name}, see you in {city}", "purpose": "service"}
        started = time.perf_counter()
        with lst.open("rb") as fh:
            reply = session.post(
                f"{base}/v1/campaigns", data=form, files={"file": ("list.csv", fh, "text/csv")}
            )
        elapsed = time.perf_counter() - started
        peak.running = False
        peak.join()
        reply.raise_for_status()
        created = reply.json()
        size = lst.stat().st_size / 1e6
        print(f"upload of {args.rows:,} rows ({size:.1f} MB) -> campaign {created['campaign']}")
        print(f"  POST /v1/campaigns: {elapsed:.1f} s, {args.rows / elapsed:,.0f} rows/s")
        print(
            f"  API process RSS: idle {idle / 1024:.0f} MB, peak {peak.alone / 1024:.0f} MB"
            f" (with its list-reading child {peak.total / 1024:.0f} MB)"
        )
        status_url = f"{base}/v1/campaigns/{created['campaign']}"
        for _ in range(5):  # warm the pool and the planner's statistics
            session.get(status_url).raise_for_status()
        times = []
        for _ in range(args.gets):
            t0 = time.perf_counter()
            session.get(status_url).raise_for_status()
            times.append((time.perf_counter() - t0) * 1000)
        times.sort()
        p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
        print(
            f"  GET /v1/campaigns/{{id}} with {created['total']:,} messages, {args.gets} requests:"
            f" p50 {statistics.median(times):.1f} ms, p99 {p99:.1f} ms"
        )
        return 0
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    sys.exit(main())
