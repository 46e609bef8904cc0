"""Reminder batches from the producer's side: lanes chosen on `send`, `schedule add` and the
API; one reminder per booking across a schedule's firings; cost caps set and raised; the UCS-2
warning and `--gsm-safe`. Real ledgers, the real Redis, the CLI as a user runs it."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
import time_machine
from fastapi.testclient import TestClient

from dispatcher import control
from dispatcher.api import create_app
from dispatcher.campaigns import LoadRequest, load_campaign
from dispatcher.errors import OptionError
from dispatcher.reports import campaign_status
from dispatcher.schedules import add_schedule, describe, fire_due, schedule_options
from dispatcher.texts import gsm_safe
from dispatcher.tokens import create_token
from tests.conftest import REDIS_URL
from tests.processes import cli
from workers import campaign_moves
from workers.database import ensure_schema, get_engine
from workers.ledger import campaign_table, message_table

STOCKHOLM = ZoneInfo("Europe/Stockholm")
CURLY = "Hi {name}, it\u2019s your appointment \u2013 see you\u2026"  # ’ – …
CLI_ENV = {"SMS_GATEWAY_URL": "http://127.0.0.1:9", "SMS_GATEWAY_KEY": "k"}


@pytest.fixture
def ledger(db_url, make_settings):
    settings = make_settings(database_url=db_url, schedule_grace=3600)
    return settings, get_engine(settings)


def utc(*args):
    return datetime(*args, tzinfo=UTC)


def run_cli(tmp_path, *args):
    env = {"SMS_DATA_DIR": str(tmp_path / "data"), **CLI_ENV}
    return cli(*args, env=env, check=False, cwd=tmp_path)


def one_line_error(result, needle):
    assert result.returncode != 0 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert needle in lines[0], lines[0]


# --- priority --------------------------------------------------------------------------------


def test_priority_is_chosen_on_send_and_shown_by_status(tmp_path):
    (tmp_path / "list.csv").write_text("name,mobile\nAda,+46701110001\n", "utf-8")
    send = ("send", "list.csv", "--purpose", "service", "--sender", "Clinic", "--text", "Hi")
    plain = run_cli(tmp_path, *send, "--json")
    high = run_cli(tmp_path, *send, "--priority", "HIGH")
    assert plain.returncode == 0 and high.returncode == 0, plain.stderr + high.stderr
    assert json.loads(plain.stdout)["priority"] == "normal"
    assert "priority     high" in high.stdout
    listing = json.loads(run_cli(tmp_path, "status", "--json").stdout)
    assert [c["priority"] for c in listing] == ["high", "normal"]  # newest first
    shown = run_cli(tmp_path, "status", str(listing[0]["campaign"])).stdout
    assert "  priority high" in shown
    result = run_cli(tmp_path, *send, "--priority", "urgent")
    assert result.returncode == 2 and "urgent" in result.stderr  # click names the choices


def test_schedule_reminders_default_to_the_high_lane(ledger, tmp_path):
    settings, engine = ledger
    lst = tmp_path / "list.csv"
    lst.write_text("mobile,when\n+46701110001,2031-06-10 10:00\n", "utf-8")
    base = dict(cron="0 9 * * *", tz="Europe/Stockholm", list_path=lst, sender="Clinic",
                template="Reminder")  # fmt: skip
    assert add_schedule(engine, settings, name="r", **base)["priority"] == "high"
    low = add_schedule(engine, settings, name="n", priority="low", **base)
    assert low["priority"] == "low"
    with time_machine.travel(utc(2031, 6, 1, 7, 0, 30), tick=False):
        fired = {f.schedule: f for f in fire_due(settings, engine)}
    assert fired["r"].summary.priority == "high"
    statuses = {name: campaign_status(engine, f.summary.campaign) for name, f in fired.items()}
    assert statuses["r"].priority == "high" and statuses["n"].priority == "low"


# --- dedupe across firings -------------------------------------------------------------------


def messages(engine, cid):
    """Each dedupe key's first row in list order (a key listed twice keeps its first line)."""
    m = message_table
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(m.c.dedupe_key, m.c.status, m.c.last_error)
            .where(m.c.campaign_id == cid)
            .order_by(m.c.line.desc())
        ).all()
    return {r.dedupe_key: (r.status, r.last_error) for r in rows}


