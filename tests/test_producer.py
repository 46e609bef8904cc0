"""The producer on both ledgers: every row accounted for, atomic loads, reports, the CLI."""

from __future__ import annotations

import csv
import io
import json
import time
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from dispatcher.campaigns import LoadRequest, load_campaign, new_refs
from dispatcher.recipients import RecipientListError
from dispatcher.reports import (
    all_statuses,
    campaign_status,
    escape_cell,
    statuses,
    write_report,
)
from dispatcher.suppression import add_numbers
from dispatcher.texts import TemplateError, TextError
from tests.processes import cli
from workers import campaign_moves, claims, ledger_reads
from workers.database import get_engine
from workers.ledger import CampaignState, campaign_table, message_table
from workers.windows import ZONES_NOTE

# `send` has no default purpose: every campaign says what it is for.
SEND = ("send", "--purpose", "service")

LIST = """name;mobile;note
Anna;070-123 45 67;first
Bo;+46 70 123 45 67;same person as Anna
Cai;0046 70 765 43 21;third
Dan;12345;too short
Eva;+44 7911 123456;UK
Fia;+46 73 555 00 11;opted out
;070-222 33 44;no name
"""


@pytest.fixture
def ledger(db_url, make_settings):
    settings = make_settings(database_url=db_url)
    return settings, get_engine(settings)


def write(tmp_path, text=LIST, name="list.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_every_row_becomes_a_message_with_a_status(ledger, tmp_path):
    settings, engine = ledger
    add_numbers(engine, ["46735550011"])
    summary = load_campaign(
        settings, engine, LoadRequest(write(tmp_path), "Clinic", "Hi {name}, {note}")
    )
    assert summary.state == CampaignState.RUNNING
    assert summary.total == 7
    assert summary.counts == {
        "queued": 3,
        "invalid": 2,
        "duplicate": 1,
        "suppressed": 1,
    }
    assert sum(summary.counts.values()) == summary.total
    status = campaign_status(engine, summary.campaign)
    assert status.total == 7 and status.counts["queued"] == 3 and not status.done
    m = message_table
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(m.c.line, m.c.mobile, m.c.status, m.c.last_error, m.c.text).order_by(m.c.line)
        ).all()
    by_line = {r.line: r for r in rows}
    assert by_line[2].mobile == "46701234567" and by_line[2].text == "Hi Anna, first"
    assert by_line[3].status == "duplicate"
    assert by_line[5].status == "invalid"
    assert by_line[8].status == "invalid" and "name" in by_line[8].last_error
    assert by_line[6].mobile == "447911123456"


def test_summary_counts_segments_and_estimates_cost(ledger, tmp_path):
    settings, engine = ledger
    text = "x" * 161  # two GSM parts for each of the 4 sendable rows (no placeholders)
    lst = write(tmp_path, "mobile\n0701234567\n0701234568\n0701234569\n0701234560\n")
    summary = load_campaign(settings, engine, LoadRequest(lst, "Shop", text))
    assert summary.segments == 8
    assert str(summary.estimated_cost) == "0.40"


def test_dry_run_writes_nothing_and_gives_the_same_summary(ledger, tmp_path):
    settings, engine = ledger
    lst = write(tmp_path)
    dry = load_campaign(settings, engine, LoadRequest(lst, "Clinic", "Hi {name}"), dry_run=True)
    assert dry.campaign is None
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(campaign_table)).scalar() == 0
    real = load_campaign(settings, engine, LoadRequest(lst, "Clinic", "Hi {name}"))
    assert real.counts == dry.counts and real.segments == dry.segments


def test_failure_midway_leaves_no_runnable_campaign(ledger, tmp_path):
    settings, engine = ledger
    lines = ["mobile"] + [f"+4670{1000000 + i}" for i in range(12_000)]
    lst = write(tmp_path, "\n".join(lines) + "\n")
    with pytest.raises(RuntimeError, match="injected"):
        load_campaign(settings, engine, LoadRequest(lst, "Shop", "Hi"), fail_after=6000)
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(campaign_table)).scalar() == 0
        assert conn.execute(sa.select(sa.func.count()).select_from(message_table)).scalar() == 0
    assert claims.due_batches(engine, 1, limit=10) == []


def test_unknown_placeholder_is_an_error_before_anything_is_written(ledger, tmp_path):
    settings, engine = ledger
    with pytest.raises(TemplateError) as err:
        load_campaign(settings, engine, LoadRequest(write(tmp_path), "Clinic", "Hi {nmae}"))
    assert "nmae" in str(err.value) and "name" in str(err.value)
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(campaign_table)).scalar() == 0


def test_too_long_text_and_bad_sender_are_refused(ledger, tmp_path):
    settings, engine = ledger
    with pytest.raises(TextError):
        load_campaign(settings, engine, LoadRequest(write(tmp_path), "Clinic", "x" * 1200))
    with pytest.raises(TextError):
        load_campaign(settings, engine, LoadRequest(write(tmp_path), "Clinic Nord AB", "Hi"))


