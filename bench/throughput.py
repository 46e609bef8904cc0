"""Benchmark: messages/s from `send` to all accepted, against the simulator, in one run.

1. sms-dispatch (workers + beat on PostgreSQL and the local Redis), N messages, no latency;
2. beside it, a plain sequential `requests.Session` loop over the same simulator (the naive
   script a user would otherwise write) and an aiohttp client with 64 requests in flight
   (this machine's ceiling);
3. the rate held with 200 ms of gateway latency and SMS_SEND_RATE=500: share of the set rate
   and the busiest one-second window.

    .venv/bin/python bench/throughput.py --messages 100000
Targets 127.0.0.1 only; every loop is bounded and the script stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
import requests

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN = os.environ.get("SMS_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("SMS_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
KEY = "bench-key"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Simulator:
    def __init__(self, *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [sys.executable, "-m", "simulator", "--port", str(self.port), "--key", KEY]
        # Reports stay pending: this measures submission, not delivery.
        args += ["--pending", "86400", *extra]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                requests.get(self.url + "/_sim/stats", timeout=0.5)
                return
            except requests.RequestException:
                time.sleep(0.1)
        raise SystemExit("simulator did not start")

    def stats(self) -> dict:
        return requests.get(self.url + "/_sim/stats", timeout=10).json()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def write_list(path: Path, count: int) -> None:
    with path.open("w") as fh:
        fh.write("mobile\n")
        for i in range(count):
            fh.write(f"4670{i:07d}\n")


def naive_loop(sim: Simulator, count: int) -> float:
    session = requests.Session()
    url = sim.url + "/api/sms/send_sms.php"
    start = time.perf_counter()
    for i in range(count):
        data = {"key": KEY, "mobile": f"4671{i:07d}", "sender": "Bench", "msgtext": "Hi",
                "ref": f"naive{i}", "response": "json"}  # fmt: skip
        session.post(url, data=data, timeout=10).raise_for_status()
    return count / (time.perf_counter() - start)


async def _async_client(url: str, count: int, inflight: int) -> float:
    import aiohttp

    queue = iter(range(count))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=inflight)) as session:

        async def worker() -> None:
            for i in queue:
                data = {"key": KEY, "mobile": f"4672{i:07d}", "sender": "Bench",
                        "msgtext": "Hi", "ref": f"async{i}", "response": "json"}  # fmt: skip
                async with session.post(url, data=data) as reply:
                    await reply.read()

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(inflight)))
        return count / (time.perf_counter() - start)


def async_client(sim: Simulator, count: int, inflight: int = 64) -> float:
    return asyncio.run(_async_client(sim.url + "/api/sms/send_sms.php", count, inflight))


class Pipeline:
    """A fresh ledger database, workers and beat, for one measured campaign."""

    def __init__(self, sim: Simulator, work: Path, workers: int = 2, **env: str) -> None:
        self.db = f"sms_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.db}"')
        url = PG_ADMIN.rsplit("/", 1)[0] + "/" + self.db
        self.pg = url
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SMS_")}
        self.env.update(
            SMS_DATA_DIR=str(work / "data"),
            SMS_DATABASE_URL=url.replace("postgresql://", "postgresql+psycopg://"),
            SMS_BROKER_URL=REDIS_URL,
            SMS_GATEWAY_URL=sim.url,
            SMS_GATEWAY_KEY=KEY,
            SMS_POLL_BACKOFF="3600",
            **env,
        )
        import redis

        redis.Redis.from_url(REDIS_URL).flushdb()
        self.cli("db", "upgrade")
        celery = [sys.executable, "-m", "celery", "-A", "workers"]
        log = (work / "pipeline.log").open("ab")
        self.procs = [
            subprocess.Popen(
                [*celery, "worker", f"--concurrency={workers}", "--loglevel=WARNING",
                 "--without-mingle", "--without-gossip"],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            ),
            subprocess.Popen(
                [*celery, "beat", "--loglevel=WARNING", f"--schedule={work / 'beat'}"],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            ),
        ]  # fmt: skip
        time.sleep(4)  # let the worker connect before the clock starts

    def cli(self, *args: str) -> str:
        cmd = [sys.executable, "-m", "dispatcher", *args]
        return subprocess.run(cmd, env=self.env, check=True, capture_output=True, text=True).stdout

    def accepted(self) -> int:
        with psycopg.connect(self.pg) as conn:
            row = conn.execute(
                "SELECT count(*) FROM message WHERE status IN ('accepted','sent','delivered')"
            ).fetchone()
        return int(row[0]) if row else 0

    def run_campaign(self, listfile: Path, count: int, timeout: float) -> float:
        start = time.perf_counter()
        self.cli(
            "send", str(listfile), "--sender", "Bench", "--text", "Hi there", "--purpose", "service"
        )
        deadline = time.monotonic() + timeout
        while self.accepted() < count:
            if time.monotonic() > deadline:
                raise SystemExit(f"timed out: {self.accepted()}/{count} accepted")
            time.sleep(0.25)
        return count / (time.perf_counter() - start)

    def stop(self) -> None:
        stop_all(self.procs, self.db)


def stop_all(procs: list[subprocess.Popen[bytes]], db: str) -> None:
    """Stop a bench's process groups (SIGTERM, then SIGKILL after 30 s) and drop its database."""
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


