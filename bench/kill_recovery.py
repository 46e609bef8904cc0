"""Benchmark: how long after a worker is SIGKILLed (and started again) the campaign is final.

Default settings throughout (lease, report grace, poll backoff, rate): the figure a user gets.
The processes `sms-dispatch run` starts, on a PostgreSQL database of its own and a Redis
database of the machine's; the simulator answers at once and reports delivery within a second.

    .venv/bin/python bench/kill_recovery.py --messages 2000 --kill-after 15
Targets 127.0.0.1 only; every wait is bounded and the script stops by itself.
"""

from __future__ import annotations

import argparse
import os
import signal
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
from dispatcher.supervisor import group_commands  # noqa: E402

KEY = "bench-key"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--kill-after", type=float, default=15.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sms-bench-"))
    listfile = work / "list.csv"
    listfile.write_text(
        "mobile\n" + "".join(f"4670{i:07d}\n" for i in range(args.messages)), encoding="utf-8"
    )
    db = f"sms_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    pg = PG_ADMIN.rsplit("/", 1)[0] + "/" + db
    sim = Simulator("--pending", "0.3", "--sending", "0.5")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMS_")}
    env.update(
        SMS_DATA_DIR=str(work / "data"),
        SMS_DATABASE_URL=pg.replace("postgresql://", "postgresql+psycopg://"),
        SMS_BROKER_URL=REDIS_URL,
        SMS_GATEWAY_URL=sim.url,
        SMS_GATEWAY_KEY=KEY,
    )
    redis.Redis.from_url(REDIS_URL).flushdb()
    log = (work / "group.log").open("ab")

    def spawn(cmd: list[str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT
        )

    def cli(*cli_args: str) -> None:
        cmd = [sys.executable, "-m", "dispatcher", *cli_args]
        subprocess.run(cmd, env=env, check=True, capture_output=True, cwd=ROOT)

    def final() -> int:
        with psycopg.connect(pg) as conn:
            row = conn.execute(
                "SELECT count(*) FROM message WHERE status NOT IN "
                "('queued','submitting','accepted','sent')"
            ).fetchone()
        return int(row[0]) if row else 0

    cli("db", "upgrade")
    commands = group_commands(work)
    procs = {name: spawn(cmd) for name, cmd in commands.items()}
    try:
        time.sleep(5)
        started = time.monotonic()
        cli("send", str(listfile), "--sender", "Bench", "--text", "Hi", "--purpose", "service")
        time.sleep(args.kill_after)
        os.killpg(procs["worker"].pid, signal.SIGKILL)
        procs["worker"].wait()
        killed_at = final()
        procs["worker"] = spawn(commands["worker"])
        restarted = time.monotonic()
        deadline = restarted + 900
        while final() < args.messages:
            if time.monotonic() > deadline:
                raise SystemExit(f"not final after 900 s: {final()}/{args.messages}")
            time.sleep(0.5)
        done = time.monotonic()
        stats = requests.get(sim.url + "/_sim/stats", timeout=10).json()
    finally:
        stop_all(list(procs.values()), db)
        sim.stop()
    print(
        f"{args.messages:,} messages, default settings; send worker SIGKILLed "
        f"{args.kill_after:g}s after `send` ({killed_at:,} final then), started again at once: "
        f"every message final {done - restarted:.1f}s after the new worker started "
        f"({done - started:.1f}s after `send`); sent twice: {stats['duplicates']}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
