"""Benchmark: one `/metrics` scrape against a PostgreSQL ledger of 1,000,000 messages.

Fills a database of its own with campaigns shaped like a busy service (by default one running
campaign of 600,000 messages mid-way, one of 300,000 finished an hour ago, 100,000 in old
finished campaigns that have no labels any more), runs ANALYZE as autovacuum would, then
times whole scrapes (the text a Prometheus server receives) and prints the median and worst.

    .venv/bin/python bench/metrics_scrape.py --messages 1000000 --scrapes 20
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid

import psycopg
import redis
from prometheus_client import generate_latest

from config import load_settings
from workers.database import make_engine, upgrade
from workers.metrics import build_registry

PG_ADMIN = os.environ.get("SMS_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("SMS_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")

FILL = """
INSERT INTO message (campaign_id, batch, line, ref, raw_mobile, mobile, parts, status, attempts,
                     cost, created_at, submitted_at, accepted_at, final_at, poll_count)
SELECT %(cid)s, g / 1000, g, md5(%(cid)s::text || '-' || g::text)::varchar(32), '', '4670' || g,
       1,
       CASE WHEN g < %(final)s THEN
              (ARRAY['delivered','delivered','delivered','delivered','undelivered','rejected'])
              [1 + g %% 6]
            WHEN g < %(final)s + %(at_gateway)s THEN 'sent'
            ELSE 'queued' END,
       CASE WHEN g < %(final)s + %(at_gateway)s THEN 1 ELSE 0 END,
       CASE WHEN g < %(final)s AND g %% 6 < 4 THEN 0.05 END,
       now(), now(), now(), CASE WHEN g < %(final)s THEN now() END, 2
FROM generate_series(0, %(count)s - 1) AS g
"""


def fill(url: str, shape: list[tuple[str, int, float]]) -> None:
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        for i, (state, count, done) in enumerate(shape):
            finished = "now() - interval '1 hour'" if state == "completed" else "NULL"
            if state == "completed" and i >= 2:
                finished = "now() - interval '30 days'"
            cid = conn.execute(
                "INSERT INTO campaign (name, sender, template, state, total, created_at, "
                f"started_at, finished_at) VALUES (%s, 'Bench', 'Hi', %s, %s, now(), now(), "
                f"{finished}) RETURNING id",
                (f"bench {i}", state, count),
            ).fetchone()[0]
            final = int(count * done)
            at_gateway = min(count - final, 20_000)
            conn.execute(
                FILL, {"cid": cid, "count": count, "final": final, "at_gateway": at_gateway}
            )
            conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE message")
        conn.execute("VACUUM ANALYZE campaign")


def explain(url: str) -> None:
    queries = [
        "SELECT campaign_id, status, count(*) FROM message WHERE campaign_id IN (1, 2) "
        "GROUP BY campaign_id, status",
        "SELECT campaign_id, sum(cost) FROM message WHERE campaign_id IN (1, 2) "
        "AND cost IS NOT NULL GROUP BY campaign_id",
    ]
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        for query in queries:
            plan = conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + query).fetchall()
            print("\n".join(row[0] for row in plan))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--scrapes", type=int, default=20)
    parser.add_argument("--explain", action="store_true", help="Print the queries' plans.")
    args = parser.parse_args()
    total = args.messages
    shape = [
        ("running", int(total * 0.6), 0.5),
        ("completed", int(total * 0.3), 1.0),
        ("completed", total - int(total * 0.6) - int(total * 0.3), 1.0),
    ]
    name = f"sms_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + "/" + name
    engine = None
    try:
        upgrade(url)
        started = time.perf_counter()
        fill(url, shape)
        print(f"filled {total:,} messages in {time.perf_counter() - started:.1f}s")
        settings = load_settings(database_url=url, broker_url=REDIS_URL)
        engine = make_engine(url)
        client = redis.Redis.from_url(REDIS_URL)
        registry = build_registry(engine, client, settings)
        if args.explain:
            explain(url)
        generate_latest(registry)  # warm the pool and the plan cache, as a running server is
        times = []
        for _ in range(args.scrapes):
            t0 = time.perf_counter()
            body = generate_latest(registry)
            times.append((time.perf_counter() - t0) * 1000)
        lines = [x for x in body.decode().splitlines() if x.startswith("sms_campaign_messages{")]
        print(f"scrape: {len(body):,} bytes, {len(lines)} campaign/status series")
        print(
            f"scrape time over {args.scrapes} scrapes: median {statistics.median(times):.1f} ms, "
            f"worst {max(times):.1f} ms (PostgreSQL, {total:,} messages)"
        )
    finally:
        if engine is not None:
            engine.dispose()
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
