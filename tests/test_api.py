"""The HTTP API and the dashboard's routes, in-process over real ledgers (SQLite and
PostgreSQL) and the real Redis: every route, every error code, replays and tokens."""

from __future__ import annotations

import io
import logging
import re

import pytest
from fastapi.testclient import TestClient

from dispatcher.api import create_app
from dispatcher.reports import write_report
from dispatcher.tokens import create_token, list_tokens, revoke_token
from tests.conftest import REDIS_URL
from workers import notices
from workers.database import ensure_schema

LIST = (
    "name,mobile\nAda,+46701110001\nBo,123\nCy,+46701110002\nAda2,+46701110001\nZoë,+46701110003\n"
)
SEND = {"sender": "Shop", "text": "Hi {name}", "purpose": "service"}


@pytest.fixture
def api(db_url, make_settings, redis_client, monkeypatch):
    # Notices go to the test Redis: the Celery app reads the broker from the environment.
    monkeypatch.setenv("SMS_BROKER_URL", REDIS_URL)
    from workers.celery_app import app as celery_app

    monkeypatch.setattr(celery_app.conf, "broker_url", REDIS_URL)
    settings = make_settings(database_url=db_url)
    engine = ensure_schema(settings)
    app = create_app(settings)
    client = TestClient(app, raise_server_exceptions=False)
    writer = create_token(engine, "writer")
    reader = create_token(engine, "reader", read_only=True)
    client.headers["Authorization"] = f"Bearer {writer}"
    client.engine = engine
    client.settings = settings
    client.writer, client.reader = writer, reader
    return client


def upload(client: TestClient, data: dict | None = None, body: str = LIST, **kw):
    files = {"file": ("customers.csv", body.encode(), "text/csv")}
    return client.post("/v1/campaigns", data={**SEND, **(data or {})}, files=files, **kw)


def ours(caplog) -> str:
    """What the service logged (the test client's own request log is not the service's)."""
    return "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("httpx"))


