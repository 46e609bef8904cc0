"""The Alembic migrations build exactly the schema the models describe, on both databases."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlmodel import SQLModel

from workers.database import current_revision, head_revision, make_engine
from workers.ledger import UTCDateTime  # also registers the tables


def test_migrated_schema_matches_the_models(db_url):
    engine = make_engine(db_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    engine.dispose()
    real = [d for d in diff if not _utc_wrapper_only(d)]
    assert real == []


def _utc_wrapper_only(change: object) -> bool:
    """The one known false alarm: a timezone-aware DateTime column in the database that the
    models declare as our UTCDateTime wrapper (the same column type; the wrapper only converts
    values). Any other type difference is a schema change a migration must make."""
    if not isinstance(change, list) or len(change) != 1 or change[0][0] != "modify_type":
        return False
    database_type, model_type = change[0][5], change[0][6]
    return (
        isinstance(model_type, UTCDateTime)
        and isinstance(database_type, sa.DateTime)
        and bool(database_type.timezone)
    )


def test_database_is_at_the_head_revision(db_url):
    engine = make_engine(db_url)
    assert current_revision(engine) == head_revision()
    with engine.connect() as conn:
        tables = set(sa.inspect(conn).get_table_names())
    engine.dispose()
    assert {"campaign", "message", "suppression", "schedule", "alembic_version"} <= tables


def test_only_the_utc_wrapper_is_forgiven_a_type_difference():
    known = [("modify_type", None, "message", "created_at", {}, sa.DateTime(True), UTCDateTime())]
    naive = [("modify_type", None, "message", "created_at", {}, sa.DateTime(), UTCDateTime())]
    other = [("modify_type", None, "message", "parts", {}, sa.Integer(), sa.String())]
    assert _utc_wrapper_only(known)
    assert not _utc_wrapper_only(naive) and not _utc_wrapper_only(other)


def test_processes_meeting_a_new_sqlite_ledger_at_once_migrate_it_once(tmp_path) -> None:
    # Workers, beat and the CLI started together on a new embedded ledger: without a lock two
    # of them ran the same migration and one failed with "duplicate column name".
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    data = str(tmp_path / "data")
    code = (
        "import sys; from config import load_settings; from workers.database import "
        "ensure_schema, current_revision, head_revision; "
        f"e = ensure_schema(load_settings(data_dir={data!r}, database_url={url!r})); "
        "sys.exit(0 if current_revision(e) == head_revision() else 3)"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
        for _ in range(6)
    ]
    results = [(p.wait(120), p.stderr.read() if p.stderr else "") for p in procs]
    assert all(rc == 0 for rc, _ in results), [err.strip().splitlines()[-1:] for _, err in results]