def test_missing_file_is_a_clear_error(ledger, tmp_path):
    settings, engine = ledger
    with pytest.raises(RecipientListError):
        load_campaign(settings, engine, LoadRequest(tmp_path / "nope.csv", "Shop", "Hi"))


def test_report_lists_every_row_and_escapes_formulas(ledger, tmp_path):
    settings, engine = ledger
    text = 'name,mobile\n=HYPERLINK("x"),+46701234567\n@SUM(1),0701234568\nOk,-1\n'
    summary = load_campaign(settings, engine, LoadRequest(write(tmp_path, text), "S", "Hi {name}"))
    out = io.StringIO()
    assert write_report(engine, summary.campaign, out) == 3
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [r["line"] for r in rows] == ["2", "3", "4"]
    assert rows[0]["mobile_as_given"] == "'+46701234567"
    assert rows[0]["mobile"] == "46701234567" and rows[0]["status"] == "queued"
    assert rows[2]["mobile_as_given"] == "'-1" and rows[2]["status"] == "invalid"
    assert all(not cell.startswith(("=", "+", "-", "@")) for r in rows for cell in r.values())


def test_listing_of_campaigns_is_each_ones_status_read_in_a_few_statements(ledger, tmp_path):
    settings, engine = ledger
    m, c = message_table, campaign_table
    lst = write(tmp_path, LIST)
    finished = load_campaign(settings, engine, LoadRequest(lst, "Shop", "Hi {name}")).campaign
    running = load_campaign(settings, engine, LoadRequest(lst, "Shop", "Hi")).campaign
    # A window that is shut now: its messages wait for it (and one is noted as left out of
    # some of its zones, as the planner notes such numbers).
    soon = datetime.now(UTC) + timedelta(hours=2)
    window = f"{soon:%H}:00-{soon + timedelta(hours=1):%H}:00"
    held = LoadRequest(lst, "Shop", "Hi", window=window, tz="UTC")
    waiting = load_campaign(settings, engine, held).campaign
    paused = load_campaign(settings, engine, LoadRequest(lst, "Shop", "Hi")).campaign
    with engine.begin() as conn:
        conn.execute(
            sa.update(m)
            .where(m.c.campaign_id == finished, m.c.status == "queued")
            .values(status="delivered", cost=sa.literal(0.05))
        )
        conn.execute(sa.update(c).where(c.c.id == finished).values(state="completed"))
        conn.execute(
            sa.update(m)
            .where(m.c.campaign_id == running, m.c.line == 2)
            .values(status="accepted", cost=sa.literal(0.07))
        )
        first = conn.execute(
            sa.select(sa.func.min(m.c.id)).where(m.c.campaign_id == waiting, m.c.status == "queued")
        ).scalar_one()
        conn.execute(
            sa.update(m).where(m.c.id == first).values(last_error=f"{ZONES_NOTE}: in 1 of 2")
        )
    campaign_moves.pause_running(engine, "by hand", paused)
    ledger_reads.fold_tallies(engine, min_rows=0)  # folded and unfolded tallies read the same

    one_by_one = [campaign_status(engine, cid) for cid in (paused, waiting, running, finished)]
    assert one_by_one[1].waiting_for_window == 5 and one_by_one[1].partial_zones == 1
    assert one_by_one[3].cost == "0.20" and one_by_one[2].cost == "0.07"
    selects = []

    def count(conn, cursor, statement, *args):
        if statement.lstrip().upper().startswith("SELECT"):
            selects.append(statement)

    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        listed = all_statuses(engine)
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)
    assert listed == one_by_one
    # The campaigns, their tallies, and the window counts of those still waiting: not a few
    # statements for each campaign.
    assert len(selects) <= 4, selects
    assert statuses(engine, [waiting, finished]) == [one_by_one[1], one_by_one[3]]
    assert statuses(engine, []) == []


@pytest.mark.parametrize(
    ("value", "shown"),
    [("=1+1", "'=1+1"), ("+46", "'+46"), ("-2", "'-2"), ("@x", "'@x"), ("ok", "ok"), (None, "")],
)
def test_formula_cells_are_escaped(value, shown):
    assert escape_cell(value) == shown


def test_refs_are_short_url_safe_and_unique():
    refs = new_refs(100_000)
    assert len(set(refs)) == len(refs)
    assert all(len(r) == 16 and r.isalnum() and r.islower() for r in refs[:1000])
    # Made together, they share their clock prefix (neighbours in the unique index) and
    # differ in their 11 random characters, every one of the 32 letters and digits used.
    assert {r[:5] for r in refs} == {refs[0][:5]}
    assert len({r[5:] for r in refs}) == len(refs)
    assert set("".join(r[5:] for r in refs[:1000])) == set("abcdefghijklmnopqrstuvwxyz234567")
    time.sleep(0.02)
    assert new_refs(1)[0][:5] != refs[0][:5]  # the next 10 ms step: another prefix