def test_a_list_reread_every_hour_reminds_each_booking_once(ledger, tmp_path):
    settings, engine = ledger
    lst = tmp_path / "bookings.csv"
    lst.write_text(
        "booking_id,mobile,appointment\n"
        "B1,+46701110001,2031-06-11 09:00\n"
        "B2,+46701110002,2031-06-11 09:30\n",
        "utf-8",
    )
    with time_machine.travel(utc(2031, 6, 10, 5, 30), tick=False):
        add_schedule(
            engine, settings, name="dental", cron="0 * * * *", tz="Europe/Stockholm",
            list_path=lst, sender="Clinic", template="Reminder: {appointment}",
            options=schedule_options(send_at_column="appointment", before="24h",
                                     dedupe_column="Booking_ID"),
        )  # fmt: skip
    assert describe(engine, "dental")["options"] == {
        "before": "24h", "dedupe_column": "booking_id", "send_at_column": "appointment"
    }  # fmt: skip
    with time_machine.travel(utc(2031, 6, 10, 6, 0, 30), tick=False):
        (first,) = fire_due(settings, engine)
    c1 = first.summary.campaign
    assert first.summary.counts == {"queued": 2}
    # The gateway refused B2: its booking was never reminded, so the next firing tries again.
    with engine.begin() as conn:
        conn.execute(
            sa.update(message_table)
            .where(message_table.c.campaign_id == c1, message_table.c.dedupe_key == "B2")
            .values(status="rejected")
        )
    # The booking system's export an hour later: B1 and B2 again, B3 new, B4 on the same number
    # as B1 (a second appointment), and B3 listed twice.
    lst.write_text(
        "booking_id,mobile,appointment\n"
        "B1,+46701110001,2031-06-11 09:00\n"
        "B2,+46701110002,2031-06-11 09:30\n"
        "B3,+46701110003,2031-06-11 10:00\n"
        "B4,+46701110001,2031-06-11 15:00\n"
        "B3,+46701110003,2031-06-11 10:00\n",
        "utf-8",
    )
    with time_machine.travel(utc(2031, 6, 10, 7, 0, 30), tick=False):
        (second,) = fire_due(settings, engine)
    c2 = second.summary.campaign
    assert second.summary.counts == {"queued": 3, "duplicate": 2}
    rows = messages(engine, c2)
    assert rows["B1"] == ("duplicate", f"already reminded in campaign {c1}")
    assert rows["B2"][0] == rows["B3"][0] == rows["B4"][0] == "queued"
    with engine.connect() as conn:
        again = conn.execute(
            sa.select(message_table.c.last_error).where(
                message_table.c.campaign_id == c2, message_table.c.line == 6
            )
        ).scalar_one()
    assert again == "booking_id 'B3' already in this list"
    # Nothing new an hour later: no campaign, no error on the schedule.
    with time_machine.travel(utc(2031, 6, 10, 8, 0, 30), tick=False):
        (third,) = fire_due(settings, engine)
    assert third.summary is None and third.error is None
    assert third.note.startswith("nothing new to send")
    state = describe(engine, "dental")
    assert state["last_error"] is None and state["last_campaign"] == c2
    with engine.connect() as conn:
        count = conn.execute(sa.select(sa.func.count()).select_from(campaign_table)).scalar()
    assert count == 2


def test_dedupe_on_send_keeps_one_row_per_key_and_an_empty_key_is_invalid(ledger, tmp_path):
    settings, engine = ledger
    lst = tmp_path / "list.csv"
    lst.write_text("id,mobile\nA,+46701110001\nA,+46701110002\n,+46701110003\n", "utf-8")
    request = LoadRequest(lst, "Clinic", "Hi", dedupe_column="id")
    summary = load_campaign(settings, engine, request)
    assert summary.counts == {"queued": 1, "invalid": 1, "duplicate": 1}
    assert [p["error"] for p in summary.problems] == ["id 'A' already in this list", "empty id"]


