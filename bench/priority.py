"""Benchmark: a reminder batch in the high lane beside a marketing blast in the normal lane.

A normal campaign of N messages runs at SMS_SEND_RATE; mid-way a high campaign of H messages
starts. Printed: how long until every high message was accepted (goal: within 1.25 x H/rate
of its start), how the normal campaign went on afterwards, and the busiest one-second window
the gateway saw (goal: never above the rate).

    .venv/bin/python bench/priority.py --normal 100000 --high 1000 --rate 200
Targets 127.0.0.1 only; every loop is bounded and the script stops by itself.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
import redis
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.throughput import PG_ADMIN, REDIS_URL, Simulator, stop_all  # noqa: E402
from dispatcher.supervisor import beat_command, worker_command  # noqa: E402
from workers.notices import LANE_QUEUES, SEND_QUEUES, TICK_QUEUE, TRACK_QUEUE  # noqa: E402

KEY = "bench-key"


def write_list(path: Path, count: int, prefix: str) -> None:
    with path.open("w") as fh:
        fh.write("mobile\n")
        for i in range(count):
            fh.write(f"{prefix}{i:07d}\n")


class Deployment:
    """A fresh ledger, a lane-aware set of workers (as `sms-dispatch run` starts) and beat."""

    def __init__(self, sim: Simulator, work: Path, rate: float) -> None:
        self.db = f"sms_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.db}"')
        self.pg = PG_ADMIN.rsplit("/", 1)[0] + "/" + self.db
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SMS_")}
        self.env.update(
            SMS_DATA_DIR=str(work / "data"),
            SMS_DATABASE_URL=self.pg.replace("postgresql://", "postgresql+psycopg://"),
            SMS_BROKER_URL=REDIS_URL,
            SMS_GATEWAY_URL=sim.url,
            SMS_GATEWAY_KEY=KEY,
            SMS_SEND_RATE=str(rate),
            SMS_POLL_BACKOFF="3600",
            SMS_BATCH_SIZE="1000",
        )
        redis.Redis.from_url(REDIS_URL).flushdb()
        self.cli("db", "upgrade")
        log = (work / "deployment.log").open("ab")
        commands = [
            worker_command(2, SEND_QUEUES, "send"),
            worker_command(1, [LANE_QUEUES["high"]], "high"),
            worker_command(1, [TRACK_QUEUE, TICK_QUEUE], "track"),
            beat_command(work),
        ]
        self.procs = [
            subprocess.Popen(
                cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
            for cmd in commands
        ]
        time.sleep(5)  # let the workers connect before the clock starts

    def cli(self, *args: str) -> str:
        cmd = [sys.executable, "-m", "dispatcher", *args]
        done = subprocess.run(cmd, env=self.env, capture_output=True, text=True, cwd=ROOT)
        if done.returncode != 0:
            raise SystemExit(f"sms-dispatch {args[0]} failed: {done.stderr.strip()}")
        return done.stdout

    def send(self, listfile: Path, priority: str) -> None:
        self.cli("send", str(listfile), "--sender", "Bench", "--text", "Hi there",
                 "--purpose", "service", "--priority", priority)  # fmt: skip

    def accepted(self, priority: str) -> int:
        with psycopg.connect(self.pg) as conn:
            row = conn.execute(
                "SELECT count(*) FROM message m JOIN campaign c ON c.id = m.campaign_id "
                "WHERE c.priority = %s AND m.status IN ('accepted','sent','delivered')",
                (priority,),
            ).fetchone()
        return int(row[0]) if row else 0

    def stop(self) -> None:
        stop_all(self.procs, self.db)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--normal", type=int, default=100_000)
    parser.add_argument("--high", type=int, default=1_000)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--after", type=float, default=20, help="seconds before the high batch")
    parser.add_argument("--watch", type=float, default=20, help="seconds watched after it")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sms-bench-"))
    normal_list, high_list = work / "normal.csv", work / "high.csv"
    write_list(normal_list, args.normal, "4670")
    write_list(high_list, args.high, "4673")
    goal = 1.25 * args.high / args.rate
    sim = Simulator()
    deployment = Deployment(sim, work, args.rate)
    try:
        deployment.send(normal_list, "normal")
        time.sleep(args.after)
        invoked = time.monotonic()
        deployment.send(high_list, "high")
        started = time.monotonic()  # the campaign is running: its start
        started_wall = time.time()
        deadline = started + goal * 4 + 30
        while deployment.accepted("high") < args.high:
            if time.monotonic() > deadline:
                raise SystemExit(f"high lane: {deployment.accepted('high')}/{args.high} accepted")
            time.sleep(0.1)
        took = time.monotonic() - started
        done_wall = time.time()
        time.sleep(args.watch)
        stats = requests.get(sim.url + "/_sim/stats", timeout=10).json()
    finally:
        deployment.stop()
        sim.stop()
    busiest = max(stats["per_second"].values())
    # The gateway's own count per second: the ledger records a batch's outcomes at its end.
    per_second = {int(k): n for k, n in stats["per_second"].items()}
    during = sum(n for t, n in per_second.items() if started_wall <= t < done_wall) - args.high
    after_seconds = [
        per_second.get(t, 0)
        for t in range(int(done_wall) + 1, int(done_wall) + 1 + int(args.watch) - 1)
    ]
    after = sum(after_seconds)
    after_rate = after / max(1, len(after_seconds))
    verdict = "meets" if took <= goal else "misses"
    print(
        f"high lane: {args.high:,} accepted {took:.2f}s after the campaign started "
        f"(goal {goal:.2f}s = 1.25 x {args.high:,}/{args.rate:g}: {verdict} it); "
        f"`send` itself took {started - invoked:.2f}s\n"
        f"normal lane meanwhile: about {max(0, during):,} accepted (gateway's count); in the "
        f"{len(after_seconds)} whole seconds after: {after:,} ({after_rate:.0f}/s)\n"
        f"busiest second at the gateway: {busiest} (limit {args.rate:g}); "
        f"sent twice: {stats['duplicates']}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
