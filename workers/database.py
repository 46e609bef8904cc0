"""Engines for the ledger (SQLite or PostgreSQL) and the Alembic migrations that shape it."""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

import migrations
from config import Settings, UserError

MIGRATIONS_DIR = Path(migrations.__file__).parent
SQLITE_BUSY_MS = 30_000
# The ledger holds numbers and texts: its folder and files are the owner's alone.
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
_SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")

_engines: dict[str, sa.Engine] = {}
_lock = threading.Lock()


class SchemaError(UserError, RuntimeError):
    """The database is reachable but its schema is not the one this version needs."""


class DataDirError(UserError, RuntimeError):
    """The data folder or the ledger file cannot be made or used; one line with path and cause."""


def _cause(exc: OSError) -> str:
    return (exc.strerror or type(exc).__name__).lower()


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


def private_dir(path: Path) -> Path:
    """Create `path` (and missing parents) so that only its owner can enter it."""
    try:
        if path.exists() and not path.is_dir():
            raise DataDirError(f"{path} is not a folder (check SMS_DATA_DIR)")
        path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    except OSError as exc:
        raise DataDirError(f"cannot create the folder {path}: {_cause(exc)}") from None
    return path


def private_sqlite_file(url: str) -> None:
    """Create a SQLite ledger file readable by its owner only, before SQLite creates it.

    SQLite would follow the umask (world-readable by default); its WAL and shm files take the
    database file's mode, so they follow. A ledger an older version made readable is narrowed.
    """
    if not url.startswith("sqlite"):
        return
    name = sa.engine.make_url(url).database
    if not name or name == ":memory:" or name.startswith("file:"):
        return
    path = Path(name)
    try:
        _private_ledger(path)
    except OSError as exc:  # e.g. a folder we may not even look into
        raise DataDirError(f"cannot use the ledger {path}: {_cause(exc)}") from None


def _private_ledger(path: Path) -> None:
    if not path.parent.exists():
        private_dir(path.parent)
    if not path.parent.is_dir():
        raise DataDirError(f"{path.parent} is not a folder (check SMS_DATA_DIR)")
    if not path.exists():
        try:
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_EXCL, PRIVATE_FILE_MODE))
        except FileExistsError:
            pass  # another process made it first
        except OSError as exc:
            raise DataDirError(f"cannot create the ledger {path}: {_cause(exc)}") from None
    # SQLite would only say "unable to open database file", or fail at the first write (it
    # also needs to create the -wal and -shm files beside the ledger).
    for where in (path, path.parent):
        if not os.access(where, os.R_OK | os.W_OK):
            raise DataDirError(f"cannot use the ledger {path}: {where} is not writable")
    for candidate in [path, *(Path(f"{path}{suffix}") for suffix in _SQLITE_SIDE_FILES)]:
        try:
            info = candidate.stat()
        except FileNotFoundError:
            continue
        if info.st_uid == os.getuid() and info.st_mode & 0o077:
            candidate.chmod(PRIVATE_FILE_MODE)


def make_engine(url: str) -> sa.Engine:
    """A new engine for `url`, set up for several processes sharing the ledger."""
    if url.startswith("sqlite"):
        private_sqlite_file(url)
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
    private_sqlite_file(url)
    command.upgrade(alembic_config(url), revision)


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def current_revision(engine: sa.Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


@contextlib.contextmanager
def _migration_lock(url: str) -> Iterator[None]:
    """An exclusive lock beside a SQLite ledger file, held while it is migrated."""
    name = sa.engine.make_url(url).database
    if not name or name == ":memory:" or name.startswith("file:"):
        yield
        return
    lock = Path(f"{name}.migrate-lock")
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise DataDirError(f"cannot use the ledger {name}: {_cause(exc)}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def ensure_schema(settings: Settings) -> sa.Engine:
    """The engine, with the schema checked: a SQLite ledger is migrated on first use."""
    engine = get_engine(settings)
    current = current_revision(engine)
    if current == head_revision():
        return engine
    if engine.dialect.name == "sqlite":
        # Workers, beat and the CLI may all meet a new ledger at once: one migrates, the
        # others wait for it and then find the schema current ("duplicate column" otherwise).
        with _migration_lock(settings.sqlalchemy_url):
            if current_revision(engine) != head_revision():
                upgrade(settings.sqlalchemy_url)
        return engine
    if current is None:
        raise SchemaError("the database has no sms-dispatch tables; run: sms-dispatch db upgrade")
    raise SchemaError(f"the database schema is at {current}; run: sms-dispatch db upgrade")
