"""`/v1/campaigns`: create (upload or JSON), list, status, messages, report, pause/resume/cancel."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from config import Settings
from dispatcher import browse, control
from dispatcher.api import idempotent
from dispatcher.api.controls import add_control_routes
from dispatcher.api.deps import EngineDep, ReaderDep, SettingsDep, WriterDep
from dispatcher.api.problems import Problem, json_object
from dispatcher.api.uploads import Upload, discard, read_upload, uploads_dir
from dispatcher.reports import campaign_status, report_csv, report_rows
from workers import ledger_reads

router = APIRouter(prefix="/v1/campaigns", tags=["campaigns"])

# The options of `send`, by their API names; each is a string as typed on the command line.
SEND_OPTIONS = ("sender", "text", "name", "region", "column", "at", "tz", "window", "days",
                "validity", "purpose", "consent_column",
                # lanes, budgets, per-row times, dedupe keys, GSM-safe texts (issue 13)
                "priority", "max_cost", "send_at_column", "before", "after", "date_order",
                "dedupe_column", "gsm_safe")  # fmt: skip
TRUE = {"1", "true", "yes", "on"}

CREATE_DOC = {
    "requestBody": {
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "sender", "text"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        **{k: {"type": "string"} for k in SEND_OPTIONS},
                        "dry_run": {"type": "boolean"},
                    },
                }
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["recipients", "sender", "text"],
                    "properties": {
                        "recipients": {"type": "array", "items": {"type": "object"}},
                        **{k: {"type": "string"} for k in SEND_OPTIONS},
                        "dry_run": {"type": "boolean"},
                    },
                }
            },
        },
        "required": True,
    }
}


def _options(values: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(values) - set(SEND_OPTIONS) - {"dry_run", "recipients", "file"})
    if unknown:
        raise Problem(422, f"{unknown[0]}: not an option of send")
    out: dict[str, Any] = {}
    for key in SEND_OPTIONS:
        value = values.get(key)
        if value is None or value == "":
            continue
        if not isinstance(value, str | int | float):
            raise Problem(422, f"{key}: must be a string")
        out[key] = str(value)
    for key in ("sender", "text"):
        if key not in out:
            raise Problem(422, f"{key}: required")
    return out


def _dry_run(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value or "").strip().lower() in TRUE


def _write_recipients(settings: Settings, recipients: Any) -> Path:
    """JSON recipients as a CSV file for the loader (mobile first, then every other key)."""
    if not isinstance(recipients, list) or not recipients:
        raise Problem(422, "recipients: a non-empty list of objects is needed")
    columns: dict[str, None] = {"mobile": None}
    for item in recipients:
        if not isinstance(item, dict):
            raise Problem(422, "recipients: each item must be an object")
        columns.update(dict.fromkeys(str(k) for k in item))
    import uuid

    path = uploads_dir(settings) / f"{uuid.uuid4().hex}.csv"
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        for item in recipients:
            writer.writerow(["" if item.get(c) is None else str(item.get(c)) for c in columns])
    return path


def create(
    settings: Settings, engine: Any, path: Path, options: dict[str, Any], dry_run: bool
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """The one load both faces use; 201 with a Location for a campaign, 200 for a dry run."""
    text = options.pop("text")
    request = control.load_request(settings, path=path, template=text, **options)
    started = control.start_campaign(settings, engine, request, dry_run=dry_run)
    data = started.summary.as_dict()
    if started.summary.campaign is None:
        return 200, data, {}
    return 201, data, {"Location": f"/v1/campaigns/{started.summary.campaign}"}


@router.post("", openapi_extra=CREATE_DOC, status_code=201, summary="Load a list as a campaign")
async def create_campaign(
    request: Request, settings: SettingsDep, engine: EngineDep, caller: WriterDep
) -> JSONResponse:
    """A list as a multipart upload (`file` and the options of `send`) or JSON `recipients`.
    The reply is the `send --json` object."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    upload: Upload | None = None
    try:
        if kind == "multipart/form-data":
            upload = await read_upload(request, settings)
            if upload.path is None:
                raise Problem(422, "file: the list is missing (a multipart part named 'file')")
            values: dict[str, Any] = dict(upload.fields)
            options = _options(values)
            options.setdefault("name", upload.filename)
            path = upload.path
            ident: Any = {"options": options, "dry_run": _dry_run(values.get("dry_run")),
                          "file": upload.digest}  # fmt: skip
        elif kind == "application/json":
            values = json_object(await request.body())
            options = _options(values)
            options.setdefault("name", "recipients (JSON)")
            path = _write_recipients(settings, values.get("recipients"))
            upload = Upload(path=path)
            ident = values
        else:
            raise Problem(415, "send multipart/form-data (a list file) or application/json")
        dry_run = _dry_run(values.get("dry_run"))
        return await idempotent.respond(
            request, engine, caller, ident, lambda: create(settings, engine, path, options, dry_run)
        )
    finally:
        discard(upload)