def problem(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status and body["title"] and body["detail"]
    assert "Traceback" not in response.text
    return body


def test_health_and_readiness_need_no_token(api, make_settings):
    anonymous = TestClient(create_app(api.settings))
    assert anonymous.get("/healthz").json() == {"status": "ok"}
    assert anonymous.get("/readyz").json()["status"] == "ready"
    broken = make_settings(
        database_url=api.settings.database_url, broker_url="redis://127.0.0.1:1/0"
    )
    down = TestClient(create_app(broken)).get("/readyz")
    assert "broker" in problem(down, 503)["detail"]


def test_every_v1_route_needs_a_valid_bearer_token(api):
    anonymous = TestClient(create_app(api.settings))
    missing = anonymous.get("/v1/campaigns")
    assert "Bearer" in problem(missing, 401)["detail"]
    assert missing.headers["www-authenticate"] == "Bearer"
    forged = anonymous.get(
        "/v1/campaigns", headers={"Authorization": "Bearer sdt_000000000000_" + "x" * 43}
    )
    problem(forged, 401)
    for path in ("/v1/campaigns/1", "/v1/suppression", "/v1/schedules"):
        problem(anonymous.get(path), 401)


def test_upload_creates_the_campaign_send_would_and_replies_with_its_summary(api):
    preview = upload(api, {"dry_run": "true"})
    assert preview.status_code == 200
    dry = preview.json()
    assert dry["campaign"] is None and dry["state"] == "dry-run"
    assert dry["counts"] == {"queued": 3, "invalid": 1, "duplicate": 1}
    assert dry["ucs2_characters"] == ["ë"] and dry["sample"] == "Hi Ada"
    assert [p["line"] for p in dry["problems"]] == [3, 5]
    created = upload(api)
    assert created.status_code == 201
    body = created.json()
    assert body["state"] == "running" and body["counts"] == dry["counts"] and body["total"] == 5
    assert created.headers["location"] == f"/v1/campaigns/{body['campaign']}"
    status = api.get(f"/v1/campaigns/{body['campaign']}").json()
    assert status["name"] == "customers.csv" and status["total"] == 5 and status["final"] == 2


def test_json_recipients_with_every_send_option(api):
    reply = api.post(
        "/v1/campaigns",
        json={
            **SEND,
            "recipients": [
                {"mobile": "+46701110009", "name": "Al"},
                {"mobile": "0701110008", "name": "Bea"},
            ],
            "name": "reminders",
            "region": "se",
            "at": "2099-01-01T09:00",
            "tz": "Europe/Stockholm",
            "window": "09:00-20:00",
            "days": "MON-FRI",
            "validity": "24h",
        },
    )
    assert reply.status_code == 201, reply.text
    body = reply.json()
    assert body["state"] == "scheduled" and body["counts"] == {"queued": 2}
    status = api.get(f"/v1/campaigns/{body['campaign']}").json()
    assert status["name"] == "reminders" and status["send_after"].startswith("2099-01-01T08:00")


def test_same_idempotency_key_replays_the_first_reply_and_another_body_is_409(api):
    first = upload(api, headers={"Idempotency-Key": "order-17"})
    again = upload(api, headers={"Idempotency-Key": "order-17"})
    assert again.status_code == 201 and again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert len(api.get("/v1/campaigns").json()["items"]) == 1
    other = upload(api, body=LIST + "Dee,+46701110004\n", headers={"Idempotency-Key": "order-17"})
    assert "different request" in problem(other, 409)["detail"]
    # A key belongs to its token: another client's "order-17" is its own.
    third = create_token(api.engine, "third")
    own = upload(api, headers={"Idempotency-Key": "order-17", "Authorization": f"Bearer {third}"})
    assert own.status_code == 201 and own.json()["campaign"] != first.json()["campaign"]
    # Control POSTs replay too: a repeated pause is not a 409.
    cid = first.json()["campaign"]
    paused = api.post(f"/v1/campaigns/{cid}/pause", headers={"Idempotency-Key": "p1"})
    assert (
        api.post(f"/v1/campaigns/{cid}/pause", headers={"Idempotency-Key": "p1"}).json()
        == paused.json()
    )
    problem(upload(api, headers={"Idempotency-Key": "k" * 201}), 400)


def test_a_failed_request_does_not_use_up_its_key(api):
    bad = upload(api, {"sender": "x" * 40}, headers={"Idempotency-Key": "retry-me"})
    problem(bad, 422)
    assert upload(api, headers={"Idempotency-Key": "retry-me"}).status_code == 201


def test_bad_requests_get_the_clis_one_line_message(api, make_settings):
    assert (
        "sender"
        in problem(api.post("/v1/campaigns", json={"recipients": [{"mobile": "1"}]}), 422)["detail"]
    )
    problem(
        api.post(
            "/v1/campaigns", content=b"{not json", headers={"content-type": "application/json"}
        ),
        400,
    )
    problem(api.post("/v1/campaigns", content=b"x", headers={"content-type": "text/plain"}), 415)
    assert "empty" in problem(upload(api, body=""), 422)["detail"]
    assert "--validity" not in problem(upload(api, {"validity": "0s"}), 422)["detail"]
    assert "not an option" in problem(upload(api, {"colour": "red"}), 422)["detail"]
    problem(api.post("/v1/campaigns", data=SEND), 415)  # a form without a file
    no_file = api.post("/v1/campaigns", files={k: (None, v) for k, v in SEND.items()})
    assert "file" in problem(no_file, 422)["detail"]
    small = TestClient(
        create_app(make_settings(database_url=api.settings.database_url, api_max_upload=2048))
    )
    small.headers["Authorization"] = api.headers["Authorization"]
    assert "api_max_upload" in problem(upload(small, body=LIST * 100), 413)["detail"]
    problem(api.get("/v1/campaigns/424242"), 404)
    problem(api.get("/v1/campaigns/nope"), 422)
    problem(api.get("/v1/campaigns?cursor=abc"), 400)
    problem(api.get("/v1/no-such-route"), 404)


def test_campaign_list_is_newest_first_in_pages(api):
    ids = [upload(api).json()["campaign"] for _ in range(3)]
    first = api.get("/v1/campaigns?limit=2").json()
    assert [c["campaign"] for c in first["items"]] == ids[::-1][:2]
    second = api.get(f"/v1/campaigns?limit=2&cursor={first['next_cursor']}").json()
    assert [c["campaign"] for c in second["items"]] == [ids[0]] and second["next_cursor"] is None


def test_messages_are_paged_by_keyset_and_filtered_by_status(api):
    cid = upload(api).json()["campaign"]
    page1 = api.get(f"/v1/campaigns/{cid}/messages?limit=2").json()
    page2 = api.get(f"/v1/campaigns/{cid}/messages?limit=2&cursor={page1['next_cursor']}").json()
    page3 = api.get(f"/v1/campaigns/{cid}/messages?limit=2&cursor={page2['next_cursor']}").json()
    lines = [m["line"] for m in page1["items"] + page2["items"] + page3["items"]]
    assert lines == [2, 3, 4, 5, 6] and page3["next_cursor"] is None
    bad = api.get(f"/v1/campaigns/{cid}/messages?status=invalid&status=duplicate").json()["items"]
    assert [(m["line"], m["status"]) for m in bad] == [(3, "invalid"), (5, "duplicate")]
    assert (
        "not a message status"
        in problem(api.get(f"/v1/campaigns/{cid}/messages?status=lost"), 422)["detail"]
    )


def test_report_csv_is_the_file_report_writes(api):
    cid = upload(api).json()["campaign"]
    got = api.get(f"/v1/campaigns/{cid}/report.csv")
    assert got.status_code == 200 and got.headers["content-type"].startswith("text/csv")
    out = io.StringIO(newline="")
    write_report(api.engine, cid, out)
    assert got.content == out.getvalue().encode("utf-8-sig")  # as `report --out` writes it
    problem(api.get("/v1/campaigns/999/report.csv"), 404)


def test_pause_resume_cancel_change_the_ledger_and_the_halt_flags(api, redis_client):
    cid = upload(api).json()["campaign"]
    assert api.post(f"/v1/campaigns/{cid}/pause").json() == {"campaign": cid, "state": "paused"}
    assert notices.halt_reason(redis_client, cid) == "paused by operator"
    assert api.get(f"/v1/campaigns/{cid}").json()["reason"] == "paused by operator"
    assert (
        "only running or scheduled"
        in problem(api.post(f"/v1/campaigns/{cid}/pause"), 409)["detail"]
    )
    resumed = api.post(f"/v1/campaigns/{cid}/resume").json()
    assert resumed["state"] == "running" and notices.halt_reason(redis_client, cid) is None
    problem(api.post(f"/v1/campaigns/{cid}/resume"), 409)
    cancelled = api.post(f"/v1/campaigns/{cid}/cancel").json()
    assert cancelled == {"campaign": cid, "state": "cancelled", "not_sent": 3}
    assert notices.halt_reason(redis_client, cid) == "cancelled"
    problem(api.post(f"/v1/campaigns/{cid}/cancel"), 409)
    problem(api.post("/v1/campaigns/999/pause"), 404)


def test_read_only_token_reads_but_every_write_is_403(api):
    cid = upload(api).json()["campaign"]
    ro = {"Authorization": f"Bearer {api.reader}"}
    assert api.get(f"/v1/campaigns/{cid}", headers=ro).status_code == 200
    assert api.get("/v1/suppression", headers=ro).status_code == 200
    writes = [
        ("post", "/v1/campaigns"), ("post", f"/v1/campaigns/{cid}/pause"),
        ("post", f"/v1/campaigns/{cid}/cancel"), ("post", "/v1/suppression"),
        ("delete", "/v1/suppression/46701110001"), ("post", "/v1/schedules"),
        ("post", "/v1/schedules/x/run"), ("delete", "/v1/schedules/x"),
    ]  # fmt: skip
    for method, path in writes:
        assert "read-only" in problem(getattr(api, method)(path, headers=ro), 403)["detail"]


def test_a_token_revoked_mid_session_stops_working_at_once(api):
    assert api.get("/v1/campaigns").status_code == 200
    revoke_token(api.engine, "writer")
    problem(api.get("/v1/campaigns"), 401)
    assert [t["name"] for t in list_tokens(api.engine)] == ["reader"]


def test_opt_out_list_add_import_list_remove(api):
    added = api.post("/v1/suppression", json={"numbers": ["+46701110001", "0701110002"]})
    assert added.json() == {"added": 2}
    assert api.post("/v1/suppression", json={"numbers": ["46701110001"]}).json() == {"added": 0}
    assert "'12'" in problem(api.post("/v1/suppression", json={"numbers": ["12"]}), 422)["detail"]
    problem(api.post("/v1/suppression", json={"numbers": []}), 422)
    files = {"file": ("stop.csv", b"mobile\n+46701110003\n+46701110001\nnope\n", "text/csv")}
    imported = api.post("/v1/suppression/import", files=files).json()
    assert (imported["added"], imported["already"], imported["invalid"]) == (1, 1, 1)
    listed = api.get("/v1/suppression?limit=2").json()
    more = api.get(f"/v1/suppression?limit=2&cursor={listed['next_cursor']}").json()
    numbers = [n["mobile"] for n in listed["items"] + more["items"]]
    assert numbers == ["46701110001", "46701110002", "46701110003"]
    assert api.delete("/v1/suppression/+46701110002").json() == {"removed": 1}
    problem(api.delete("/v1/suppression/+46701110002"), 404)
    # An opted-out number in a list becomes suppressed.
    assert upload(api).json()["counts"]["suppressed"] == 2  # 01 and 03; 02 was removed


def test_schedules_the_same_operations_as_the_cli(api, tmp_path):
    lst = tmp_path / "tomorrow.csv"
    lst.write_text(LIST)
    body = {
        "name": "dental",
        "cron": "0 9 * * MON-FRI",
        "tz": "Europe/Stockholm",
        "list": str(lst),
        **SEND,
    }
    made = api.post("/v1/schedules", json=body)
    assert made.status_code == 201 and made.json()["next"]
    assert "exists" in problem(api.post("/v1/schedules", json=body), 409)["detail"]
    assert (
        "cron"
        in problem(
            api.post("/v1/schedules", json={**body, "name": "x", "cron": "99 * * * *"}), 422
        )["detail"]
    )
    files = {"file": ("up.csv", LIST.encode(), "text/csv")}
    form = {k: v for k, v in body.items() if k != "list"} | {"name": "uploaded"}
    assert api.post("/v1/schedules", data=form, files=files).status_code == 201
    assert [s["name"] for s in api.get("/v1/schedules").json()] == ["dental", "uploaded"]
    assert api.post("/v1/schedules/dental/pause").json()["paused"] is True
    assert api.post("/v1/schedules/dental/resume").json()["paused"] is False
    fired = api.post("/v1/schedules/uploaded/run").json()
    assert fired["state"] == "running" and fired["total"] == 5
    assert api.get("/v1/schedules/dental").json()["name"] == "dental"
    assert api.delete("/v1/schedules/dental").json() == {"removed": "dental"}
    problem(api.get("/v1/schedules/dental"), 404)
    problem(api.post("/v1/schedules/dental/run"), 404)


def test_an_unexpected_error_is_a_500_without_its_message_in_reply_or_log(api, monkeypatch, caplog):
    import dispatcher.browse

    def broken(*_a, **_k):
        raise RuntimeError("secret +46701110001 in a message")

    monkeypatch.setattr(dispatcher.browse, "campaign_page", broken)
    with caplog.at_level(logging.INFO, logger="sms"):
        reply = api.get("/v1/campaigns")
    body = problem(reply, 500)
    assert "46701110001" not in reply.text and "secret" not in body["detail"]
    logged = ours(caplog)
    assert "RuntimeError" in logged and "46701110001" not in logged


def test_logs_hold_no_tokens_numbers_or_texts(api, caplog):
    with caplog.at_level(logging.DEBUG):
        cid = upload(api, {"text": "Code QX77 for {name}"}).json()["campaign"]
        api.get(f"/v1/campaigns/{cid}/messages?status=queued")
        api.post("/v1/suppression", json={"numbers": ["+46701110005"]})
        api.delete("/v1/suppression/+46701110005")
        api.get("/v1/campaigns", headers={"Authorization": "Bearer sdt_bad"})
    logged = ours(caplog)
    assert "DELETE /v1/suppression/{number} 200" in logged
    for secret in (api.writer, "sdt_bad", "QX77", "4670111000", "Ada"):
        assert secret not in logged


# --- the dashboard's routes (the browser test drives them in Chromium) ------------------------


def signed_in(api, token: str) -> tuple[TestClient, str]:
    browser = TestClient(create_app(api.settings), raise_server_exceptions=False)
    page = browser.post("/signin", data={"token": token}, follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == "/campaigns"
    cookie = page.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and token not in cookie
    csrf = re.search(r'"X-CSRF-Token": "([0-9a-f]+)"', browser.get("/campaigns").text).group(1)
    return browser, csrf


def test_dashboard_sign_in_pages_and_csrf(api):
    cid = upload(api).json()["campaign"]
    anonymous = TestClient(create_app(api.settings))
    assert anonymous.get("/campaigns", follow_redirects=False).headers["location"] == "/signin"
    assert anonymous.post("/signin", data={"token": "wrong"}).status_code == 401
    browser, csrf = signed_in(api, api.writer)
    for path in ("/campaigns", "/campaigns/rows", f"/campaigns/{cid}", f"/campaigns/{cid}/live",
                 "/new", "/optouts", "/schedules", "/static/htmx.min.js"):  # fmt: skip
        assert browser.get(path).status_code == 200, path
    assert f'data-campaign="{cid}"' in browser.get("/campaigns/rows").text
    no_csrf = browser.post(f"/campaigns/{cid}/pause", headers={"HX-Request": "true"})
    assert no_csrf.status_code == 403 and "stale" in no_csrf.text
    assert api.get(f"/v1/campaigns/{cid}").json()["state"] == "running"
    paused = browser.post(
        f"/campaigns/{cid}/pause", headers={"HX-Request": "true", "X-CSRF-Token": csrf}
    )
    assert paused.status_code == 200 and 'data-state="paused"' in paused.text
    again = browser.post(
        f"/campaigns/{cid}/pause", headers={"HX-Request": "true", "X-CSRF-Token": csrf}
    )
    assert again.status_code == 409 and again.headers["hx-retarget"] == "#flash"
    assert (
        browser.get(f"/campaigns/{cid}/report.csv").content
        == api.get(f"/v1/campaigns/{cid}/report.csv").content
    )


def test_dashboard_preview_then_send(api):
    browser, csrf = signed_in(api, api.writer)
    files = {"file": ("list.csv", LIST.encode(), "text/csv")}
    preview = browser.post(
        "/new/preview", data=SEND, files=files, headers={"HX-Request": "true", "X-CSRF-Token": csrf}
    )
    assert preview.status_code == 200, preview.text
    assert 'id="preview-total">5<' in preview.text and "<code>ë</code>" in preview.text
    upload_id = re.search(r'name="upload" value="([^"]+)"', preview.text).group(1)
    sent = browser.post(
        "/new/send",
        data={**SEND, "upload": upload_id, "when": "now", "csrf": csrf},
        headers={"HX-Request": "true"},
    )
    assert sent.status_code == 204 and sent.headers["hx-redirect"].startswith("/campaigns/")
    cid = int(sent.headers["hx-redirect"].rsplit("/", 1)[1])
    assert api.get(f"/v1/campaigns/{cid}").json()["counts"]["queued"] == 3
    gone = browser.post(
        "/new/send",
        data={**SEND, "upload": upload_id, "csrf": csrf},
        headers={"HX-Request": "true"},
    )
    assert gone.status_code == 422 and "expired" in gone.text


def test_dashboard_read_only_and_revoked_sessions(api):
    cid = upload(api).json()["campaign"]
    browser, csrf = signed_in(api, api.reader)
    page = browser.get(f"/campaigns/{cid}").text
    assert re.search(r'id="pause"[^>]*disabled', page)
    denied = browser.post(
        f"/campaigns/{cid}/pause", headers={"HX-Request": "true", "X-CSRF-Token": csrf}
    )
    assert denied.status_code == 403 and "read-only" in denied.text
    revoke_token(api.engine, "reader")
    assert browser.get("/campaigns", follow_redirects=False).headers["location"] == "/signin"
    assert (
        browser.get("/campaigns/rows", headers={"HX-Request": "true"}).headers["hx-redirect"]
        == "/signin"
    )


def test_dashboard_opt_outs_and_schedules(api, tmp_path):
    browser, csrf = signed_in(api, api.writer)
    hx = {"HX-Request": "true", "X-CSRF-Token": csrf}
    added = browser.post("/optouts/add", data={"numbers": "+46701110001\n0701110002"}, headers=hx)
    assert "2 added" in added.text and 'data-mobile="46701110002"' in added.text
    removed = browser.post("/optouts/remove", data={"number": "+46701110002"}, headers=hx)
    assert "1 removed" in removed.text and "46701110002" not in removed.text
    lst = tmp_path / "l.csv"
    lst.write_text(LIST)
    body = {"name": "weekly", "cron": "0 9 * * MON", "tz": "UTC", "list": str(lst), **SEND}
    api.post("/v1/schedules", json=body)
    assert 'data-schedule="weekly"' in browser.get("/schedules").text
    paused = browser.post("/schedules/weekly/pause", headers=hx)
    assert "paused" in paused.text
    assert api.get("/v1/schedules/weekly").json()["paused"] is True


def test_openapi_lists_every_route(api):
    paths = set(TestClient(create_app(api.settings)).get("/openapi.json").json()["paths"])
    assert {
        "/healthz", "/readyz", "/v1/campaigns", "/v1/campaigns/{campaign_id}",
        "/v1/campaigns/{campaign_id}/messages", "/v1/campaigns/{campaign_id}/report.csv",
        "/v1/campaigns/{campaign_id}/pause", "/v1/campaigns/{campaign_id}/resume",
        "/v1/campaigns/{campaign_id}/cancel", "/v1/suppression", "/v1/suppression/import",
        "/v1/suppression/{number}", "/v1/schedules", "/v1/schedules/{name}",
        "/v1/schedules/{name}/pause", "/v1/schedules/{name}/resume", "/v1/schedules/{name}/run",
    } <= paths  # fmt: skip
