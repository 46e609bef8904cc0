"""`/v1/people/{number}`: erasure, the same as `sms-dispatch forget NUMBER`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from dispatcher import control
from dispatcher.api.deps import EngineDep, SettingsDep, WriterDep
from dispatcher.erasure import forget

router = APIRouter(prefix="/v1/people", tags=["erasure"])


@router.delete("/{number}", summary="Erase a person's number everywhere; keep it opted out")
def erase_person(
    number: str,
    settings: SettingsDep,
    engine: EngineDep,
    caller: WriterDep,
    region: str | None = None,
) -> dict[str, Any]:
    mobile = control.normalised_numbers(settings, [number], region)[0]
    return forget(settings, engine, mobile).as_dict()
