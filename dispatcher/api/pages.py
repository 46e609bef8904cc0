"""The dashboard: server-rendered pages (Jinja2) that htmx refreshes in place.

Signing in stores the API token in an HttpOnly, SameSite=Strict cookie signed with the app's
secret; every page checks the token against the ledger again, so revoking it signs out.
Every form and htmx request carries a CSRF token tied to the session.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from fastapi.templating import Jinja2Templates
from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.concurrency import run_in_threadpool

from config import Settings
from dispatcher import browse, control, schedules
from dispatcher.api.deps import EngineDep, SettingsDep
from dispatcher.api.problems import Problem
from dispatcher.api.routes.campaigns import report_response
from dispatcher.api.uploads import discard, keep_for_preview, preview_path, read_upload
from dispatcher.reports import CampaignStatus, campaign_status
from dispatcher.suppression import add_numbers, remove_numbers
from dispatcher.tokens import Caller, verify_token
from workers import ledger_reads

HERE = Path(__file__).resolve().parent
COOKIE = "sms_session"
SESSION_AGE = 12 * 3600
CSRF_HEADER = "X-CSRF-Token"
templates = Jinja2Templates(directory=HERE / "templates")
router = APIRouter(include_in_schema=False)

# Options the new-campaign form hands to `send` (the same names as the API's).
SEND_FIELDS = ("sender", "text", "name", "region", "column", "at", "tz", "window", "days",
               "validity", "purpose", "consent_column", "priority", "max_cost",
               "send_at_column", "before", "date_order", "dedupe_column", "gsm_safe")  # fmt: skip


def app_secret(settings: Settings) -> bytes:
    """The key that signs session cookies: the setting, else a random one kept in data_dir."""
    configured = settings.api_secret.get_secret_value()
    if configured:
        return configured.encode()
    path = settings.data_dir.resolve() / "api-secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(48))
    return path.read_text().strip().encode()


def _serializer(request: Request) -> URLSafeTimedSerializer:
    state = request.app.state
    if getattr(state, "secret", None) is None:
        state.secret = app_secret(state.settings)
    return URLSafeTimedSerializer(state.secret, salt="sms-dispatch-session")


def _csrf(request: Request, token: str) -> str:
    _serializer(request)
    return hmac.new(request.app.state.secret, b"csrf:" + token.encode(), hashlib.sha256).hexdigest()


class SignInNeeded(Exception):
    """No valid session: the browser is sent to the sign-in page."""


class Session:
    """The signed-in caller and the CSRF token of this session."""

    def __init__(self, caller: Caller, csrf: str) -> None:
        self.caller = caller
        self.csrf = csrf


def get_session(request: Request, engine: EngineDep) -> Session:
    raw = request.cookies.get(COOKIE)
    if not raw:
        raise SignInNeeded
    try:
        token = _serializer(request).loads(raw, max_age=SESSION_AGE)
    except BadSignature:
        raise SignInNeeded from None
    caller = verify_token(engine, str(token))
    if caller is None:
        raise SignInNeeded  # revoked since sign-in
    return Session(caller, _csrf(request, str(token)))


async def get_writer_session(
    request: Request, session: Annotated[Session, Depends(get_session)]
) -> Session:
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.headers.get("content-type", "").startswith(
        "application/x-www-form-urlencoded"
    ):
        sent = str((await request.form()).get("csrf") or "")
    if not sent or not hmac.compare_digest(sent, session.csrf):
        raise Problem(403, "the form is stale or not from this dashboard; reload the page")
    if session.caller.read_only:
        raise Problem(403, f"token {session.caller.name!r} is read-only")
    return session


SessionDep = Annotated[Session, Depends(get_session)]
WriterSessionDep = Annotated[Session, Depends(get_writer_session)]


def page(request: Request, name: str, session: Session | None, **context: Any) -> HTMLResponse:
    context.update(request=request, session=session)
    return templates.TemplateResponse(request, name, context)


def _htmx(request: Request) -> bool:
    return request.headers.get("HX-Request") == "true"


def install(app: FastAPI) -> None:
    """Sign-in redirects and HTML error pages for the dashboard's routes."""

    @app.exception_handler(SignInNeeded)
    async def _sign_in(request: Request, exc: SignInNeeded) -> Response:
        if _htmx(request):
            return Response(status_code=401, headers={"HX-Redirect": "/signin"})
        response = RedirectResponse("/signin", status_code=303)
        response.delete_cookie(COOKIE)
        return response

    def render_problem(request: Request, status: int, detail: str) -> Response | None:
        if request.url.path.startswith(("/docs", "/openapi", "/healthz", "/readyz", "/static")):
            return None
        if _htmx(request):
            return templates.TemplateResponse(
                request,
                "_problem.html",
                {"detail": detail, "status": status},
                status_code=status,
                headers={"HX-Retarget": "#flash", "HX-Reswap": "innerHTML"},
            )
        return templates.TemplateResponse(
            request,
            "error.html",
            {"detail": detail, "status": status, "session": None},
            status_code=status,
        )

    app.state.render_problem = render_problem