# --- the CLI, as a user runs it -------------------------------------------------------------


def run_cli(tmp_path, *args, env=None):
    # A gateway is configured (never called): `send` refuses to start without one.
    gateway = {"SMS_GATEWAY_URL": "http://127.0.0.1:9", "SMS_GATEWAY_KEY": "unused"}
    full_env = {"SMS_DATA_DIR": str(tmp_path / "data"), **gateway, **(env or {})}
    return cli(*args, env=full_env, check=False, cwd=tmp_path)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ([*SEND, "missing.csv", "--sender", "S", "--text", "Hi"], "missing.csv"),
        ([*SEND, "list.csv", "--sender", "Way too long sender", "--text", "Hi"], "sender"),
        ([*SEND, "list.csv", "--sender", "S", "--text", "Hi {nope}"], "nope"),
        ([*SEND, "list.csv", "--sender", "S", "--text", "x" * 1200], "parts"),
        ([*SEND, "list.csv", "--sender", "S"], "--text"),
        ([*SEND, "empty.csv", "--sender", "S", "--text", "Hi"], "empty"),
        ([*SEND, "nocol.csv", "--sender", "S", "--text", "Hi"], "--column"),
        (["status", "999"], "999"),
        (["report", "999"], "999"),
        (["pause", "999"], "999"),
        ([*SEND, "list.csv", "--sender", "S", "--text", "Hi", "--at", "yesterday"], "--at"),
        ([*SEND, "list.csv", "--sender", "S", "--text", "Hi", "--at", "2020-01-01T09:00"], "past"),
    ],
)
def test_bad_input_is_one_line_and_a_nonzero_exit(tmp_path, args, needle):
    write(tmp_path)
    write(tmp_path, "", name="empty.csv")
    write(tmp_path, "name,city\nA,B\n", name="nocol.csv")
    result = run_cli(tmp_path, *args)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert needle.lower() in lines[0].lower()


def test_bad_setting_is_one_line(tmp_path):
    result = run_cli(tmp_path, "campaigns", env={"SMS_SEND_RATE": "fast"})
    assert result.returncode != 0
    assert result.stderr.strip().startswith("sms-dispatch: SMS_SEND_RATE:")


def test_send_status_report_suppress_through_the_cli(tmp_path):
    write(tmp_path)
    added = run_cli(tmp_path, "suppress", "add", "+46 73 555 00 11")
    assert added.returncode == 0, added.stderr
    assert run_cli(tmp_path, "suppress", "list").stdout.split() == ["46735550011"]
    sent = run_cli(
        tmp_path, *SEND, "list.csv", "--sender", "Clinic", "--text", "Hi {name}", "--json"
    )
    assert sent.returncode == 0, sent.stderr
    summary = json.loads(sent.stdout)
    assert summary["state"] == "running" and summary["total"] == 7
    assert summary["counts"] == {"queued": 3, "invalid": 2, "duplicate": 1, "suppressed": 1}
    assert "sending starts when" in sent.stderr
    status = json.loads(run_cli(tmp_path, "status", str(summary["campaign"]), "--json").stdout)
    assert set(status) >= {"campaign", "name", "state", "reason", "total", "counts", "final",
                           "cost", "done"}  # fmt: skip
    assert status["final"] == 4 and status["done"] is False
    listing = json.loads(run_cli(tmp_path, "campaigns", "--json").stdout)
    assert [c["campaign"] for c in listing] == [summary["campaign"]]
    out = tmp_path / "r.csv"
    report = run_cli(tmp_path, "report", str(summary["campaign"]), "--out", str(out))
    assert report.returncode == 0 and len(out.read_text().splitlines()) == 8
    paused = run_cli(tmp_path, "pause", str(summary["campaign"]))
    assert paused.returncode == 0
    status = json.loads(run_cli(tmp_path, "status", str(summary["campaign"]), "--json").stdout)
    assert (status["state"], status["reason"]) == ("paused", "paused by operator")
    cancelled = run_cli(tmp_path, "cancel", str(summary["campaign"]))
    assert "3 messages will not be sent" in cancelled.stdout
    removed = run_cli(tmp_path, "suppress", "remove", "0735550011")
    assert "1 removed" in removed.stdout


def test_dry_run_through_the_cli_creates_nothing(tmp_path):
    write(tmp_path)
    dry = run_cli(
        tmp_path, *SEND, "list.csv", "--sender", "C", "--text", "Hi", "--dry-run", "--json"
    )
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["campaign"] is None
    assert json.loads(run_cli(tmp_path, "campaigns", "--json").stdout) == []
