"""`/v1/suppression`: the opt-out list, with the operations of `sms-dispatch suppress`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from dispatcher import browse, control
from dispatcher.api import idempotent
from dispatcher.api.deps import EngineDep, ReaderDep, SettingsDep, WriterDep
from dispatcher.api.problems import Problem
from dispatcher.api.uploads import discard, read_upload
from dispatcher.suppression import add_numbers, remove_numbers

router = APIRouter(prefix="/v1/suppression", tags=["opt-outs"])


class Numbers(BaseModel):
    numbers: list[str] = Field(min_length=1, max_length=10_000)
    region: str | None = None


@router.get("", summary="Opted-out numbers, in order")
def list_opt_outs(
    engine: EngineDep,
    settings: SettingsDep,
    caller: ReaderDep,
    cursor: str | None = None,
    limit: Annotated[int | None, Query(ge=1, le=10_000)] = None,
) -> dict[str, Any]:
    return browse.suppression_page(
        engine, limit=limit or settings.api_page_size, cursor=cursor
    ).as_dict()


@router.post("", summary="Add numbers (as `suppress add`)")
async def add_opt_outs(
    body: Numbers, request: Request, settings: SettingsDep, engine: EngineDep, caller: WriterDep
) -> JSONResponse:
    def work() -> tuple[int, dict[str, Any], dict[str, str]]:
        numbers = control.normalised_numbers(settings, body.numbers, body.region)
        return 200, {"added": add_numbers(engine, numbers, "api")}, {}

    return await idempotent.respond(request, engine, caller, body.model_dump(), work)


@router.post("/import", summary="Add every valid number of a list file (as `suppress import`)")
async def import_opt_outs(
    request: Request, settings: SettingsDep, engine: EngineDep, caller: WriterDep
) -> JSONResponse:
    upload = await read_upload(request, settings)
    try:
        if upload.path is None:
            raise Problem(422, "file: the list is missing (a multipart part named 'file')")
        path = upload.path
        region, column = upload.fields.get("region") or None, upload.fields.get("column") or None

        def work() -> tuple[int, dict[str, Any], dict[str, str]]:
            done = control.import_opt_outs(settings, engine, path, region=region, column=column)
            return 200, done.as_dict(), {}

        ident = {"file": upload.digest, "region": region, "column": column}
        return await idempotent.respond(request, engine, caller, ident, work)
    finally:
        discard(upload)


@router.delete("/{number}", summary="Remove a number (as `suppress remove`)")
def remove_opt_out(
    number: str,
    settings: SettingsDep,
    engine: EngineDep,
    caller: WriterDep,
    region: str | None = None,
) -> dict[str, Any]:
    removed = remove_numbers(engine, control.normalised_numbers(settings, [number], region))
    if not removed:
        raise Problem(404, "that number is not on the opt-out list")
    return {"removed": removed}
