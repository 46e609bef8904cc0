"""The chaos harness: a Redis, a gateway and processes a test can break, and what it measures.

Each scenario owns a redis-server on a free port, the simulator behind a door it can shut, two
workers and a beat on the real PostgreSQL. Durations scale with `SMS_CHAOS_SCALE` (1 = CI).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import redis
import requests
import sqlalchemy as sa

from config import load_settings
from dispatcher.supervisor import beat_command, worker_command
from tests.conftest import PG_ADMIN, TEST_KEY
from tests.processes import ROOT, Proc, base_env, cli_json, free_port, wait_for
from workers.ledger import FINAL, CampaignState, message_table

SCALE = float(os.environ.get("SMS_CHAOS_SCALE", "1"))
REPORT_FILE = os.environ.get("SMS_CHAOS_REPORT")  # JSON lines of every run's figures, if set
M = message_table
FINAL_NAMES = [str(s) for s in FINAL]

# Short settings so a scenario takes seconds; the same for the baseline and every fault.
SUBMIT_LEASE = 6.0
SHORT_SETTINGS = {
    "send_rate": 50,
    "poll_rate": 100,
    "batch_size": 50,
    "submit_lease": SUBMIT_LEASE,
    "report_grace": 5.0,
    "unknown_recheck": 1.0,
    # Retries of a gateway error use up max_attempts in a few seconds, well inside an outage.
    "retry_base": 0.5,
    "retry_max": 2.0,
    "max_attempts": 3,
    "poll_backoff": [1, 2, 4, 8],
    "sweep_interval": 2.0,
    "gateway_timeout": 2.0,
    "notice_lease": 10.0,
}
# The gateway's report: pending 0.2 s, sending 0.3 s, then delivered, before the first look-up
# is due (1 s): without a fault a message costs exactly one look-up, whatever the tick's phase,
# so the baseline does not wobble from run to run.
SIM_LIFECYCLE = ["--pending", "0.2", "--sending", "0.3", "--seed", "1"]


def scaled(seconds: float) -> float:
    return seconds * SCALE


def _redis_binary() -> str:
    bundled = ROOT / ".venv" / "bin" / "redis-server"
    found = str(bundled) if bundled.exists() else shutil.which("redis-server")
    if not found:
        raise RuntimeError("no redis-server in .venv/bin or on PATH")
    return found


class RedisServer:
    """A redis-server of the test's own on a fixed port: killed and started again at will."""

    def __init__(self, workdir: Path, *, aof: bool = False) -> None:
        self.port = free_port()
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.aof = aof
        self.proc: Proc | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [
            _redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.dir), "--save", "", "--daemonize", "no",
            "--appendonly", "yes" if self.aof else "no", "--appendfsync", "everysec",
        ]  # fmt: skip
        self.proc = Proc(args, dict(os.environ), self.dir / "redis.log")
        client = redis.Redis(port=self.port, socket_timeout=1)
        try:
            wait_for(lambda: _pings(client), timeout=15, interval=0.1, what="redis-server")
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL: no shutdown save, clients see the connection drop."""
        if self.proc is not None:
            self.proc.kill(signal.SIGKILL)
            self.proc.popen.wait(10)
            self.proc.stop()
            self.proc = None

    def keys(self) -> int:
        client = redis.Redis(port=self.port, socket_timeout=2)
        try:
            return int(client.dbsize())
        finally:
            client.close()


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


class Door:
    """A TCP door in front of the gateway. Open, it forwards; shut, nothing listens on its port.

    Shutting the door is a gateway that is down (connection refused, live connections reset)
    while the simulator behind it keeps counting, so a ref accepted before the outage and again
    after it still shows as accepted twice.
    """

    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self.target_port = target_port
        self._server: asyncio.AbstractServer | None = None
        self._live: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    def open(self) -> None:
        self._run(self._open())

    def shut(self) -> None:
        self._run(self._shut())

    def close(self) -> None:
        self.shut()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _open(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(
                self._handle, "127.0.0.1", self.port, reuse_address=True, backlog=512
            )

    async def _shut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._live):
            writer.transport.abort()  # RST: the client sees the connection die mid-request
        self._live.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._live.update((writer, up_writer))
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                self._live.discard(w)
                w.transport.abort()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(OSError, RuntimeError):
        writer.write_eof()


class Gateway:
    """The simulator as a process of its own, reached by the workers through a door."""

    def __init__(self, logs: Path, *extra: str) -> None:
        self.sim_port = free_port()
        self.control = f"http://127.0.0.1:{self.sim_port}"
        args = [sys.executable, "-m", "simulator", "--port", str(self.sim_port), "--key", TEST_KEY]
        self.proc = Proc([*args, *SIM_LIFECYCLE, *extra], base_env({}), logs / "simulator.log")
        self.door = Door(self.sim_port)
        self.url = f"http://127.0.0.1:{self.door.port}"
        wait_for(self._up, timeout=20, interval=0.1, what="the simulator")
        self.door.open()

    def _up(self) -> bool:
        try:
            return self._get("stats").ok
        except requests.RequestException:
            return False

    def _get(self, what: str) -> requests.Response:
        return requests.get(f"{self.control}/_sim/{what}", params=self._auth(), timeout=10)

    @staticmethod
    def _auth() -> dict[str, str]:
        # The control API wants the key; in the query string, since the test key is not ASCII
        # and a header value travels as Latin-1.
        return {"key": TEST_KEY}

    def stats(self) -> dict[str, Any]:
        reply = self._get("stats")
        reply.raise_for_status()
        return reply.json()

    def configure(self, **fields: Any) -> None:
        reply = requests.post(
            f"{self.control}/_sim/config", json=fields, params=self._auth(), timeout=10
        )
        reply.raise_for_status()

    def down(self) -> None:
        self.door.shut()

    def up(self) -> None:
        self.door.open()

    def close(self) -> None:
        self.door.close()
        self.proc.stop()


class Ledger:
    """Reads of the test's ledger, each on a fresh connection (the database may be cut)."""

    def __init__(self, url: str) -> None:
        self.engine = sa.create_engine(url, poolclass=sa.pool.NullPool)

    def counts(self, campaign: int) -> dict[str, int]:
        stmt = (
            sa.select(M.c.status, sa.func.count())
            .where(M.c.campaign_id == campaign)
            .group_by(M.c.status)
        )
        with self.engine.connect() as conn:
            return {str(status): int(n) for status, n in conn.execute(stmt)}

    def campaign_done(self, campaign: int, total: int) -> bool:
        """Every message final and the campaign completed (quietly false while cut off)."""
        try:
            with self.engine.connect() as conn:
                final = conn.execute(
                    sa.select(sa.func.count()).where(
                        M.c.campaign_id == campaign, M.c.status.in_(FINAL_NAMES)
                    )
                ).scalar()
                state = conn.execute(
                    sa.text("SELECT state FROM campaign WHERE id = :id"), {"id": campaign}
                ).scalar()
        except sa.exc.OperationalError:
            return False
        return final == total and state == CampaignState.COMPLETED

    def last_final_at(self, campaign: int) -> datetime | None:
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(sa.func.max(M.c.final_at)).where(M.c.campaign_id == campaign)
            ).scalar()

    def retaken(self, campaign: int) -> int:
        """Messages being sent again (`submitting` with attempts >= 2): a paused sender that
        wakes now and still sends its old claim of one of them sends it twice."""
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    sa.select(sa.func.count()).where(
                        M.c.campaign_id == campaign, M.c.status == "submitting", M.c.attempts >= 2
                    )
                ).scalar()
            )

    def diagnose(self, campaign: int) -> str:
        """Where the messages are: status, attempts and last error of the largest groups."""
        stmt = (
            sa.select(M.c.status, M.c.attempts, M.c.last_error, sa.func.count().label("n"))
            .where(M.c.campaign_id == campaign)
            .group_by(M.c.status, M.c.attempts, M.c.last_error)
            .order_by(sa.text("n DESC"))
            .limit(8)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return "; ".join(f"{n} {s} (attempts {a}, {e or 'no error'})" for s, a, e, n in rows)

    def close(self) -> None:
        self.engine.dispose()


def cut_database(url: str, seconds: float) -> None:
    """The database is gone for a while: no new connections, every live one terminated."""
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
        try:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = %s AND pid <> pg_backend_pid()",
                    (name,),
                )
                time.sleep(0.2)
        finally:
            admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')


