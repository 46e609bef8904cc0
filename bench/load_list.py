"""Benchmark: `sms-dispatch send` loading a generated list into PostgreSQL and SQLite.

Prints rows/s (wall clock of the whole command) and peak RSS from `/usr/bin/time -v`, the
median of --runs runs per database. Nothing is sent: no workers run, so the campaign only loads.

    .venv/bin/python bench/load_list.py --rows 1000000 --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import psycopg

PG_ADMIN = os.environ.get("SMS_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")


def generate(path: Path, rows: int, seed: int = 1) -> None:
    """A list shaped like real exports: names, national and international numbers, repeats."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as fh:
        fh.write("name;mobile;city\n")
        for i in range(rows):
            sub = rng.randrange(10_000_000)
            shape = i % 5
            if shape == 0:
                number = f"07{rng.choice('02369')}-{sub:07d}"
            elif shape == 1:
                number = f"+46 7{rng.choice('02369')} {sub:07d}"
            elif shape == 2:
                number = f"00467{rng.choice('02369')}{sub:07d}"
            elif shape == 3:
                number = f"+44 7{rng.randrange(400, 999)} {sub % 1_000_000:06d}"
            else:
                number = f"467{rng.choice('02369')}{sub:07d}"
            fh.write(f"Name{i};{number};Göteborg\n")


def run_once(listfile: Path, env: dict[str, str]) -> tuple[float, int, dict]:
    cmd = [
        "/usr/bin/time", "-v", sys.executable, "-m", "dispatcher", "send", str(listfile),
        "--sender", "Bench", "--text", "Hi {name}, see you in {city}", "--purpose", "service",
        "--json",
    ]  # fmt: skip
    result = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"send failed:\n{result.stderr[-2000:]}")
    wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", result.stderr)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr)
    assert wall and rss, result.stderr
    hours, minutes, seconds = wall.groups()
    elapsed = int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds)
    summary = json.loads(result.stdout)
    return elapsed, int(rss.group(1)) // 1024, summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", choices=["postgresql", "sqlite"])
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="sms-bench-load-"))
    listfile = work / "list.csv"
    generate(listfile, args.rows)
    base = {k: v for k, v in os.environ.items() if not k.startswith("SMS_")}
    results: dict[str, list[tuple[float, int]]] = {}
    for db in ["postgresql", "sqlite"]:
        if args.only and db != args.only:
            continue
        for run in range(args.runs):
            env = dict(base, SMS_DATA_DIR=str(work / f"data-{db}-{run}"))
            # send checks the gateway settings; no worker runs, so nothing is ever sent.
            env.update(SMS_GATEWAY_URL="http://127.0.0.1:9", SMS_GATEWAY_KEY="bench")
            dbname = None
            if db == "postgresql":
                dbname = f"sms_bench_{uuid.uuid4().hex[:8]}"
                with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                    conn.execute(f'CREATE DATABASE "{dbname}"')
                url = PG_ADMIN.rsplit("/", 1)[0] + "/" + dbname
                env["SMS_DATABASE_URL"] = url.replace("postgresql://", "postgresql+psycopg://")
                subprocess.run(
                    [sys.executable, "-m", "dispatcher", "db", "upgrade"], env=env, check=True
                )
            try:
                elapsed, rss, summary = run_once(listfile, env)
            finally:
                if dbname:
                    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                        conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
            assert summary["total"] == args.rows, summary
            results.setdefault(db, []).append((elapsed, rss))
            print(
                f"{db:<10} run {run + 1}: {args.rows / elapsed:>9,.0f} rows/s "
                f"({elapsed:.1f} s), peak RSS {rss} MB, counts {summary['counts']}",
                flush=True,
            )
    print(f"\nmedian of {args.runs} runs, {args.rows:,} rows:")
    for db, runs in results.items():
        elapsed = statistics.median(e for e, _ in runs)
        rss = max(r for _, r in runs)
        print(f"  {db:<10} {args.rows / elapsed:>9,.0f} rows/s   peak RSS {rss} MB (max)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