# --- cost caps -------------------------------------------------------------------------------


@pytest.fixture
def api(ledger, redis_client, monkeypatch):
    monkeypatch.setenv("SMS_BROKER_URL", REDIS_URL)
    from workers.celery_app import app as celery_app

    monkeypatch.setattr(celery_app.conf, "broker_url", REDIS_URL)
    settings, _ = ledger
    engine = ensure_schema(settings)
    client = TestClient(create_app(settings), raise_server_exceptions=False)
    client.token = create_token(engine, "writer")
    client.headers["Authorization"] = f"Bearer {client.token}"
    client.engine = engine
    client.settings = settings
    return client


def test_max_cost_is_set_by_send_and_raised_by_resume_through_the_api(api):
    body = {"sender": "Shop", "text": "Hi", "purpose": "service", "max_cost": "250.00",
            "priority": "low", "recipients": [{"mobile": "+46701110001"}]}  # fmt: skip
    created = api.post("/v1/campaigns", json=body)
    assert created.status_code == 201, created.text
    cid = created.json()["campaign"]
    status = api.get(f"/v1/campaigns/{cid}").json()
    assert (status["max_cost"], status["priority"]) == ("250.00", "low")
    api.post(f"/v1/campaigns/{cid}/pause")
    # What the campaign has already cost bounds the new cap from below.
    with api.engine.begin() as conn:
        conn.execute(sa.update(message_table).values(cost=Decimal("260")))
    low = api.post(f"/v1/campaigns/{cid}/resume", json={"max_cost": "255"})
    assert low.status_code == 422
    assert low.json()["detail"].startswith(f"max-cost: 255 is not above what campaign {cid} has")
    assert api.post(f"/v1/campaigns/{cid}/resume", json={"colour": 1}).status_code == 422
    resumed = api.post(f"/v1/campaigns/{cid}/resume", json={"max_cost": "400"})
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["state"] == "running"
    assert api.get(f"/v1/campaigns/{cid}").json()["max_cost"] == "400.00"
    bad = api.post("/v1/campaigns", json={**body, "max_cost": "lots"})
    assert bad.status_code == 422 and "max-cost" in bad.json()["detail"]


def test_max_cost_through_the_cli(tmp_path):
    (tmp_path / "list.csv").write_text("mobile\n+46701110001\n", "utf-8")
    sent = run_cli(tmp_path, "send", "list.csv", "--purpose", "service", "--sender", "Shop",
                   "--text", "Hi", "--max-cost", "250.00", "--json")  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    cid = str(json.loads(sent.stdout)["campaign"])
    assert "of at most 250.00" in run_cli(tmp_path, "status", cid).stdout
    one_line_error(run_cli(tmp_path, "resume", cid, "--max-cost", "400"), "is running, not paused")
    assert run_cli(tmp_path, "pause", cid).returncode == 0
    one_line_error(run_cli(tmp_path, "resume", cid, "--max-cost", "-5"), "--max-cost: '-5'")
    resumed = run_cli(tmp_path, "resume", cid, "--max-cost", "400")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(run_cli(tmp_path, "status", cid, "--json").stdout)["max_cost"] == "400.00"
    one_line_error(
        run_cli(tmp_path, "send", "list.csv", "--purpose", "service", "--sender", "Shop",
                "--text", "Hi", "--max-cost", "free"),
        "--max-cost: 'free' is not an amount",
    )  # fmt: skip


def test_parse_max_cost_refuses_what_is_not_a_positive_amount():
    assert control.parse_max_cost("250.00") == Decimal("250.00")
    assert control.parse_max_cost(None) is None
    for bad in ("0", "-1", "NaN", "Infinity", "1e9", "0.000001"):
        with pytest.raises(OptionError):
            control.parse_max_cost(bad)


