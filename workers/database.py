"""Engines for the ledger (SQLite or PostgreSQL) and the Alembic migrations that shape it."""

from __future__ import annotations

import threading
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

import migrations
from config import Settings

MIGRATIONS_DIR = Path(migrations.__file__).parent
SQLITE_BUSY_MS = 30_000

_engines: dict[str, sa.Engine] = {}
_lock = threading.Lock()


class SchemaError(RuntimeError):
    """The database is reachable but its schema is not the one this version needs."""


def _sqlite_pragmas(dbapi_conn: object, _record: object) -> None:
    cursor = dbapi_conn.cursor()  # type: ignore[attr-defined]
    # WAL lets the CLI read while workers write; the busy timeout lets several processes
    # queue for the write lock instead of failing at once.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_begin(conn: sa.Connection) -> None:
    # BEGIN IMMEDIATE takes the write lock up front, so two claimers never both read then
    # fail to upgrade their lock (SQLite's deadlock-by-upgrade).
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(url: str) -> sa.Engine:
    """A new engine for `url`, set up for several processes sharing the ledger."""
    if url.startswith("sqlite"):
        path = sa.engine.make_url(url).database
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(
            url,
            connect_args={"timeout": SQLITE_BUSY_MS / 1000, "isolation_level": None},
            pool_size=8,
            max_overflow=8,
        )
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        sa.event.listen(engine, "begin", _sqlite_begin)
        return engine
    return sa.create_engine(url, pool_size=8, max_overflow=8, pool_pre_ping=True)


def get_engine(settings: Settings) -> sa.Engine:
    """The process's engine for the configured ledger (one per URL, created once)."""
    url = settings.sqlalchemy_url
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = make_engine(url)
        return engine


def dispose_engines() -> None:
    """Close every pooled connection (after a fork, and in tests)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Apply pending migrations."""
    command.upgrade(alembic_config(url), revision)


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def current_revision(engine: sa.Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def ensure_schema(settings: Settings) -> sa.Engine:
    """The engine, with the schema checked: a SQLite ledger is migrated on first use."""
    engine = get_engine(settings)
    current = current_revision(engine)
    if current == head_revision():
        return engine
    if engine.dialect.name == "sqlite":
        upgrade(settings.sqlalchemy_url)
        return engine
    if current is None:
        raise SchemaError("the database has no sms-dispatch tables; run: sms-dispatch db upgrade")
    raise SchemaError(f"the database schema is at {current}; run: sms-dispatch db upgrade")