# --- signing in -----------------------------------------------------------------------------


@router.get("/")
def home() -> RedirectResponse:
    return RedirectResponse("/campaigns", status_code=303)


@router.get("/signin")
def sign_in_page(request: Request) -> HTMLResponse:
    return page(request, "signin.html", None, error=None)


@router.post("/signin")
def sign_in(request: Request, engine: EngineDep, token: Annotated[str, Form()] = "") -> Response:
    caller = verify_token(engine, token.strip())
    if caller is None:
        refused = page(request, "signin.html", None, error="That token is not valid.")
        refused.status_code = 401
        return refused
    response = RedirectResponse("/campaigns", status_code=303)
    response.set_cookie(
        COOKIE,
        _serializer(request).dumps(token.strip()),
        max_age=SESSION_AGE,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


@router.post("/signout")
def sign_out(session: WriterSessionDep) -> Response:
    response = RedirectResponse("/signin", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


# --- campaigns ------------------------------------------------------------------------------


def _row(engine: sa.Engine, status: CampaignStatus) -> dict[str, Any]:
    percent = int(100 * status.final / status.total) if status.total else 0
    return {**status.as_dict(), **browse.activity(engine, status), "percent": percent}


def _rows(engine: sa.Engine, settings: Settings) -> list[dict[str, Any]]:
    listing = browse.campaign_page(engine, limit=settings.api_page_size)
    return [_row(engine, s) for s in listing.items]


@router.get("/campaigns")
def campaigns_page(
    request: Request, session: SessionDep, engine: EngineDep, settings: SettingsDep
) -> HTMLResponse:
    return page(request, "campaigns.html", session, rows=_rows(engine, settings))


@router.get("/campaigns/rows")
def campaigns_rows(
    request: Request, session: SessionDep, engine: EngineDep, settings: SettingsDep
) -> HTMLResponse:
    return page(request, "_campaign_rows.html", session, rows=_rows(engine, settings))


def _detail(engine: sa.Engine, campaign_id: int) -> dict[str, Any]:
    status = campaign_status(engine, campaign_id)
    minutes = browse.per_minute(engine, campaign_id, minutes=30)
    peak = max([1] + [max(m["sent"], m["delivered"]) for m in minutes])
    return {
        "c": _row(engine, status),
        "minutes": minutes,
        "peak": peak,
        "problems": browse.problem_rows(engine, campaign_id, limit=10),
    }


@router.get("/campaigns/{campaign_id}")
def campaign_page(
    campaign_id: int, request: Request, session: SessionDep, engine: EngineDep
) -> HTMLResponse:
    return page(request, "campaign.html", session, **_detail(engine, campaign_id))


@router.get("/campaigns/{campaign_id}/live")
def campaign_live(
    campaign_id: int, request: Request, session: SessionDep, engine: EngineDep
) -> HTMLResponse:
    return page(request, "_campaign_live.html", session, **_detail(engine, campaign_id))


@router.post("/campaigns/{campaign_id}/{action}")
def campaign_action(
    campaign_id: int,
    action: str,
    request: Request,
    session: WriterSessionDep,
    engine: EngineDep,
    settings: SettingsDep,
) -> HTMLResponse:
    if action == "pause":
        control.pause_campaign(settings, engine, campaign_id)
    elif action == "resume":
        control.resume_campaign(settings, engine, campaign_id)
    elif action == "cancel":
        control.cancel_campaign(settings, engine, campaign_id)
    else:
        raise Problem(404, f"no action {action!r}")
    return page(request, "_campaign_live.html", session, **_detail(engine, campaign_id))


@router.get("/campaigns/{campaign_id}/report.csv")
def campaign_report(campaign_id: int, session: SessionDep, engine: EngineDep) -> StreamingResponse:
    ledger_reads.get_campaign(engine, campaign_id)
    return report_response(engine, campaign_id)


# --- a new campaign -------------------------------------------------------------------------


@router.get("/new")
def new_page(request: Request, session: SessionDep, settings: SettingsDep) -> HTMLResponse:
    return page(request, "new.html", session, settings=settings)


def _options(fields: dict[str, str]) -> dict[str, Any]:
    return {k: fields[k] for k in SEND_FIELDS if fields.get(k) and k != "text"}


@router.post("/new/preview")
async def new_preview(
    request: Request, session: WriterSessionDep, engine: EngineDep, settings: SettingsDep
) -> HTMLResponse:
    upload = await read_upload(request, settings)
    try:
        if upload.path is None or upload.path.stat().st_size == 0:
            raise Problem(422, "file: choose a list to upload")
        options = _options(upload.fields)
        options.setdefault("name", upload.filename)
        path = upload.path

        def preview() -> Any:
            req = control.load_request(
                settings, path=path, template=upload.fields.get("text", ""), **options
            )
            return control.start_campaign(settings, engine, req, dry_run=True).summary

        summary = await run_in_threadpool(preview)
        upload_id = keep_for_preview(settings, upload)
    except BaseException:
        discard(upload)
        raise
    return page(
        request,
        "_preview.html",
        session,
        p=summary.as_dict(),
        fields={**upload.fields, "name": options["name"]},
        upload_id=upload_id,
        send_fields=SEND_FIELDS,
    )


@router.post("/new/send")
async def new_send(
    request: Request, session: WriterSessionDep, engine: EngineDep, settings: SettingsDep
) -> Response:
    form = await request.form()
    fields = {k: str(v) for k, v in form.items() if isinstance(v, str)}
    path = preview_path(settings, fields.get("upload", ""))
    options = _options(fields)
    if fields.get("when") != "later":
        options.pop("at", None)
    elif not options.get("at"):
        raise Problem(422, "at: choose when to send")

    def send() -> Any:
        req = control.load_request(settings, path=path, template=fields.get("text", ""), **options)
        return control.start_campaign(settings, engine, req).summary

    summary = await run_in_threadpool(send)
    path.unlink(missing_ok=True)
    target = f"/campaigns/{summary.campaign}"
    if _htmx(request):
        return Response(status_code=204, headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303)


# --- opt-outs and schedules -----------------------------------------------------------------


def _opt_outs(engine: sa.Engine, cursor: str | None = None) -> dict[str, Any]:
    found = browse.suppression_page(engine, limit=200, cursor=cursor)
    return {"numbers": found.items, "next_cursor": found.next_cursor}


@router.get("/optouts")
def opt_outs_page(
    request: Request, session: SessionDep, engine: EngineDep, cursor: str | None = None
) -> HTMLResponse:
    return page(request, "optouts.html", session, cursor=cursor, **_opt_outs(engine, cursor))


@router.post("/optouts/add")
def opt_outs_add(
    request: Request,
    session: WriterSessionDep,
    engine: EngineDep,
    settings: SettingsDep,
    numbers: Annotated[str, Form()] = "",
) -> HTMLResponse:
    given = [n.strip() for n in numbers.replace(",", "\n").splitlines() if n.strip()]
    if not given:
        raise Problem(422, "numbers: give one or more numbers, one a line")
    added = add_numbers(engine, control.normalised_numbers(settings, given, None))
    return page(request, "_optout_list.html", session, note=f"{added} added", **_opt_outs(engine))


@router.post("/optouts/remove")
def opt_outs_remove(
    request: Request,
    session: WriterSessionDep,
    engine: EngineDep,
    settings: SettingsDep,
    number: Annotated[str, Form()] = "",
) -> HTMLResponse:
    removed = remove_numbers(engine, control.normalised_numbers(settings, [number], None))
    return page(
        request, "_optout_list.html", session, note=f"{removed} removed", **_opt_outs(engine)
    )


@router.get("/schedules")
def schedules_page(request: Request, session: SessionDep, engine: EngineDep) -> HTMLResponse:
    return page(request, "schedules.html", session, items=schedules.list_schedules(engine))


@router.post("/schedules/{name}/{action}")
def schedule_action(
    name: str,
    action: str,
    request: Request,
    session: WriterSessionDep,
    engine: EngineDep,
    settings: SettingsDep,
) -> HTMLResponse:
    note = ""
    if action in ("pause", "resume"):
        schedules.set_paused(engine, name, action == "pause")
        note = f"schedule {name!r} {action}d"
    elif action == "remove":
        schedules.remove_schedule(engine, name)
        note = f"schedule {name!r} removed"
    elif action == "run":
        started = control.run_schedule(settings, engine, name)
        note = f"campaign {started.summary.campaign} {started.summary.state}"
    else:
        raise Problem(404, f"no action {action!r}")
    return page(
        request,
        "_schedule_rows.html",
        session,
        items=schedules.list_schedules(engine),
        note=note,
    )