@router.get("", summary="Campaigns, newest first")
def list_campaigns(
    engine: EngineDep,
    settings: SettingsDep,
    caller: ReaderDep,
    cursor: str | None = None,
    limit: Annotated[int | None, Query(ge=1, le=1000)] = None,
) -> dict[str, Any]:
    """Status objects (as `status --json`), newest first; pass `next_cursor` for the next page."""
    page = browse.campaign_page(engine, limit=limit or settings.api_page_size, cursor=cursor)
    return page.as_dict()


@router.get("/{campaign_id}", summary="A campaign's status (`status --json`)")
def get_campaign(campaign_id: int, engine: EngineDep, caller: ReaderDep) -> dict[str, Any]:
    return campaign_status(engine, campaign_id).as_dict()


@router.get("/{campaign_id}/messages", summary="A campaign's messages in list order")
def list_messages(
    campaign_id: int,
    engine: EngineDep,
    settings: SettingsDep,
    caller: ReaderDep,
    status: Annotated[list[str] | None, Query()] = None,
    cursor: str | None = None,
    limit: Annotated[int | None, Query(ge=1, le=1000)] = None,
) -> dict[str, Any]:
    """Optionally only some statuses (`status=delivered&status=failed`, or comma-separated)."""
    statuses = [s.strip() for item in status or [] for s in item.split(",") if s.strip()]
    try:
        page = browse.message_page(
            engine,
            campaign_id,
            limit=limit or settings.api_page_size,
            statuses=statuses or None,
            cursor=cursor,
        )
    except browse.CursorError:
        raise
    except ValueError as exc:
        raise Problem(422, str(exc)) from None
    return page.as_dict()


@router.get(
    "/{campaign_id}/report.csv",
    summary="Every input row with its outcome (the file `report` writes)",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}}},
)
async def get_report(campaign_id: int, engine: EngineDep, caller: ReaderDep) -> StreamingResponse:
    await run_in_threadpool(ledger_reads.get_campaign, engine, campaign_id)  # 404 before streaming
    return report_response(engine, campaign_id)


def report_response(engine: Any, campaign_id: int) -> StreamingResponse:
    """The report as a file: byte for byte what `report --out FILE` writes, BOM included
    (it tells Excel the file is UTF-8)."""

    def pieces() -> Iterator[str]:
        yield "\ufeff"
        yield from report_csv(report_rows(engine, campaign_id))

    return StreamingResponse(
        pieces(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="campaign-{campaign_id}.csv"'},
    )


def _act(
    action: str, settings: Settings, engine: Any, campaign_id: int, body: dict[str, Any]
) -> dict[str, Any]:
    if action == "pause":
        control.pause_campaign(settings, engine, campaign_id)
        return {"campaign": campaign_id, "state": "paused"}
    if action == "resume":
        # `{"max_cost": "400"}` raises the cost cap first, as `resume --max-cost 400`.
        cap = control.parse_max_cost(body.get("max_cost"))
        state, note = control.resume_campaign(settings, engine, campaign_id, max_cost=cap)
        return {"campaign": campaign_id, "state": state, "note": note}
    count = control.cancel_campaign(settings, engine, campaign_id)
    return {"campaign": campaign_id, "state": "cancelled", "not_sent": count}


async def _control_body(request: Request) -> dict[str, Any]:
    """A control request's optional JSON body (only resume reads one: `max_cost`)."""
    raw = await request.body()
    if not raw.strip():
        return {}
    body = json_object(raw)
    unknown = sorted(set(body) - {"max_cost"})
    if unknown:
        raise Problem(422, f"{unknown[0]}: not an option here")
    return body


def _campaign_id(campaign_id: int) -> int:
    return campaign_id


add_control_routes(
    router,
    ("pause", "resume", "cancel"),
    key_path="/{campaign_id}",
    key=_campaign_id,
    noun="campaign",
    command="sms-dispatch",
    act=_act,
    read_body=_control_body,
)
