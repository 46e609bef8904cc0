"""Soak: a long campaign at a set rate with gateway faults on; does the rate hold, does memory?

The processes `sms-dispatch run` starts (senders, the high lane, look-ups with ticks,
webhooks, beat) on PostgreSQL (a database of its own, dropped at the end) and a
redis-server of its own; the simulator answers some requests "busy", some with a 503 and some
too late (the outcome is then unknown and looked up). Every 30 s it prints each worker's RSS
(the whole process group) and Redis's key count, then at the end the `send_sms.php` requests
of every 30 s window as a share of the set rate, while messages still waited for their first
request (goal: at least 95 % in each full window; the accepted share is shown beside it),
and the Redis keys left once the campaign is complete.

    .venv/bin/python bench/soak.py                          # 30,000 messages at 200/s
    .venv/bin/python bench/soak.py --messages 3000 --rate 100

Targets 127.0.0.1 only. It stops by itself: when every message is final, or at a deadline of
three times the campaign's nominal length plus ten minutes. Exit status 1 if a full window fell
short of the goal, a message was accepted twice, or the campaign did not finish.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import redis
import requests

from dispatcher.supervisor import group_commands

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN = os.environ.get("SMS_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
KEY = "soak-key"
WINDOW = 30.0
GOAL = 0.95
FINAL = ("delivered", "undelivered", "rejected", "failed", "expired", "unknown", "cancelled")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """A child in its own process group (a worker's pool children included), output to log."""
    return subprocess.Popen(
        args,
        env=env,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop(proc: subprocess.Popen[bytes], grace: float = 30) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # children a dead leader left behind


def group_rss_mb(pgid: int) -> float:
    """Resident memory of every process in a group, in MB."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            # Fields after the command name (which may hold spaces) start at ") ".
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[2]) != pgid:
                continue
            status = Path(f"/proc/{entry}/status").read_text()
        except (OSError, ValueError):
            continue
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
        if match:
            total += int(match.group(1))
    return total / 1024


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except (OSError, requests.RequestException, redis.RedisError):
            pass
        time.sleep(0.2)
    raise SystemExit(f"soak: {what} did not come up within {timeout:.0f} s")


def write_list(path: Path, count: int) -> None:
    with path.open("w") as fh:
        fh.write("mobile\n")
        for i in range(count):
            fh.write(f"4670{i:07d}\n")


def key_shape(key: bytes) -> str:
    """A Redis key with its ids blanked, so keys left over group by kind."""
    return re.sub(r"\d+", "N", key.decode(errors="replace"))


class Soak:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.db = f"sms_soak_{uuid.uuid4().hex[:8]}"
        self.pg = PG_ADMIN.rsplit("/", 1)[0] + "/" + self.db
        self.redis_port = free_port()
        self.sim_port = free_port()
        self.sim_url = f"http://127.0.0.1:{self.sim_port}"
        self.redis = redis.Redis(port=self.redis_port, socket_timeout=5)

    def start(self) -> None:
        a = self.args
        redis_bin = ROOT / ".venv" / "bin" / "redis-server"
        binary = str(redis_bin) if redis_bin.exists() else shutil.which("redis-server")
        if not binary:
            raise SystemExit("soak: no redis-server in .venv/bin or on PATH")
        plain = {k: v for k, v in os.environ.items() if not k.startswith("SMS_")}
        self.procs["redis"] = spawn(
            [binary, "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.work)],
            plain, self.work / "redis.log",
        )  # fmt: skip
        wait_until(self.redis.ping, 15, "redis-server")
        self.procs["simulator"] = spawn(
            [sys.executable, "-m", "simulator", "--port", str(self.sim_port), "--key", KEY,
             "--busy", str(a.busy), "--error-5xx", str(a.error_5xx), "--late", str(a.late),
             "--late-delay", str(a.late_delay), "--pending", "2", "--sending", "3",
             "--seed", "7"],
            plain, self.work / "simulator.log",
        )  # fmt: skip
        wait_until(lambda: self.stats() is not None, 20, "the simulator")
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.db}"')
        # Default settings but the account's rates: what a user who sets the rate would run.
        self.env = dict(
            plain,
            SMS_DATA_DIR=str(self.work / "data"),
            SMS_DATABASE_URL=self.pg.replace("postgresql://", "postgresql+psycopg://"),
            SMS_BROKER_URL=f"redis://127.0.0.1:{self.redis_port}/0",
            SMS_GATEWAY_URL=self.sim_url,
            SMS_GATEWAY_KEY=KEY,
            SMS_SEND_RATE=str(a.rate),
            SMS_POLL_RATE=str(a.poll_rate or a.rate * 1.5),
            PYTHONUNBUFFERED="1",
        )
        self.cli("db", "upgrade")
        # The processes `sms-dispatch run` starts: senders, the high lane, look-ups with
        # ticks, webhooks, beat.
        (self.work / "beat").mkdir()
        self.group = group_commands(self.work / "beat")
        for name, args in self.group.items():
            self.procs[name] = spawn(args, self.env, self.work / f"{name}.log")

    def cli(self, *args: str) -> str:
        cmd = [sys.executable, "-m", "dispatcher", *args]
        done = subprocess.run(cmd, env=self.env, cwd=ROOT, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"soak: sms-dispatch {args[0]} failed: {done.stderr.strip()}")
        return done.stdout

    def stats(self) -> dict[str, Any] | None:
        reply = requests.get(f"{self.sim_url}/_sim/stats", params={"key": KEY}, timeout=10)
        return reply.json() if reply.ok else None

    def ledger(self) -> tuple[int, int]:
        """(final messages, campaigns completed)."""
        with psycopg.connect(self.pg) as conn:
            final = conn.execute(
                "SELECT count(*) FROM message WHERE status = ANY(%s)", (list(FINAL),)
            ).fetchone()
            done = conn.execute(
                "SELECT count(*) FROM campaign WHERE state = 'completed'"
            ).fetchone()
        return int(final[0]) if final else 0, int(done[0]) if done else 0

    def untried(self) -> int:
        """Messages never handed to the gateway yet: while any wait, the full rate is owed."""
        with psycopg.connect(self.pg) as conn:
            row = conn.execute(
                "SELECT count(*) FROM message"
                " WHERE status IN ('queued', 'submitting') AND attempts = 0"
            ).fetchone()
        return int(row[0]) if row else 0

    def sample(self, elapsed: float, accepted_before: int) -> int:
        stats = self.stats() or {}
        accepted = int(stats.get("accepted", 0))
        rss = ", ".join(
            f"{name} {group_rss_mb(self.procs[name].pid):.0f} MB" for name in self.group
        )
        final, _ = self.ledger()
        share = (accepted - accepted_before) / (self.args.rate * WINDOW)
        print(
            f"{elapsed:6.0f} s  accepted {accepted:>7,} (+{accepted - accepted_before:,}, "
            f"{share:.0%} of the rate)  final {final:>7,}  RSS {rss}  "
            f"Redis keys {self.redis.dbsize():,}",
            flush=True,
        )
        return accepted

    def close(self) -> None:
        for name in (*self.group, "simulator", "redis"):
            if name in self.procs:
                stop(self.procs[name])
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')


def windows(per_second: dict[str, int], rate: float, *, first: int, until: int) -> list[float]:
    """Share of the rate in each full 30 s window from `first` to `until` (epoch seconds)."""
    shares = []
    start = first
    while start + WINDOW <= until:  # the window holding `until` is partial
        n = sum(per_second.get(str(s), 0) for s in range(start, start + int(WINDOW)))
        shares.append(n / (rate * WINDOW))
        start += int(WINDOW)
    return shares


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=30_000)
    parser.add_argument(
        "--seconds", type=Path, help="write the requests of every second here (JSON), to look into"
    )
    parser.add_argument("--rate", type=float, default=200.0, help="SMS_SEND_RATE")
    parser.add_argument("--poll-rate", type=float, default=None, help="default 1.5 x rate")
    parser.add_argument("--busy", type=float, default=0.02, help="P(Message not accepted)")
    parser.add_argument("--error-5xx", type=float, default=0.01, help="P(HTTP 503)")
    parser.add_argument("--late", type=float, default=0.002, help="P(accepted, answered late)")
    parser.add_argument(
        "--late-delay", type=float, default=15.0, help="seconds; past the client's timeout"
    )
    args = parser.parse_args()
    if args.messages < 1 or args.rate <= 0:
        parser.error("--messages and --rate must be positive")

    work = Path(tempfile.mkdtemp(prefix="sms-soak-"))
    soak = Soak(args, work)
    nominal = args.messages / args.rate
    print(
        f"soak: {args.messages:,} messages at {args.rate:g}/s (about {nominal:.0f} s), faults: "
        f"busy {args.busy:.1%}, 503 {args.error_5xx:.1%}, late {args.late:.1%}; logs in {work}",
        flush=True,
    )
    finished = False
    try:
        soak.start()
        listfile = work / "list.csv"
        write_list(listfile, args.messages)
        time.sleep(3)  # the workers connect before the clock starts
        started = time.monotonic()
        soak.cli("send", str(listfile), "--sender", "Soak", "--text", "Hi", "--purpose", "service")
        deadline = started + 3 * nominal + 600
        accepted = 0
        next_sample = started + WINDOW
        all_tried: int | None = None  # epoch second the last never-sent message was sent
        while time.monotonic() < deadline:
            final, completed = soak.ledger()
            if final >= args.messages and completed:
                finished = True
                break
            if all_tried is None and soak.untried() == 0:
                all_tried = int(time.time())
            if time.monotonic() >= next_sample:
                accepted = soak.sample(time.monotonic() - started, accepted)
                next_sample += WINDOW
            time.sleep(1)
        elapsed = time.monotonic() - started
        time.sleep(5)  # a last tick or two: what is left in Redis now stays
        soak.sample(elapsed, accepted)
        stats = soak.stats() or {}
        # The rate is owed while messages wait for their first request; after that only
        # retries of "busy" answers trickle, at their backoff. Requests count whatever the
        # answer (the account's rate is spent on busy and 503 answers too); accepts are shown.
        requests_seen = stats.get("requests_per_second", {})
        if args.seconds:
            args.seconds.write_text(json.dumps(requests_seen, sort_keys=True))
        first = min((int(sec) for sec in requests_seen), default=0)
        until = all_tried or int(time.time())
        shares = windows(requests_seen, args.rate, first=first, until=until)
        accepted_shares = windows(stats.get("per_second", {}), args.rate, first=first, until=until)
        # Keys that never expire are the ones that would pile up campaign after campaign.
        leftover = Counter(
            key_shape(k) + ("" if soak.redis.ttl(k) >= 0 else " (no TTL)")
            for k in soak.redis.scan_iter(count=1000)
        )
        print(
            f"end: {'all final' if finished else 'NOT finished'} after {elapsed:.0f} s; "
            f"accepted {stats.get('accepted', 0):,} ({stats.get('duplicates', 0)} twice); "
            f"dlr.php look-ups {stats.get('polls', 0) / args.messages:.2f}/message, "
            f"max {stats.get('max_polls_per_ref', 0)} for one ref; "
            f"replies {stats.get('replies', {})}",
            flush=True,
        )
        print(
            "requests per 30 s window while messages waited, share of the set rate: "
            + (", ".join(f"{s:.0%}" for s in shares) or "no full window"),
            flush=True,
        )
        print(
            "accepted in the same windows (busy and 503 answers are the gateway's): "
            + (", ".join(f"{s:.0%}" for s in accepted_shares) or "no full window"),
            flush=True,
        )
        low = [s for s in shares if s < GOAL]
        print(
            f"goal >= {GOAL:.0%} in every full window: "
            + ("met" if not low and shares else f"NOT met ({len(low)} of {len(shares)} below)"),
            flush=True,
        )
        print(
            "Redis keys left: "
            + (", ".join(f"{k} x{n}" for k, n in sorted(leftover.items())) or "none"),
            flush=True,
        )
        ok = finished and not low and stats.get("duplicates", 0) == 0
        return 0 if ok else 1
    except KeyboardInterrupt:
        print("soak: interrupted", file=sys.stderr)
        return 130
    finally:
        soak.close()


if __name__ == "__main__":
    sys.exit(main())