# --- UCS-2 warning and --gsm-safe ------------------------------------------------------------


def test_gsm_safe_replaces_typographic_characters_and_counts_them():
    text, count = gsm_safe("\u201cIt\u2019s\u201d \u2013 ok\u2026\u00a0bye")
    assert (text, count) == ('"It\'s" - ok... bye', 6)
    assert gsm_safe("plain") == ("plain", 0)
    assert gsm_safe("Zo\u00eb \U0001f600") == ("Zo\u00eb \U0001f600", 0)  # no GSM-7 equivalent


def test_dry_run_warns_which_character_makes_texts_ucs2_and_what_it_costs(tmp_path):
    names = "".join(f"Person{i},+467011100{i:02d}\n" for i in range(10))
    (tmp_path / "list.csv").write_text("name,mobile\n" + names, "utf-8")
    long = CURLY + " " + "Please come ten minutes early and bring your card." * 2
    send = ("send", "list.csv", "--purpose", "service", "--sender", "Clinic", "--dry-run")
    dry = run_cli(tmp_path, *send, "--text", long)
    assert dry.returncode == 0, dry.stderr
    # 150-odd characters: 3 UCS-2 parts each instead of 1 GSM-7 part, at 0.05 a part.
    assert "segments     30  (estimated cost 1.50)" in dry.stdout
    assert (
        "warning: '–' (U+2013), '’' (U+2019), '…' (U+2026) make 10 text(s) UCS-2"
        " (70 characters a part, not 160): 1.00 more than as GSM-7"
    ) in dry.stdout  # a summary line; with --json it goes to stderr
    assert "--gsm-safe replaces '–', '’', '…' in the text" in dry.stdout
    safe = run_cli(tmp_path, *send, "--text", long, "--gsm-safe", "--json")
    data = json.loads(safe.stdout)
    assert data["gsm_safe_replaced"] == 3 and data["ucs2_characters"] == []
    assert (data["segments"], data["estimated_cost"]) == (10, "0.50")
    assert data["sample"].startswith("Hi Person0, it's your appointment - see you...")
    assert "--gsm-safe replaced 3 character(s) in the text" in safe.stderr
    assert "warning" not in safe.stderr


def test_the_api_and_the_dashboard_preview_show_the_ucs2_cost(api):
    body = {"sender": "Shop", "text": CURLY + " " + "x" * 100, "purpose": "service",
            "dry_run": True, "recipients": [{"mobile": "+46701110001", "name": "Ada"}]}  # fmt: skip
    dry = api.post("/v1/campaigns", json=body).json()
    assert dry["ucs2_characters"] == ["\u2013", "\u2019", "\u2026"]
    assert (dry["segments"], dry["ucs2_texts"], dry["ucs2_extra_cost"]) == (3, 1, "0.10")
    fixed = api.post("/v1/campaigns", json={**body, "gsm_safe": True}).json()
    assert (fixed["segments"], fixed["gsm_safe_replaced"], fixed["ucs2_extra_cost"]) == (
        1,
        3,
        "0.00",
    )
    # The dashboard's preview of the same list and text.
    page = TestClient(create_app(api.settings), raise_server_exceptions=False)
    signin = page.post("/signin", data={"token": api.token}, follow_redirects=False)
    assert signin.status_code == 303
    csrf = re.search(r'"X-CSRF-Token": "([0-9a-f]+)"', page.get("/campaigns").text).group(1)
    files = {"file": ("list.csv", b"name,mobile\nAda,+46701110001\n", "text/csv")}
    form = {k: v for k, v in body.items() if k not in ("dry_run", "recipients")}
    headers = {"HX-Request": "true", "X-CSRF-Token": csrf}
    preview = page.post("/new/preview", data=form, files=files, headers=headers)
    assert preview.status_code == 200, preview.text
    assert "1 text(s) go as UCS-2 because of <code>\u2013</code>" in preview.text
    assert "0.10 more than as GSM-7" in preview.text
    safe = page.post(
        "/new/preview", data={**form, "gsm_safe": "true"}, files=files, headers=headers
    )
    assert "3 character(s) replaced in the text" in safe.text
    assert 'id="preview-ucs2-cost"' not in safe.text
    assert 'name="gsm_safe" value="true"' in safe.text  # carried on to the send


