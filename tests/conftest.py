"""Shared fixtures: real PostgreSQL and SQLite ledgers, the real Redis, the simulator over HTTP."""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import psycopg
import pytest
import redis
import sqlalchemy as sa

from config import Settings, load_settings, reset_settings
from workers.database import dispose_engines, upgrade

PG_ADMIN = os.environ.get("SMS_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
# pytest-xdist runs the suite in two processes (gw0, gw1): each flushes a Redis database of its
# own, so one never wipes what the other is using.
_XDIST_INDEX = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
_REDIS_BASE = os.environ.get("SMS_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
_REDIS_PREFIX, _, _REDIS_DB = _REDIS_BASE.rpartition("/")
if not _REDIS_DB.isdigit():  # no database number in the URL: 15, as by default
    _REDIS_PREFIX, _REDIS_DB = _REDIS_BASE.rstrip("/"), "15"
REDIS_URL = f"{_REDIS_PREFIX}/{(int(_REDIS_DB) - _XDIST_INDEX) % 16}"
TEST_KEY = "test-key-\u00e5-secret"  # a key with a non-ASCII letter, as real keys may have
# Under CI a missing service fails the run: a CI that passes by skipping proves nothing.
IN_CI = os.environ.get("CI", "").lower() in ("true", "1")


def unavailable(service: str, exc: BaseException) -> NoReturn:
    """Skip the test, in one line, because `service` is not reachable (under CI=true: fail)."""
    detail = " ".join(str(exc).split()) or type(exc).__name__
    reason = f"{service} not reachable ({detail[:160]})"
    if IN_CI:
        pytest.fail(f"{reason}; CI needs it", pytrace=False)
    pytest.skip(reason)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Tests that start worker groups, beat, `run` or a browser (markers e2e and chaos): one
    # xdist process runs them one after another, so two stacks never compete for the two
    # cores and their timings stay fair.
    for item in items:
        if item.get_closest_marker("e2e") or item.get_closest_marker("chaos"):
            item.add_marker(pytest.mark.xdist_group("processes"))


@pytest.fixture
def figure(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Records a measured figure (a recovery time, a count) for the run's closing summary.

    Printing from a test is lost under pytest-xdist; a report's user properties travel back
    to the controller, which prints every figure, passed test or failed, at the end.
    """

    def record(line: str) -> None:
        request.node.user_properties.append(("figure", line))

    return record


def pytest_terminal_summary(terminalreporter: Any) -> None:
    lines = [
        value
        for reports in terminalreporter.stats.values()
        for report in reports
        if getattr(report, "when", None) == "call"
        for key, value in getattr(report, "user_properties", ())
        if key == "figure"
    ]
    if lines:
        terminalreporter.section("figures measured")
        for line in lines:
            terminalreporter.write_line(line)


@functools.cache
def _redis_problem() -> BaseException | None:
    """Why the test Redis cannot be used, or None; asked once a session."""
    try:
        with redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3) as client:
            client.ping()
    except redis.RedisError as exc:
        return exc
    return None


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A PostgreSQL database of this test session's own, dropped at the end."""
    explicit = os.environ.get("SMS_TEST_DATABASE_URL")
    if explicit:
        try:
            upgrade(explicit)
        except sa.exc.OperationalError as exc:
            unavailable("PostgreSQL (SMS_TEST_DATABASE_URL)", exc.orig or exc)
        yield explicit
        return
    name = f"sms_test_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        unavailable(f"PostgreSQL at {PG_ADMIN.rsplit('@', 1)[-1]}", exc)
    url = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + "/" + name
    upgrade(url)
    yield url
    dispose_engines()
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _clean(url: str) -> None:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        for table in ("message", "campaign", "schedule", "suppression"):
            conn.execute(sa.text(f"DELETE FROM {table}"))
        for table in ("api_token", "idempotency_key"):
            conn.execute(sa.text(f"DELETE FROM {table}"))
        conn.execute(sa.text("DELETE FROM outbox"))  # webhook events (issue 12)
        conn.execute(sa.text("DELETE FROM campaign_tally"))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A clean ledger, on SQLite and again on PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'ledger.db'}"
        upgrade(url)
        yield url
    else:
        url = request.getfixturevalue("pg_url")
        _clean(url)
        yield url
    dispose_engines()


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    """The machine's Redis (a test database), flushed before and after each test."""
    problem = _redis_problem()
    if problem is not None:
        unavailable(f"Redis at {REDIS_URL}", problem)
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def sim() -> Iterator[Any]:
    """The simulator over real HTTP on a free port, fast lifecycle, no faults."""
    from simulator.config import SimulatorConfig
    from simulator.server import SimulatorThread

    config = SimulatorConfig(port=0, key=TEST_KEY, pending=0.2, sending=0.3, seed=1)
    with SimulatorThread(config) as thread:
        yield thread


@pytest.fixture
def make_settings(tmp_path: Path) -> Any:
    """Settings for a test: data under tmp_path, the test Redis, fast timings."""
    reset_settings()

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "data_dir": tmp_path / "data",
            "broker_url": REDIS_URL,
            "gateway_key": TEST_KEY,
            "gateway_timeout": 2.0,
            "send_rate": 1000,
            "poll_rate": 1000,
            "retry_base": 0.2,
            "retry_max": 0.5,
            "unknown_recheck": 0.2,
            "report_grace": 2.0,
            "poll_backoff": [0.3, 0.5, 1.0],
        }
        values.update(overrides)
        return load_settings(**values)

    yield build
    reset_settings()


@pytest.fixture
def setup(db_url, sim, redis_client, make_settings):
    """Returns a factory: (settings overrides) -> a worker Runtime against the simulator."""
    from workers.runtime import Runtime

    runtimes: list[Runtime] = []

    def build(**overrides: Any) -> Runtime:
        values = {"database_url": db_url, "gateway_url": sim.url, **overrides}
        rt = Runtime.build(make_settings(**values))
        runtimes.append(rt)
        return rt

    yield build
    for rt in runtimes:
        rt.close()