@dataclass
class Figures:
    """What one run measured: the report line and the JSON record."""

    scenario: str
    total: int
    counts: dict[str, int]
    duplicates: int
    duplicate_refs: list[str]
    accepted: int
    polls: int
    polls_5xx: int  # look-ups the gateway answered with a 503
    max_polls_per_ref: int
    recovery: float | None  # fault end -> last message final, seconds
    elapsed: float  # send -> last message final (or the end of waiting), seconds
    done: bool
    diagnosis: str = ""
    baseline_polls: float | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def polls_per_message(self) -> float:
        return self.polls / self.total

    def line(self) -> str:
        final = sum(n for s, n in self.counts.items() if s in FINAL_NAMES)
        ratio = ""
        if self.baseline_polls:
            ratio = (
                f" (baseline {self.baseline_polls:.2f}, "
                f"{self.polls_per_message / self.baseline_polls:.2f}x)"
            )
        recovery = "n/a" if self.recovery is None else f"{self.recovery:.1f} s"
        extra = "".join(f"; {k} {v}" for k, v in self.notes.items())
        answered = f" ({self.polls_5xx} of them answered 503)" if self.polls_5xx else ""
        return (
            f"chaos {self.scenario}: {final}/{self.total} final {self.counts}; "
            f"{self.duplicates} refs accepted twice; recovery {recovery} "
            f"(fault end -> last final), {self.elapsed:.1f} s from send; "
            f"dlr.php look-ups {self.polls_per_message:.2f}/message{ratio}{answered}, "
            f"max {self.max_polls_per_ref} for one ref{extra}"
        )

    def record(self) -> None:
        if REPORT_FILE:
            with open(REPORT_FILE, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(asdict(self)) + "\n")