def test_resume_without_a_cap_leaves_the_campaigns_cap_alone(ledger, tmp_path, redis_client):
    settings, engine = ledger
    lst = tmp_path / "list.csv"
    lst.write_text("mobile\n+46701110001\n", "utf-8")
    request = LoadRequest(lst, "Shop", "Hi", max_cost=Decimal("250.00"))
    cid = load_campaign(settings, engine, request).campaign
    campaign_moves.pause_running(engine, "paused by operator", cid)
    state, _ = control.resume_campaign(settings, engine, cid)
    assert (state, campaign_status(engine, cid).max_cost) == ("running", "250.00")


# --- schedule add with the new options, and bad input as one line ----------------------------


def test_schedule_add_keeps_its_send_options_and_bad_ones_are_one_line(tmp_path):
    (tmp_path / "b.csv").write_text("booking,mobile,at\nB1,+46701110001,2031-06-10 10:00\n")
    add = ("schedule", "add", "dental", "--cron", "0 * * * *", "--tz", "Europe/Stockholm",
           "--list", "b.csv", "--sender", "Clinic", "--text", "Reminder {at}")  # fmt: skip
    one_line_error(run_cli(tmp_path, *add, "--before", "24h"), "need --send-at-column")
    one_line_error(
        run_cli(tmp_path, *add, "--send-at-column", "when", "--before", "24h"),
        "--send-at-column 'when': the list has no such column (columns: booking, mobile, at)",
    )
    one_line_error(
        run_cli(tmp_path, *add, "--send-at-column", "at", "--before", "soon"),
        "--before 'soon' is not a duration",
    )
    more = ("--send-at-column", "AT", "--before", "1d", "--dedupe-column", "booking",
            "--max-cost", "50", "--gsm-safe", "--json")  # fmt: skip
    added = run_cli(tmp_path, *add, *more)
    assert added.returncode == 0, added.stderr
    data = json.loads(added.stdout)
    assert data["priority"] == "high"
    assert data["options"] == {"send_at_column": "at", "before": "1d", "dedupe_column": "booking",
                               "max_cost": "50", "gsm_safe": True}  # fmt: skip


def test_send_with_an_ambiguous_date_is_one_line_naming_the_fix(tmp_path):
    (tmp_path / "b.csv").write_text("mobile,at\n+46701110001,03/04/2031 10:00\n")
    send = ("send", "b.csv", "--purpose", "service", "--sender", "Clinic", "--text", "Hi")
    result = run_cli(tmp_path, *send, "--send-at-column", "at", "--before", "24h", "--dry-run")
    one_line_error(
        result,
        "line 2: --send-at-column at: '03/04/2031 10:00' could be 3 April or March 4;"
        " give --date-order dmy (day first) or mdy (month first)",
    )


def test_the_api_adds_a_schedule_with_a_lane_and_send_options(api, tmp_path):
    lst = tmp_path / "b.csv"
    lst.write_text("booking,mobile,at\nB1,+46701110001,2031-06-10 10:00\n")
    body = {"name": "dental", "cron": "0 * * * *", "tz": "Europe/Stockholm", "list": str(lst),
            "sender": "Clinic", "text": "Reminder {at}", "send_at_column": "at",
            "before": "24h", "dedupe_column": "booking", "priority": "normal"}  # fmt: skip
    added = api.post("/v1/schedules", json=body)
    assert added.status_code == 201, added.text
    assert added.json()["priority"] == "normal"
    assert added.json()["options"] == {"send_at_column": "at", "before": "24h",
                                       "dedupe_column": "booking"}  # fmt: skip
    bad = api.post("/v1/schedules", json={**body, "name": "other", "priority": "urgent"})
    assert bad.status_code == 422 and "priority" in bad.json()["detail"]
