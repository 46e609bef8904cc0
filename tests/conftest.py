"""Shared fixtures: real PostgreSQL and SQLite ledgers, the real Redis, the simulator over HTTP."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
import sqlalchemy as sa

from config import Settings, load_settings, reset_settings
from workers.database import dispose_engines, upgrade

PG_ADMIN = os.environ.get("SMS_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("SMS_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
TEST_KEY = "test-key-\u00e5-secret"  # a key with a non-ASCII letter, as real keys may have


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A PostgreSQL database of this test session's own, dropped at the end."""
    explicit = os.environ.get("SMS_TEST_DATABASE_URL")
    if explicit:
        upgrade(explicit)
        yield explicit
        return
    name = f"sms_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
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


def settings_env(settings: Settings) -> dict[str, str]:
    """The same settings as `SMS_*` variables, for child processes."""
    env = {
        "SMS_DATA_DIR": str(settings.data_dir),
        "SMS_GATEWAY_URL": settings.gateway_url,
        "SMS_GATEWAY_KEY": settings.gateway_key.get_secret_value(),
        "SMS_GATEWAY_TIMEOUT": str(settings.gateway_timeout),
        "SMS_SEND_RATE": str(settings.send_rate),
        "SMS_POLL_RATE": str(settings.poll_rate),
        "SMS_RETRY_BASE": str(settings.retry_base),
        "SMS_RETRY_MAX": str(settings.retry_max),
        "SMS_UNKNOWN_RECHECK": str(settings.unknown_recheck),
        "SMS_REPORT_GRACE": str(settings.report_grace),
        "SMS_POLL_BACKOFF": ",".join(str(s) for s in settings.poll_backoff),
        "SMS_BATCH_SIZE": str(settings.batch_size),
        "SMS_MAX_ATTEMPTS": str(settings.max_attempts),
        "SMS_VALIDITY": str(settings.validity),
        "SMS_SWEEP_INTERVAL": str(settings.sweep_interval),
        "SMS_SUBMIT_LEASE": str(settings.submit_lease),
    }
    if settings.database_url:
        env["SMS_DATABASE_URL"] = settings.database_url
    if settings.broker_url:
        env["SMS_BROKER_URL"] = settings.broker_url
    return env
