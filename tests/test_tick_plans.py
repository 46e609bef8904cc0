"""The ticks' statements on PostgreSQL stay bounded when the planner's statistics are stale.

A ledger of millions is analysed rarely (autovacuum waits for a tenth of the table to change),
so right after a big campaign went out the planner still believes almost nothing waits at the
gateway. The statements each tick runs are run here under EXPLAIN ANALYZE in that state.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from dispatcher.campaigns import LoadRequest, load_campaign
from tests.conftest import _clean
from workers import campaign_moves, claims
from workers.database import dispose_engines, get_engine
from workers.ledger import message_table, utcnow


def plans_of(engine: sa.Engine) -> tuple[list[dict[str, Any]], Any]:
    """Collect EXPLAIN ANALYZE of every statement run inside a transaction, then undo it."""
    plans: list[dict[str, Any]] = []

    def explain(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: Any):
        if not conn.in_transaction() or not statement.lstrip().upper().startswith(
            ("SELECT", "UPDATE")
        ):
            return
        cursor.execute("SAVEPOINT plan")
        cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, params)
        plans.append({"sql": statement, "plan": cursor.fetchone()[0][0]["Plan"]})
        cursor.execute("ROLLBACK TO SAVEPOINT plan")

    return plans, explain


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


@pytest.fixture
def stale(pg_url, make_settings, tmp_path: Path) -> Iterator[sa.Engine]:
    """1,000 messages analysed while queued, then all at the gateway and due for a look-up."""
    _clean(pg_url)
    settings = make_settings(database_url=pg_url)
    engine = get_engine(settings)
    lines = ["name;mobile"] + [f"N{i};+4670{2000000 + i:07d}" for i in range(1000)]
    (tmp_path / "list.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    load_campaign(settings, engine, LoadRequest(tmp_path / "list.csv", "Shop", "Hi {name}"))
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE message SET (autovacuum_enabled = false)"))
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("ANALYZE message"))
            conn.execute(
                sa.update(message_table).values(
                    status="accepted", next_poll_at=utcnow() - timedelta(minutes=1)
                )
            )
        yield engine
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text("ALTER TABLE message RESET (autovacuum_enabled)"))
        dispose_engines()


def test_look_up_lease_reads_each_due_row_once_with_stale_statistics(stale):
    plans, explain = plans_of(stale)
    sa.event.listen(stale, "before_cursor_execute", explain)
    try:
        leased = claims.claim_lookups(stale, limit=50, lease=60)
    finally:
        sa.event.remove(stale, "before_cursor_execute", explain)
    assert len(leased) == 50
    for p in plans:
        for node in nodes(p["plan"]):
            # A subquery that locks rows, run again for every row at the gateway, is the plan
            # that took minutes on a big ledger.
            assert node["Actual Loops"] <= 1 or node["Node Type"] not in ("LockRows", "Sort"), p
        # The first due look-ups come from the partial index in time order: no sort of all.
        if "FOR UPDATE" in p["sql"] and "next_poll_at" in p["sql"]:
            kinds = {n["Node Type"] for n in nodes(p["plan"])}
            assert "Sort" not in kinds, p
            assert any(n.get("Index Name") == "ix_message_poll_due" for n in nodes(p["plan"]))


def test_deadline_sweep_reads_only_waiting_rows_that_have_a_deadline(stale):
    with stale.begin() as conn:
        # Back to waiting (the statistics still say so), none with a deadline.
        conn.execute(sa.update(message_table).values(status="queued", next_poll_at=None))
    plans, explain = plans_of(stale)
    sa.event.listen(stale, "before_cursor_execute", explain)
    try:
        assert campaign_moves.skip_past_deadline(stale) == 0
    finally:
        sa.event.remove(stale, "before_cursor_execute", explain)
    (update,) = [p for p in plans if p["sql"].lstrip().upper().startswith("UPDATE")]
    # Not one row of the 1,000 waiting ones is visited.
    assert sum(n.get("Actual Rows", 0) for n in nodes(update["plan"])) == 0
    assert any(n.get("Index Name") == "ix_message_queued_deadline" for n in nodes(update["plan"]))
