"""Uploaded lists, streamed to a file under the data dir and handed to the loader by path.

The body is read in pieces and counted as it comes: a list is never whole in memory, and an
upload over `api_max_upload` is refused (413) as soon as it passes the limit.
"""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Request
from starlette.datastructures import UploadFile

from config import Settings
from dispatcher.api.problems import Problem

PIECE = 1024 * 1024
KEEP_PREVIEWS = 3600.0  # an upload kept for a dashboard preview is removed after an hour
_SUFFIX = re.compile(r"^\.[A-Za-z0-9]{1,8}$")


class _TooLarge(Exception):
    pass


@dataclass
class Upload:
    """A parsed multipart form: text fields, and the one list file written to disk."""

    fields: dict[str, str] = field(default_factory=dict)
    path: Path | None = None
    filename: str | None = None
    digest: str | None = None  # sha256 of the file's bytes


def uploads_dir(settings: Settings) -> Path:
    path = settings.data_dir.resolve() / "uploads"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def _limited(receive: Callable[[], Awaitable[Any]], limit: int) -> Callable[[], Awaitable[Any]]:
    seen = 0

    async def counted() -> Any:
        nonlocal seen
        message = await receive()
        seen += len(message.get("body", b""))
        if seen > limit:
            raise _TooLarge
        return message

    return counted


def too_large(settings: Settings) -> Problem:
    mib = settings.api_max_upload / (1024 * 1024)
    return Problem(413, f"the upload is larger than the limit of {mib:g} MiB (api_max_upload)")


async def read_upload(request: Request, settings: Settings, *, file_field: str = "file") -> Upload:
    """Parse a multipart body; the file part goes to a new file under data_dir/uploads."""
    limit = settings.api_max_upload
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise too_large(settings)
    limited = Request(request.scope, _limited(request.receive, limit))
    upload = Upload()
    try:
        async with limited.form(max_files=1, max_fields=100) as form:
            for key, value in form.multi_items():
                if isinstance(value, UploadFile):
                    if key != file_field:
                        raise Problem(400, f"unexpected file {key!r}; send it as {file_field!r}")
                    await _save(settings, value, upload)
                else:
                    upload.fields[key] = value
    except _TooLarge:
        discard(upload)
        raise too_large(settings) from None
    except Problem:
        discard(upload)
        raise
    except Exception as exc:  # python-multipart's parse errors: a malformed body
        discard(upload)
        raise Problem(400, f"the multipart body cannot be read ({type(exc).__name__})") from None
    return upload


async def _save(settings: Settings, part: UploadFile, upload: Upload) -> None:
    name = Path(part.filename or "list.csv").name
    suffix = Path(name).suffix if _SUFFIX.match(Path(name).suffix or "") else ".csv"
    path = uploads_dir(settings) / f"{uuid.uuid4().hex}{suffix.lower()}"
    digest = hashlib.sha256()
    upload.path, upload.filename = path, name
    with path.open("wb") as fh:
        while piece := await part.read(PIECE):
            digest.update(piece)
            fh.write(piece)
    upload.digest = digest.hexdigest()


def discard(upload: Upload | None) -> None:
    if upload is not None and upload.path is not None:
        upload.path.unlink(missing_ok=True)


def keep_for_preview(settings: Settings, upload: Upload) -> str:
    """Keep an upload for a later send from the dashboard; returns the id to find it by."""
    assert upload.path is not None
    cutoff = time.time() - KEEP_PREVIEWS
    for old in uploads_dir(settings).glob("preview-*"):
        if old.stat().st_mtime < cutoff:
            old.unlink(missing_ok=True)
    token = uuid.uuid4().hex
    kept = upload.path.with_name(f"preview-{token}{upload.path.suffix}")
    upload.path.rename(kept)
    upload.path = kept
    return token + upload.path.suffix


def preview_path(settings: Settings, upload_id: str) -> Path:
    """The file kept by `keep_for_preview`; 422 when it is gone or the id is not one of ours."""
    if not re.fullmatch(r"[0-9a-f]{32}\.[A-Za-z0-9]{1,8}", upload_id or ""):
        raise Problem(422, "upload: not an upload of this dashboard; upload the list again")
    path = uploads_dir(settings) / f"preview-{upload_id}"
    if not path.is_file():
        raise Problem(422, "upload: the uploaded list has expired; upload it again")
    return path
