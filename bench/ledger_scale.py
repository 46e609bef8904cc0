"""Benchmark: a PostgreSQL ledger that grows to 10,000,000 messages stays fast.

Builds a database of its own: old campaigns written with COPY (finished over the last 180
days, half of them older than the 90-day retention), plus one running campaign of 100,000
loaded the normal way. At 1,000,000 and again at 10,000,000 old rows it times the beat ticks
(`dispatch_due`, `poll_due`, `sweep`), `status` of one campaign and `campaigns`. Then it runs
the retention sweep over the 5,000,000 old rows while the running campaign is sent at a set
rate through the real sending code and the simulator, and reports rows/s and the send rate
during the sweep. The database is dropped at the end (unless --keep).

    python bench/ledger_scale.py                     # the full run (about 15-30 minutes)
    python bench/ledger_scale.py --old 2000000 --campaigns 40 --running 20000   # smaller
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import redis
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from config import load_settings, reset_settings  # noqa: E402
from workers.database import upgrade  # noqa: E402

ADMIN = os.environ.get("SMS_BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("SMS_BENCH_REDIS_URL", "redis://127.0.0.1:6379/5")
KEY = "bench-key"
# Final statuses of old campaigns, roughly as a real account sees them.
MIX = [("delivered", 88), ("undelivered", 4), ("failed", 2), ("expired", 1), ("rejected", 1),
       ("invalid", 2), ("duplicate", 1), ("suppressed", 1)]  # fmt: skip
COPY_COLUMNS = (
    "campaign_id", "batch", "line", "ref", "raw_mobile", "mobile", "text", "parts", "status",
    "attempts", "poll_count", "cost", "created_at", "submitted_at", "accepted_at", "final_at",
    "dlr_status",
)  # fmt: skip


SWEEP = """
import json, sys
from pathlib import Path
from config import load_settings
from workers.database import make_engine
from workers.retention import sweep_retention
settings = load_settings(database_url=sys.argv[1], data_dir=Path(sys.argv[2]))
print(json.dumps(sweep_retention(make_engine(sys.argv[1]), settings).as_dict()))
"""


def log(msg: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {msg}", flush=True)


def ms(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    return {
        "median_ms": round(statistics.median(values) * 1000, 2),
        "p95_ms": round(values[int(len(values) * 0.95) - 1] * 1000, 2),
        "max_ms": round(values[-1] * 1000, 2),
    }


class Ledger:
    def __init__(self, name: str) -> None:
        self.name = name
        base = ADMIN.rsplit("/", 1)[0]
        self.url = base.replace("postgresql://", "postgresql+psycopg://") + "/" + name
        self.dsn = base + "/" + name
        self.next_campaign = 0
        self.rows = 0

    def create(self) -> None:
        with psycopg.connect(ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{self.name}"')
        upgrade(self.url)

    def drop(self) -> None:
        with psycopg.connect(ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def add_old_campaigns(self, count: int, per: int, total_campaigns: int) -> None:
        """COPY `count` finished campaigns of `per` messages; campaign i of `total_campaigns`
        finished (180 - 179 * i / total) days ago, so the first half is past 90 days."""
        now = datetime.now(UTC)
        mix = [s for s, w in MIX for _ in range(w)]
        with psycopg.connect(self.dsn) as conn:
            for _ in range(count):
                i = self.next_campaign
                self.next_campaign += 1
                finished = now - timedelta(days=180 - 179 * i / total_campaigns)
                created = finished - timedelta(hours=6)
                cid = conn.execute(
                    "INSERT INTO campaign (name, sender, template, state, total, created_at,"
                    " started_at, finished_at, purpose, source)"
                    " VALUES (%s, 'Shop', 'Hi {name}, 20%% off', 'completed', %s, %s, %s, %s,"
                    " 'marketing', 'list.csv') RETURNING id",
                    (f"old {i}", per, created, created, finished),
                ).fetchone()[0]
                buf = io.StringIO()
                ts = created.isoformat()
                fin = finished.isoformat()
                for n in range(per):
                    status = mix[(n * 7919 + i) % len(mix)]
                    mobile = f"4670{(i * per + n) % 10_000_000:07d}"
                    sent = status in ("delivered", "undelivered", "expired")
                    cost = "0.05" if status == "delivered" else "\\N"
                    text = f"Hi Name{n}, 20% off" if status not in ("invalid", "duplicate") else ""
                    buf.write(
                        f"{cid}\t{n // 1000}\t{n + 2}\tb{i:04d}x{n:010d}\t+{mobile}\t"
                        f"{mobile if status != 'invalid' else chr(92) + 'N'}\t"
                        f"{text or chr(92) + 'N'}\t{1 if text else 0}\t{status}\t"
                        f"{1 if sent else 0}\t{2 if sent else 0}\t{cost}\t{ts}\t"
                        f"{ts if sent else chr(92) + 'N'}\t{ts if sent else chr(92) + 'N'}\t"
                        f"{fin}\t{'delivered' if status == 'delivered' else chr(92) + 'N'}\n"
                    )
                with conn.cursor().copy(
                    f"COPY message ({', '.join(COPY_COLUMNS)}) FROM STDIN"
                ) as cp:
                    cp.write(buf.getvalue())
                conn.commit()
                self.rows += per
        log(f"copied {count} campaigns; {self.rows:,} old messages")

    def without_indexes(self) -> list[str]:
        """Drop message's secondary indexes for a bulk COPY; returns how to build them again.

        Building an index once over sorted rows is far cheaper than growing it row by row.
        """
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT c.conname, i.indexname, i.indexdef FROM pg_indexes i"
                " LEFT JOIN pg_constraint c ON c.conname = i.indexname"
                " WHERE i.tablename = 'message' AND i.indexname <> 'message_pkey'"
            ).fetchall()
            rebuild = []
            for constraint, index, definition in rows:
                if constraint:
                    conn.execute(f"ALTER TABLE message DROP CONSTRAINT {constraint}")
                    rebuild.append(f"ALTER TABLE message ADD CONSTRAINT {constraint} UNIQUE (ref)")
                else:
                    conn.execute(f"DROP INDEX {index}")
                    rebuild.append(definition)
        return rebuild

    def rebuild(self, statements: list[str]) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute("SET maintenance_work_mem = '1GB'")
            for statement in statements:
                conn.execute(statement)

    def vacuum(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE message")
            conn.execute("VACUUM ANALYZE campaign")

    def size(self) -> str:
        with psycopg.connect(self.dsn) as conn:
            return conn.execute(
                "SELECT pg_size_pretty(pg_database_size(current_database()))"
            ).fetchone()[0]


def running_campaign(settings: Any, engine: sa.Engine, count: int, workdir: Path) -> int:
    from dispatcher.campaigns import LoadRequest, load_campaign

    path = workdir / "running.csv"
    with path.open("w", encoding="utf-8") as fh:
        fh.write("name;mobile\n")
        for i in range(count):
            fh.write(f"R{i};+4673{i:07d}\n")
    request = LoadRequest(path, "Shop", "Hi {name}, your order is ready", purpose="service")
    summary = load_campaign(settings, engine, request)
    assert summary.campaign is not None and summary.state == "running", summary
    return summary.campaign


def measure(rt: Any, app: Any, campaign: int, old_campaign: int, rounds: int) -> dict[str, Any]:
    from dispatcher.reports import all_statuses, campaign_status
    from workers import ticks

    out: dict[str, Any] = {}
    for name, call in (
        ("dispatch_due", lambda: ticks.dispatch_due(rt, app)),
        ("poll_due", lambda: ticks.poll_due(rt, app)),
        ("sweep", lambda: ticks.sweep(rt)),
        ("status (running campaign)", lambda: campaign_status(rt.engine, campaign)),
        ("status (finished campaign)", lambda: campaign_status(rt.engine, old_campaign)),
        ("campaigns (all)", lambda: all_statuses(rt.engine)),
    ):
        call()  # warm
        times = []
        for _ in range(rounds if "campaigns" not in name else max(3, rounds // 10)):
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
        out[name] = ms(times)
        log(f"  {name}: {out[name]}")
    rt.redis.flushdb()  # the notices the ticks issued; nobody consumes them here
    return out


class Sender(threading.Thread):
    """Sends the running campaign the way workers do (send_batch per due batch)."""

    def __init__(self, rt: Any, campaign: int) -> None:
        super().__init__(daemon=True)
        self.rt, self.campaign = rt, campaign
        self.stop = threading.Event()

    def run(self) -> None:
        from workers import claims, sending

        while not self.stop.is_set():
            batches = claims.due_batches(self.rt.engine, self.campaign, limit=4)
            if not batches:
                time.sleep(0.05)
                continue
            for batch in batches:
                if self.stop.is_set():
                    return
                sending.send_batch(self.rt, self.campaign, batch)


def sent_between(engine: sa.Engine, campaign: int, start: datetime, end: datetime) -> int:
    from workers.ledger import message_table as M

    with engine.connect() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.count()).where(
                    M.c.campaign_id == campaign,
                    M.c.accepted_at >= start,
                    M.c.accepted_at < end,
                )
            ).scalar_one()
        )


def last_accepted(engine: sa.Engine, campaign: int) -> datetime:
    from workers.ledger import message_table as M

    with engine.connect() as conn:
        return conn.execute(
            sa.select(sa.func.max(M.c.accepted_at)).where(M.c.campaign_id == campaign)
        ).scalar_one()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=int, default=10_000_000, help="old messages in all")
    parser.add_argument("--campaigns", type=int, default=200, help="old campaigns")
    parser.add_argument("--first", type=int, default=1_000_000, help="old messages at step 1")
    parser.add_argument("--running", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=60.0, help="send rate during the sweep")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--db", default="sms_bench_ledger_scale")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    # The Celery app reads its broker from the environment when it is imported.
    os.environ["SMS_BROKER_URL"] = REDIS_URL
    reset_settings()

    from simulator.config import SimulatorConfig
    from simulator.server import SimulatorThread
    from workers.celery_app import app
    from workers.runtime import Runtime

    per = args.old // args.campaigns
    ledger = Ledger(args.db)
    ledger.create()
    results: dict[str, Any] = {"old_messages": args.old, "campaigns": args.campaigns}
    workdir = Path(tempfile.mkdtemp(prefix="ledger-scale-"))
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    sim_config = SimulatorConfig(port=0, key=KEY, pending=0.2, sending=0.3, seed=1)
    try:
        with SimulatorThread(sim_config) as sim:
            reset_settings()
            settings = load_settings(
                database_url=ledger.url,
                broker_url=REDIS_URL,
                gateway_url=sim.url,
                gateway_key=KEY,
                data_dir=workdir / "data",
                send_rate=args.rate,
                batch_size=1000,
            )
            rt = Runtime.build(settings)
            t0 = time.perf_counter()
            indexes = ledger.without_indexes()
            ledger.add_old_campaigns(args.first // per, per, args.campaigns)
            ledger.rebuild(indexes)
            copy_s = time.perf_counter() - t0
            running = running_campaign(settings, rt.engine, args.running, workdir)
            ledger.vacuum()
            with rt.engine.connect() as conn:
                old_campaign = conn.execute(sa.text("SELECT min(id) FROM campaign")).scalar_one()
            log(f"step 1: {ledger.rows:,} old + {args.running:,} running; {ledger.size()}")
            results["step1"] = {
                "old_rows": ledger.rows,
                **measure(rt, app, running, old_campaign, args.rounds),
            }

            t0 = time.perf_counter()
            indexes = ledger.without_indexes()  # nothing is sending meanwhile
            ledger.add_old_campaigns(args.campaigns - ledger.next_campaign, per, args.campaigns)
            ledger.rebuild(indexes)
            copy_s += time.perf_counter() - t0
            results["copy_rows_per_s"] = round(ledger.rows / copy_s)
            ledger.vacuum()
            log(f"step 2: {ledger.rows:,} old + {args.running:,} running; {ledger.size()}")
            results["database_size"] = ledger.size()
            results["step2"] = {
                "old_rows": ledger.rows,
                **measure(rt, app, running, old_campaign, args.rounds),
            }

            # Retention while the running campaign is sent at the set rate.
            sender = Sender(rt, running)
            sender.start()
            time.sleep(20)  # the limiter settles; the window before is the baseline
            before_start = datetime.now(UTC)
            time.sleep(20)
            sweep_start = datetime.now(UTC)
            # In a process of its own, as the nightly task runs in a worker of its own.
            done = subprocess.run(
                [sys.executable, "-c", SWEEP, ledger.url, str(workdir / "data")],
                capture_output=True,
                text=True,
                check=True,
                env=dict(os.environ, PYTHONPATH=str(ROOT)),
            )
            report = json.loads(done.stdout.strip().splitlines()[-1])
            sweep_end = datetime.now(UTC)
            time.sleep(1)
            sender.stop.set()
            sender.join(30)
            sweep_s = (sweep_end - sweep_start).total_seconds()
            # Only the part of the sweep while the campaign still had messages to send counts.
            until = min(sweep_end, last_accepted(rt.engine, running))
            window = (until - sweep_start).total_seconds()
            during = sent_between(rt.engine, running, sweep_start, until) / window
            before = sent_between(rt.engine, running, before_start, sweep_start) / 20
            results["retention"] = {
                "rows": report["rows"],
                "campaigns": report["campaigns"],
                "seconds": round(sweep_s, 1),
                "rows_per_s": round(report["rows"] / sweep_s),
                "set_rate": args.rate,
                "send_rate_before": round(before, 1),
                "send_rate_during": round(during, 1),
                "seconds_measured": round(window, 1),
                "within_5_percent": abs(during - args.rate) <= 0.05 * args.rate,
            }
            log(f"retention: {results['retention']}")
            rt.close()
    finally:
        client.flushdb()
        client.close()
        if not args.keep:
            ledger.drop()
            log(f"dropped database {args.db}")
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