class _Skip(Exception):
    pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--baseline", type=int, default=20_000, help="requests per baseline run")
    parser.add_argument("--runs", type=int, default=3, help="runs of each baseline (median)")
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--rate-seconds", type=float, default=30)
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--concurrency", default="32", help="SMS_CONCURRENCY, no latency")
    parser.add_argument("--batch-size", default="1000", help="SMS_BATCH_SIZE")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-rate", action="store_true")
    parser.add_argument(
        "--cpu-hog",
        type=int,
        default=0,
        help="busy-loop processes beside the workers during the rate test (a starved machine)",
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sms-bench-"))

    naive = ceiling = ours = 0.0
    sim = Simulator()
    try:
        if args.skip_throughput:
            raise _Skip
        naive = statistics.median(naive_loop(sim, args.baseline) for _ in range(args.runs))
        print(f"naive sequential requests loop: {naive:,.0f} msg/s", flush=True)
        ceiling = statistics.median(async_client(sim, args.baseline) for _ in range(args.runs))
        print(f"aiohttp, 64 in flight:          {ceiling:,.0f} msg/s", flush=True)
        requests.post(sim.url + "/_sim/reset", headers={"X-Sim-Key": KEY}, timeout=10)
        listfile = work / "list.csv"
        write_list(listfile, args.messages)
        pipe = Pipeline(
            sim,
            work,
            args.workers,
            SMS_SEND_RATE="100000",
            SMS_CONCURRENCY=args.concurrency,
            SMS_BATCH_SIZE=args.batch_size,
        )
        try:
            ours = pipe.run_campaign(listfile, args.messages, timeout=900)
        finally:
            pipe.stop()
        stats = sim.stats()
        print(
            f"sms-dispatch, send to all accepted: {ours:,.0f} msg/s "
            f"({args.messages:,} messages; sent twice: {stats['duplicates']})",
            flush=True,
        )
    except _Skip:
        pass
    finally:
        sim.stop()

    if args.skip_rate:
        return 0
    count = int(args.rate * args.rate_seconds)
    sim = Simulator("--latency", "0.2")
    try:
        rate_list = work / "rate.csv"
        write_list(rate_list, count)
        pipe = Pipeline(
            sim,
            work,
            args.workers,
            SMS_SEND_RATE=str(args.rate),
            SMS_CONCURRENCY="128",
            SMS_BATCH_SIZE=args.batch_size,
        )
        # Each hog spins for at most the test's time limit, then ends by itself.
        limit = args.rate_seconds * 4 + 60
        hog = f"import time\nend = time.monotonic() + {limit}\nwhile time.monotonic() < end: pass"
        hogs = [subprocess.Popen([sys.executable, "-c", hog]) for _ in range(args.cpu_hog)]
        try:
            pipe.run_campaign(rate_list, count, timeout=limit)
        finally:
            for proc in hogs:
                proc.kill()
            pipe.stop()
        per_second = sorted(sim.stats()["per_second"].items(), key=lambda kv: int(kv[0]))
        # Whole seconds only: the first and last are partial.
        full = [n for _, n in per_second[1:-1]]
        achieved = statistics.median(full) if full else 0
        print(
            f"rate test at SMS_SEND_RATE={args.rate:g}, 200 ms latency"
            + (f", {args.cpu_hog} CPU hogs" if args.cpu_hog else "")
            + f": median {achieved:g} msg/s "
            f"= {achieved / args.rate:.1%} of the set rate; busiest second "
            f"{max(n for _, n in per_second)} (limit {args.rate:g})",
            flush=True,
        )
    finally:
        sim.stop()
    if naive:
        print(f"\nsummary: ours {ours:,.0f} msg/s vs naive {naive:,.0f} ({ours / naive:.2f}x), "
              f"ceiling {ceiling:,.0f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