class Stack:
    """One scenario's world: its Redis, the gateway, two workers and a beat, on one ledger."""

    def __init__(self, workdir: Path, database_url: str, *, aof: bool = False) -> None:
        self.workdir = workdir
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.database_url = database_url
        self.redis = RedisServer(workdir / "redis", aof=aof)
        self._gateway: Gateway | None = None
        self.ledger = Ledger(database_url)
        self.env: dict[str, str] = {}
        self.workers: dict[str, Proc] = {}
        self.beats: dict[str, Proc] = {}
        self._starts: dict[str, int] = {}

    @property
    def gateway(self) -> Gateway:
        if self._gateway is None:
            raise RuntimeError("the stack is not started")
        return self._gateway

    # ----- processes ---------------------------------------------------------------------------

    def _log(self, name: str) -> Path:
        n = self._starts[name] = self._starts.get(name, 0) + 1
        return self.logs / (f"{name}.log" if n == 1 else f"{name}-{n}.log")

    def start_worker(self, name: str) -> Proc:
        args = [f"--hostname={name}@%h" if a.startswith("--hostname") else a
                for a in worker_command(2)]  # fmt: skip
        proc = self.workers[name] = Proc(args, base_env(self.env), self._log(name))
        return proc

    def start_beat(self, name: str) -> Proc:
        schedule = self.workdir / name
        schedule.mkdir(exist_ok=True)
        proc = self.beats[name] = Proc(beat_command(schedule), base_env(self.env), self._log(name))
        return proc

    def start(self) -> None:
        self.redis.start()
        self._gateway = Gateway(self.logs)
        settings = load_settings(
            data_dir=self.workdir / "data",
            database_url=self.database_url,
            broker_url=self.redis.url,
            gateway_url=self.gateway.url,
            gateway_key=TEST_KEY,
            **SHORT_SETTINGS,
        )
        self.env = settings.as_env()
        self.start_worker("w1")
        self.start_worker("w2")
        self.start_beat("beat1")

    def wait_ready(self, name: str, timeout: float = 60) -> None:
        """Until the worker's log says it consumes (Celery prints `... ready.`)."""
        proc = self.workers[name]
        wait_for(lambda: " ready." in proc.output(), timeout, what=f"worker {name} to be ready")

    def close(self) -> None:
        # No graceful stop: the scenario is over and its Redis goes with it; a warm shutdown
        # would only add seconds per test to CI.
        for proc in [*self.workers.values(), *self.beats.values()]:
            kill_group(proc)
            proc.stop()
        if self._gateway is not None:
            self._gateway.close()
        self.redis.kill()
        self.ledger.close()

    # ----- a campaign --------------------------------------------------------------------------

    def send(self, total: int) -> int:
        path = self.workdir / f"list-{time.monotonic_ns()}.csv"
        with path.open("w", encoding="utf-8") as fh:
            fh.write("name,mobile\n")
            base = 2000000 + 10000 * len(list(self.workdir.glob("list-*.csv")))
            for i in range(total):
                fh.write(f"P{i},+4670{base + i:07d}\n")
        sent = cli_json(
            "send", str(path), "--sender", "Shop", "--text", "Hi {name}", "--purpose", "service",
            env=self.env,
        )  # fmt: skip
        assert sent["counts"] == {"queued": total}, sent
        return int(sent["campaign"])

    def wait_accepted(self, count: int, timeout: float = 60) -> None:
        wait_for(
            lambda: self.gateway.stats()["accepted"] >= count,
            timeout,
            interval=0.1,
            what=f"{count} messages accepted at the gateway",
        )

    def settle(
        self,
        scenario: str,
        campaign: int,
        total: int,
        *,
        sent_at: float,
        fault_end: datetime | None,
        timeout: float,
        stats_before: dict[str, Any] | None = None,
    ) -> Figures:
        """Wait (bounded) for every message to be final; measure what happened either way."""
        deadline = time.monotonic() + timeout
        done = False
        while time.monotonic() < deadline:
            if self.ledger.campaign_done(campaign, total):
                done = True
                break
            time.sleep(0.5)
        waited = time.monotonic() - sent_at
        stats = self.gateway.stats()
        before = stats_before or {"polls": 0, "accepted": 0, "duplicates": 0}
        last = self.ledger.last_final_at(campaign)
        recovery = None
        if done and fault_end is not None and last is not None:
            recovery = max(0.0, (last - fault_end).total_seconds())
        elapsed = waited
        if done and last is not None:
            elapsed = waited - (datetime.now(UTC) - last).total_seconds()
        return Figures(
            scenario=scenario,
            total=total,
            counts=self.ledger.counts(campaign),
            duplicates=int(stats["duplicates"]) - int(before["duplicates"]),
            duplicate_refs=list(stats["duplicate_refs"])[:20],
            accepted=int(stats["accepted"]) - int(before["accepted"]),
            polls=int(stats["polls"]) - int(before["polls"]),
            polls_5xx=int(stats["dlr_5xx"]) - int(before.get("dlr_5xx", 0)),
            max_polls_per_ref=int(stats["max_polls_per_ref"]),
            recovery=recovery,
            elapsed=elapsed,
            done=done,
            diagnosis="" if done else self.ledger.diagnose(campaign),
        )

    def status(self, campaign: int) -> dict[str, Any]:
        return cli_json("status", str(campaign), env=self.env)


def now() -> datetime:
    return datetime.now(UTC)


@contextlib.contextmanager
def stack(workdir: Path, database_url: str, *, aof: bool = False) -> Iterator[Stack]:
    world = Stack(workdir, database_url, aof=aof)
    try:
        world.start()
        yield world
    finally:
        world.close()


def stop_group(proc: Proc) -> None:
    """SIGSTOP a whole process group: what a VM freeze or Ctrl-Z does to a worker."""
    proc.kill(signal.SIGSTOP)


def continue_group(proc: Proc) -> None:
    proc.kill(signal.SIGCONT)


def kill_group(proc: Proc) -> None:
    proc.kill(signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.popen.wait(10)
