"""`/v1/schedules`: recurring sends, with the operations of `sms-dispatch schedule`."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from config import Settings
from dispatcher import control, schedules
from dispatcher.api import idempotent
from dispatcher.api.controls import add_control_routes
from dispatcher.api.deps import EngineDep, ReaderDep, SettingsDep, WriterDep
from dispatcher.api.problems import Problem, json_object
from dispatcher.api.uploads import Upload, discard, read_upload
from workers.ledger import Priority

router = APIRouter(prefix="/v1/schedules", tags=["schedules"])
FIELDS = ("name", "cron", "tz", "list", "sender", "text", "region", "window", "days",
          "validity", "purpose", "consent_column",
          "priority", *schedules.OPTIONS)  # fmt: skip
TRUE = {"1", "true", "yes", "on"}


def lists_dir(settings: Settings) -> Path:
    path = settings.data_dir.resolve() / "schedule-lists"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def _add(settings: Settings, engine: Any, values: dict[str, Any]) -> dict[str, Any]:
    missing = [k for k in ("name", "cron", "tz", "sender", "text") if not values.get(k)]
    if missing:
        raise Problem(422, f"{missing[0]}: required")
    if not values.get("list"):
        raise Problem(422, "list: a list file (multipart 'file') or a path on the server")
    extra = {k: values[k] for k in ("purpose", "consent_column") if values.get(k)}
    extra["priority"] = control.parse_priority(values.get("priority"), Priority.HIGH)
    option = {k: str(values[k]) for k in schedules.OPTIONS if values.get(k) not in (None, "")}
    extra["options"] = schedules.schedule_options(
        **{k: v for k, v in option.items() if k not in ("max_cost", "gsm_safe")},
        max_cost=control.parse_max_cost(option.get("max_cost")),
        gsm_safe=option.get("gsm_safe", "").strip().lower() in TRUE,
    )
    return schedules.add_schedule(
        engine,
        settings,
        name=str(values["name"]),
        cron=str(values["cron"]),
        tz=str(values["tz"]),
        list_path=Path(str(values["list"])),
        sender=str(values["sender"]),
        template=str(values["text"]),
        region=str(values["region"]).upper() if values.get("region") else None,
        window=values.get("window") or None,
        days=values.get("days") or None,
        validity=control.parse_validity(values.get("validity")),
        **extra,
    )


@router.get("", summary="Every schedule with its next firing")
def list_schedules(engine: EngineDep, caller: ReaderDep) -> list[dict[str, Any]]:
    return schedules.list_schedules(engine)


@router.post("", status_code=201, summary="Add a schedule (as `schedule add`)")
async def add_schedule(
    request: Request, settings: SettingsDep, engine: EngineDep, caller: WriterDep
) -> JSONResponse:
    """JSON with `list` as a path on the server, or multipart with the list as `file` (kept
    under the data dir and read again, as it then is, at every firing)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    upload: Upload | None = None
    try:
        if kind == "multipart/form-data":
            upload = await read_upload(request, settings)
            values: dict[str, Any] = dict(upload.fields)
            ident: Any = {**values, "file": upload.digest}
        elif kind == "application/json":
            values = json_object(await request.body())
            ident = values
        else:
            raise Problem(415, "send multipart/form-data (a list file) or application/json")
        unknown = sorted(set(values) - set(FIELDS))
        if unknown:
            raise Problem(422, f"{unknown[0]}: not an option of schedule add")
        kept = upload

        def work() -> tuple[int, dict[str, Any], dict[str, str]]:
            if kept is not None and kept.path is not None:
                name = str(values.get("name") or "")
                if not name or "/" in name or name.startswith("."):
                    raise Problem(422, "name: required, without '/'")
                target = lists_dir(settings) / f"{name}{kept.path.suffix}"
                shutil.copyfile(kept.path, target)
                values["list"] = str(target)
            return 201, _add(settings, engine, values), {}

        return await idempotent.respond(request, engine, caller, ident, work)
    finally:
        discard(upload)


@router.get("/{name}", summary="One schedule")
def get_schedule(name: str, engine: EngineDep, caller: ReaderDep) -> dict[str, Any]:
    return schedules.describe(engine, name)


@router.delete("/{name}", summary="Remove a schedule (its campaigns stay)")
def remove_schedule(name: str, engine: EngineDep, caller: WriterDep) -> dict[str, Any]:
    schedules.remove_schedule(engine, name)
    return {"removed": name}


def _act(
    action: str, settings: Settings, engine: Any, name: str, _body: dict[str, Any]
) -> dict[str, Any]:
    if action == "run":
        started = control.run_schedule(settings, engine, name)
        return {**started.summary.as_dict(), "note": started.note}
    schedules.set_paused(engine, name, action == "pause")
    return schedules.describe(engine, name)


def _schedule_name(name: str) -> str:
    return name


add_control_routes(
    router,
    ("pause", "resume", "run"),
    key_path="/{name}",
    key=_schedule_name,
    noun="schedule",
    command="schedule",
    act=_act,
)
