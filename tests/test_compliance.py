"""Compliance: opt-outs with provenance, stop replies, opt-outs that stop a running campaign,
purpose and consent, retention that keeps totals, and erasure that leaves the number nowhere."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from dispatcher.campaigns import LoadRequest, load_campaign
from dispatcher.consent import ConsentError, has_consent
from dispatcher.erasure import forget
from dispatcher.reports import campaign_status
from dispatcher.suppression import (
    STOP_WORDS,
    OptOut,
    SuppressionError,
    add_opt_outs,
    is_stop_reply,
    list_opt_outs,
    read_replies,
)
from tests.processes import base_env, cli
from workers import ledger_reads
from workers.database import get_engine
from workers.ledger import CampaignState, campaign_table, message_table
from workers.retention import sweep_retention

C = campaign_table
M = message_table
ZELDA = "46735559876"  # the person who asks to be forgotten
LIST = f"""name;mobile;consent
Anna;+46 70 111 22 01;yes
Bo;070-111 22 02;Ja
Cecilia;0701112203;TRUE
Zelda;+{ZELDA};1
Dan;0701112205;x
Eva;0701112206;2024-03-01
Fia;0701112207;no
Gun;0701112208;
Hans;0701112209;maybe
Ivar;0701112210;2024-13-45
"""
CLI_ENV = {"SMS_GATEWAY_URL": "http://127.0.0.1:9", "SMS_GATEWAY_KEY": "k"}


def write(tmp_path: Path, text: str = LIST, name: str = "list.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def ledger(db_url, make_settings):
    settings = make_settings(database_url=db_url, erasure_secret="test-erasure-secret")
    return settings, get_engine(settings)


def load(settings, engine, path: Path, **kw) -> int:
    summary = load_campaign(settings, engine, LoadRequest(path, "Shop", "Hi {name}", **kw))
    assert summary.campaign is not None
    return summary.campaign


def statuses(engine, campaign_id: int) -> dict[str, str]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(M.c.raw_mobile, M.c.status).where(M.c.campaign_id == campaign_id)
        ).all()
    return {raw: status for raw, status in rows}


def run_cli(tmp_path, *args, env=None):
    full_env = {"SMS_DATA_DIR": str(tmp_path / "data"), **CLI_ENV, **(env or {})}
    return cli(*args, env=full_env, check=False, cwd=tmp_path)


# --- opt-outs with provenance ---------------------------------------------------------------


def test_opt_outs_record_when_where_from_and_why(tmp_path):
    added = run_cli(tmp_path, "suppress", "add", "0701112201", "--reason", "asked by phone")
    assert added.returncode == 0, added.stderr
    write(tmp_path, "0701112202\n+46 70 111 22 03\nnot a number\n", "plain.txt")
    plain = run_cli(tmp_path, "suppress", "import", "plain.txt")
    assert "2 added, 0 already there, 1 invalid skipped" in plain.stdout, plain.stderr
    write(
        tmp_path,
        "number,date,reason\n0701112204,2024-05-01,complained\n0701112201,2023-01-01,dup\n",
        "crm.csv",
    )
    crm = run_cli(tmp_path, "suppress", "import", "crm.csv")
    assert "1 added, 1 already there" in crm.stdout, crm.stderr
    listing = json.loads(run_cli(tmp_path, "suppress", "list", "--json").stdout)
    by_number = {e["mobile"]: e for e in listing}
    assert by_number["46701112201"]["source"] == "cli"
    assert by_number["46701112201"]["reason"] == "asked by phone"  # the first record stays
    assert by_number["46701112202"]["source"] == "import:plain.txt"
    assert by_number["46701112204"]["source"] == "import:crm.csv"
    assert by_number["46701112204"]["reason"] == "complained"
    assert by_number["46701112204"]["created_at"].startswith("2024-05-01")
    plain_list = run_cli(tmp_path, "suppress", "list").stdout.split()
    assert plain_list == ["46701112201", "46701112202", "46701112203", "46701112204"]


def test_an_export_with_a_bad_date_is_one_line_and_imports_nothing(tmp_path):
    write(tmp_path, "number;date\n0701112204;2024-05-01\n0701112205;yesterday\n", "bad.csv")
    result = run_cli(tmp_path, "suppress", "import", "bad.csv")
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1 and "line 3" in result.stderr
    assert "'yesterday' is not a date" in result.stderr
    assert run_cli(tmp_path, "suppress", "list").stdout == ""


# --- stop replies ---------------------------------------------------------------------------


@pytest.mark.parametrize("word", sorted(STOP_WORDS))
def test_every_stop_word_is_recognised_in_any_case_with_punctuation(word):
    for text in (
        word,
        word.lower(),
        word.capitalize(),
        f"  {word}!",
        f'"{word.lower()}."',
        f"*{word}*\n",
    ):
        assert is_stop_reply(text), text


@pytest.mark.parametrize("text", ["STOP please", "Vad kostar det?", "", "stopped", "s t o p"])
def test_other_replies_are_not_understood(text):
    assert not is_stop_reply(text)


def test_reply_import_opts_out_stop_replies_and_lists_the_rest(tmp_path):
    rows = ["from,message,received"]
    words = sorted(STOP_WORDS)
    for i, word in enumerate(words):
        rows.append(f"+4670222{i:04d},{word.lower()}!,2025-01-0{1 + i % 9}T10:00:00+01:00")
    rows += ["+46702229998,Vad kostar det?,2025-01-02 09:00", "+46702229999,STOP please,"]
    write(tmp_path, "\n".join(rows) + "\n", "replies.csv")
    result = run_cli(tmp_path, "suppress", "import-replies", "replies.csv")
    assert result.returncode == 0, result.stderr
    assert f"{len(words)} stop replies recognised: {len(words)} opted out" in result.stdout
    assert "2 replies not understood" in result.stdout
    assert "'Vad kostar det?'" in result.stdout and "'STOP please'" in result.stdout
    listing = json.loads(run_cli(tmp_path, "suppress", "list", "--json").stdout)
    assert len(listing) == len(words)
    assert {e["source"] for e in listing} == {"reply"}
    first = next(e for e in listing if e["mobile"] == "46702220000")
    assert first["created_at"] == "2025-01-01T09:00:00+00:00"  # the reply's time, as UTC


def test_replies_without_a_text_column_are_one_line(tmp_path):
    write(tmp_path, "mobile,when\n0701112201,2025-01-01\n", "odd.csv")
    with pytest.raises(SuppressionError, match="--text-column"):
        read_replies(tmp_path / "odd.csv", region="SE", tz="UTC")


# --- an opt-out while a campaign runs -------------------------------------------------------


def test_opt_out_during_a_running_campaign_suppresses_its_waiting_messages(ledger, tmp_path):
    settings, engine = ledger
    first = load(settings, engine, write(tmp_path))
    second = load(settings, engine, write(tmp_path, LIST, "again.csv"))
    # One of Bo's messages was already handed to the gateway: it is left to finish.
    with engine.begin() as conn:
        conn.execute(
            sa.update(M)
            .where(M.c.campaign_id == first, M.c.mobile == "46701112202")
            .values(status="accepted")
        )
    done = add_opt_outs(engine, [OptOut("46701112202"), OptOut("46701112203")], "api")
    assert (done.added, done.stopped) == (2, 3)
    assert statuses(engine, first)["070-111 22 02"] == "accepted"
    assert statuses(engine, first)["0701112203"] == "suppressed"
    assert statuses(engine, second)["070-111 22 02"] == "suppressed"
    assert statuses(engine, second)["0701112203"] == "suppressed"
    counts = ledger_reads.status_counts(engine, second)
    assert counts["suppressed"] == 2 and sum(counts.values()) == 10
    # Nothing of the suppressed ones can be claimed any more.
    with engine.connect() as conn:
        left = conn.execute(
            sa.select(sa.func.count()).where(
                M.c.mobile.in_(["46701112202", "46701112203"]), M.c.status == "queued"
            )
        ).scalar_one()
    assert left == 0


def test_suppress_add_says_how_many_waiting_messages_it_stopped(tmp_path):
    write(tmp_path)
    sent = run_cli(tmp_path, "send", "list.csv", "--sender", "S", "--text", "Hi",
                   "--purpose", "service", "--json")  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    added = run_cli(tmp_path, "suppress", "add", "0701112205")
    assert "1 added to the opt-out list; 1 waiting message(s) will not be sent" in added.stdout
    campaign = json.loads(sent.stdout)["campaign"]
    status = json.loads(run_cli(tmp_path, "status", str(campaign), "--json").stdout)
    assert status["counts"]["suppressed"] == 1


# --- purpose and consent --------------------------------------------------------------------


@pytest.mark.parametrize("cell", ["yes", "YES", " ja ", "true", "1", "x", "X", "2024-03-01",
                                  "2024-03-01T10:00", "01.03.2024", "3/1/2024"])  # fmt: skip
def test_yes_values_and_dates_are_consent(cell):
    assert has_consent(cell)


@pytest.mark.parametrize("cell", ["", "no", "nej", "0", "false", "maybe", "2024-13-45", None])
def test_anything_else_is_no_consent(cell):
    assert not has_consent(cell)


def test_send_without_a_purpose_is_refused_in_one_line(tmp_path):
    write(tmp_path)
    result = run_cli(tmp_path, "send", "list.csv", "--sender", "S", "--text", "Hi")
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1 and "--purpose" in result.stderr
    assert "Traceback" not in result.stderr
    assert json.loads(run_cli(tmp_path, "campaigns", "--json").stdout) == []


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--purpose", "marketing"], "--consent-column"),
        (["--purpose", "marketing", "--consent-column", "optin"], "no column 'optin'"),
        (["--purpose", "sales"], "--purpose"),
    ],
)
def test_marketing_needs_a_consent_column_the_list_has(tmp_path, extra, needle):
    write(tmp_path)
    result = run_cli(tmp_path, "send", "list.csv", "--sender", "S", "--text", "Hi", *extra)
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1 and needle in result.stderr, result.stderr


def test_marketing_sends_only_to_rows_that_consented(tmp_path):
    write(tmp_path)
    sent = run_cli(tmp_path, "send", "list.csv", "--sender", "S", "--text", "Hi {name}",
                   "--purpose", "marketing", "--consent-column", "Consent", "--json")  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    summary = json.loads(sent.stdout)
    assert summary["counts"] == {"queued": 6, "no_consent": 4}
    status = json.loads(run_cli(tmp_path, "status", str(summary["campaign"]), "--json").stdout)
    assert status["purpose"] == "marketing"
    assert status["counts"]["no_consent"] == 4 and status["final"] == 4
    text = run_cli(tmp_path, "status", str(summary["campaign"])).stdout
    assert "no_consent" in text
    report = run_cli(tmp_path, "report", str(summary["campaign"])).stdout
    assert report.count(",no_consent,") == 4


def test_service_campaigns_ignore_consent_and_schedules_default_to_service(tmp_path):
    write(tmp_path)
    sent = run_cli(tmp_path, "send", "list.csv", "--sender", "S", "--text", "Hi",
                   "--purpose", "service", "--json")  # fmt: skip
    assert json.loads(sent.stdout)["counts"] == {"queued": 10}
    added = run_cli(tmp_path, "schedule", "add", "daily", "--cron", "0 9 * * *", "--tz", "UTC",
                    "--list", "list.csv", "--sender", "S", "--text", "Hi", "--json")  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["purpose"] == "service"
    refused = run_cli(tmp_path, "schedule", "add", "promo", "--cron", "0 9 * * *", "--tz", "UTC",
                      "--list", "list.csv", "--sender", "S", "--text", "Hi",
                      "--purpose", "marketing")  # fmt: skip
    assert refused.returncode != 0 and "--consent-column" in refused.stderr


def test_a_scheduled_marketing_campaign_applies_consent_at_each_firing(ledger, tmp_path):
    from dispatcher.schedules import add_schedule, fire_now

    settings, engine = ledger
    add_schedule(engine, settings, name="promo", cron="0 9 * * *", tz="UTC",
                 list_path=write(tmp_path), sender="Shop", template="Hi {name}",
                 purpose="marketing", consent_column="consent")  # fmt: skip
    fired = fire_now(settings, engine, "promo")
    assert fired.summary is not None, fired.error
    assert fired.summary.counts == {"queued": 6, "no_consent": 4}
    with pytest.raises(ConsentError):
        load(settings, engine, write(tmp_path), purpose="marketing")


# --- retention ------------------------------------------------------------------------------


def _finish(engine, campaign_id: int, when: datetime) -> None:
    """Every message delivered (or as it was, if final) at `when`; the campaign completed."""
    with engine.begin() as conn:
        conn.execute(
            sa.update(M)
            .where(M.c.campaign_id == campaign_id, M.c.status == "queued")
            .values(status="delivered", cost=0.05, final_at=when, accepted_at=when, attempts=1)
        )
        conn.execute(sa.update(M).where(M.c.campaign_id == campaign_id).values(final_at=when))
        conn.execute(
            sa.update(C)
            .where(C.c.id == campaign_id)
            .values(state=CampaignState.COMPLETED, finished_at=when)
        )


def test_retention_blanks_old_numbers_and_texts_and_keeps_every_total(ledger, tmp_path):
    settings, engine = ledger
    old = load(settings, engine, write(tmp_path), purpose="marketing", consent_column="consent")
    recent = load(settings, engine, write(tmp_path, LIST, "recent.csv"))
    running = load(settings, engine, write(tmp_path, LIST, "running.csv"))
    now = datetime.now(UTC)
    _finish(engine, old, now - timedelta(days=91))
    _finish(engine, recent, now - timedelta(days=89))
    before = campaign_status(engine, old)
    report = sweep_retention(engine, settings)
    assert report.rows == 10 and report.campaigns == [old]
    after = campaign_status(engine, old)
    for key in ("total", "counts", "final", "cost", "done", "state"):
        assert getattr(after, key) == getattr(before, key), key
    assert after.cost == "0.30"
    assert after.personal_data_removed_at is not None
    assert after.personal_data_removed_at[:10] == now.date().isoformat()
    with engine.connect() as conn:
        rows = conn.execute(sa.select(M).where(M.c.campaign_id == old)).all()
        assert all(r.mobile is None and r.raw_mobile == "" and r.text is None for r in rows)
        assert all(r.final_at is not None and r.status for r in rows)
        kept = conn.execute(
            sa.select(sa.func.count()).where(
                M.c.campaign_id.in_([recent, running]), M.c.mobile.is_not(None)
            )
        ).scalar_one()
    assert kept == 20  # newer than the retention, or not sent yet: untouched
    assert campaign_status(engine, recent).personal_data_removed_at is None
    assert sweep_retention(engine, settings).rows == 0  # a second night finds nothing


def test_a_cleared_campaigns_report_says_when_personal_data_was_removed(tmp_path):
    write(tmp_path)
    sent = json.loads(run_cli(tmp_path, "send", "list.csv", "--sender", "S", "--text", "Hi",
                              "--purpose", "service", "--json").stdout)  # fmt: skip
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'data' / 'ledger.db'}")
    _finish(engine, sent["campaign"], datetime.now(UTC) - timedelta(days=100))
    engine.dispose()
    swept = subprocess.run(
        [sys.executable, "-c", "from config import get_settings; from workers.database import "
         "ensure_schema; from workers.retention import sweep_retention; s = get_settings(); "
         "print(sweep_retention(ensure_schema(s), s).rows)"],
        env=base_env({"SMS_DATA_DIR": str(tmp_path / "data"), **CLI_ENV}),
        cwd=tmp_path, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert swept.stdout.strip() == "10"
    today = datetime.now(UTC).date().isoformat()
    status = run_cli(tmp_path, "status", str(sent["campaign"])).stdout
    assert f"personal data (numbers, texts) removed on {today}" in status
    report = run_cli(tmp_path, "report", str(sent["campaign"]))
    assert f"was removed on {today}" in report.stderr
    assert report.stdout.count(",delivered,") == 10 and "0701112201" not in report.stdout


# --- erasure --------------------------------------------------------------------------------


def _ledger_bytes(db_path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in db_path.parent.glob(db_path.name + "*"))


def test_forget_leaves_the_number_nowhere_in_the_sqlite_file_and_still_suppresses(tmp_path):
    write(tmp_path)
    send = ("send", "list.csv", "--sender", "S", "--text", "Hi {name}", "--purpose", "service")
    first = run_cli(tmp_path, *send, "--json")
    assert first.returncode == 0, first.stderr
    db = tmp_path / "data" / "ledger.db"
    engine = sa.create_engine(f"sqlite:///{db}")
    _finish(engine, json.loads(first.stdout)["campaign"], datetime.now(UTC))  # delivered
    engine.dispose()
    add = run_cli(tmp_path, "suppress", "add", ZELDA, "--reason", "asked")
    assert add.returncode == 0, add.stderr
    second = run_cli(tmp_path, *send, "--json")
    assert json.loads(second.stdout)["counts"]["suppressed"] == 1
    assert ZELDA.encode() in _ledger_bytes(db) and b"Hi Zelda" in _ledger_bytes(db)
    result = run_cli(tmp_path, "forget", f"+{ZELDA}")
    assert result.returncode == 0, result.stderr
    assert "2 message(s) in campaign(s) 1, 2: number and text removed" in result.stdout
    assert "opt-out in clear replaced by a keyed hash" in result.stdout
    data = _ledger_bytes(db)
    assert ZELDA.encode() not in data
    assert ZELDA[2:].encode() not in data  # nor the national digits
    assert b"Zelda" not in data  # nor the list row's text
    assert run_cli(tmp_path, "suppress", "list").stdout.split() == []
    listing = json.loads(run_cli(tmp_path, "suppress", "list", "--json").stdout)
    assert listing == [{"mobile": None, "erased": True, "created_at": listing[0]["created_at"],
                        "source": "erasure", "reason": "erased on request"}]  # fmt: skip
    again = json.loads(run_cli(tmp_path, "send", "list.csv", "--sender", "S", "--text", "Hi",
                               "--purpose", "service", "--json").stdout)  # fmt: skip
    assert again["counts"] == {"queued": 9, "suppressed": 1}
    assert ZELDA.encode() not in _ledger_bytes(db)
    assert (tmp_path / "data" / "erasure.key").stat().st_mode & 0o077 == 0


def test_forget_leaves_the_number_nowhere_in_a_database_dump(pg_url, make_settings, tmp_path):
    from tests.conftest import _clean

    _clean(pg_url)
    settings = make_settings(database_url=pg_url, erasure_secret="s3cret")
    engine = get_engine(settings)
    first = load(settings, engine, write(tmp_path))
    _finish(engine, first, datetime.now(UTC) - timedelta(hours=1))
    running = load(settings, engine, write(tmp_path, LIST, "again.csv"))
    add_opt_outs(engine, [OptOut(ZELDA, reason="asked")], "cli")
    done = forget(settings, engine, ZELDA)
    assert (done.messages, sorted(done.campaigns)) == (2, [first, running])
    assert done.opt_out_in_clear and done.hashed
    dsn = pg_url.replace("postgresql+psycopg://", "postgresql://")
    dump = subprocess.run(["pg_dump", dsn], capture_output=True, text=True, check=True).stdout
    assert "suppression" in dump and "Anna" in dump
    assert ZELDA not in dump and ZELDA[2:] not in dump and "Zelda" not in dump
    later = load(settings, engine, write(tmp_path, LIST, "later.csv"))
    # Still suppressed, and the new row keeps no number: only the hash matched it.
    assert statuses(engine, later)[""] == "suppressed"
    assert f"+{ZELDA}" not in statuses(engine, later)
    assert forget(settings, engine, ZELDA).hashed is False  # already erased: said so
    # Without the secret the hashes cannot be checked: loading refuses rather than send.
    other = make_settings(database_url=pg_url)
    with pytest.raises(SuppressionError, match="SMS_ERASURE_SECRET"):
        load(other, engine, write(tmp_path, LIST, "nosecret.csv"))
    with pytest.raises(SuppressionError, match="SMS_ERASURE_SECRET"):
        forget(other, engine, "46701112201")
    assert [e["erased"] for e in list_opt_outs(engine)] == [True]


# --- the HTTP API, Redis and logs -----------------------------------------------------------


def test_delete_person_erases_through_the_api(
    db_url, make_settings, redis_client, tmp_path, caplog
):
    from fastapi.testclient import TestClient

    from dispatcher.api import create_app
    from dispatcher.tokens import create_token

    settings = make_settings(database_url=db_url, erasure_secret="api-secret")
    engine = get_engine(settings)
    campaign = load(settings, engine, write(tmp_path))
    caplog.set_level(logging.INFO)
    client = TestClient(create_app(settings), raise_server_exceptions=False)
    client.headers["Authorization"] = f"Bearer {create_token(engine, 'writer')}"
    added = client.post("/v1/suppression", json={"numbers": ["0701112201"]})
    assert added.status_code == 200, added.text
    assert list_opt_outs(engine)[0]["source"] == "api"
    erased = client.delete(f"/v1/people/+{ZELDA}")
    assert erased.status_code == 200, erased.text
    assert erased.json()["messages"] == 1 and erased.json()["stopped"] == 1
    assert ZELDA not in json.dumps(statuses(engine, campaign))
    bad = client.delete("/v1/people/not-a-number")
    assert bad.status_code == 422 and "not-a-number" in bad.json()["detail"]
    # The server's logs (its access log names the route) never hold the number in the path.
    server = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("sms"))
    assert "DELETE /v1/people/{number} 200" in server
    assert ZELDA not in server and "0701112201" not in server


def test_no_numbers_or_texts_stay_in_redis_or_logs_and_a_late_opt_out_stops_a_send(
    pg_url, sim, redis_client, make_settings, tmp_path
):
    from tests.conftest import REDIS_URL, _clean
    from tests.processes import celery_group, cli_json, wait_for

    _clean(pg_url)
    settings = make_settings(database_url=pg_url, broker_url=REDIS_URL, gateway_url=sim.url,
                             send_rate=8, batch_size=20, sweep_interval=2.0)  # fmt: skip
    env = settings.as_env()
    path = tmp_path / "list.csv"
    path.write_text("name,mobile\n" + "".join(f"P{i},+4670{3000000 + i:07d}\n" for i in range(200)))
    last = "46703000199"
    with celery_group(env, tmp_path / "logs") as procs:
        sent = cli_json("send", str(path), "--sender", "Shop", "--text", "Code QX88 for {name}",
                        "--purpose", "service", env=env)  # fmt: skip
        cid = sent["campaign"]
        # 200 messages at 8/s: the last one is still waiting long after the first are sent.
        wait_for(lambda: sim.stats()["accepted"] >= 5, timeout=60, what="sending underway")
        out = subprocess.run(
            [sys.executable, "-m", "dispatcher", "suppress", "add", last],
            env=base_env(env), capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert "1 waiting message(s) will not be sent" in out.stdout

        def done():
            status = cli_json("status", str(cid), env=env)
            return status if status["done"] and status["state"] == "completed" else None

        status = wait_for(done, timeout=180, what="campaign done")
        logs = "".join(p.output() for p in procs.values())
    assert status["counts"]["suppressed"] == 1 and status["total"] == 200
    with get_engine(settings).connect() as conn:
        attempts = conn.execute(sa.select(M.c.attempts).where(M.c.mobile == last)).scalar_one()
    assert attempts == 0  # never handed to the gateway
    assert "sms.send_batch" in logs  # the logs are real and cover the sending
    assert "4670300" not in logs and "QX88" not in logs
    found = []
    for key in redis_client.scan_iter(count=1000):
        kind = redis_client.type(key).decode()
        if kind == "string":
            values = [redis_client.get(key) or b""]
        elif kind == "list":
            values = redis_client.lrange(key, 0, -1)
        elif kind == "hash":
            values = [k + v for k, v in redis_client.hgetall(key).items()]
        elif kind == "set":
            values = list(redis_client.smembers(key))
        elif kind == "zset":
            values = [m for m, _ in redis_client.zrange(key, 0, -1, withscores=True)]
        else:
            values = []
        blob = key + b"".join(values)
        if b"4670300" in blob or b"QX88" in blob:
            found.append(key)
    assert found == []
