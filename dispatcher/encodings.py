"""Which text encoding a list file is in, and its lines decoded: byte order marks first, then
UTF-8, then `charset-normalizer`'s guess; `--encoding` overrides all of it."""

from __future__ import annotations

import codecs
import io
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import charset_normalizer
from charset_normalizer.md import mess_ratio

SAMPLE_BYTES = 1 << 20  # enough to tell encodings apart, little enough to read up front
BOM = "\ufeff"
# Longest first: a UTF-32-LE mark starts with the UTF-16-LE one.
BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
# Excel's "CSV (Comma delimited)" on a Western Windows: where charset-normalizer finds it as
# clean as another single-byte code page (Swedish text reads the same in cp1250), it wins.
PREFERRED = "cp1252"
_WIDE = frozenset({"utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"})


class EncodingError(ValueError):
    """A file no encoding reads cleanly, or an unknown `--encoding`; one line for the user."""


def detect(path: Path, fh: IO[bytes], override: str | None = None) -> str:
    """The encoding to read `fh` with (a Python codec name); `fh` is left at its start."""
    if override:
        try:
            name = codecs.lookup(override.strip()).name
        except LookupError:
            raise EncodingError(
                f"--encoding {override!r} is not an encoding we know (try utf-8, cp1252, utf-16)"
            ) from None
        return "utf-8-sig" if name == "utf-8" else name  # a BOM is never part of a list
    head = fh.read(SAMPLE_BYTES)
    fh.seek(0)
    for mark, name in BOMS:
        if head.startswith(mark):
            return name
    sample = head
    if len(head) == SAMPLE_BYTES and b"\n" in head:
        sample = head[: head.rindex(b"\n") + 1]  # whole lines: no character cut in two
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError as exc:
        problem = exc
    else:
        return "utf-8"
    matches = charset_normalizer.from_bytes(sample)
    best = matches.best()
    if best is None:
        raise EncodingError(_unreadable(path, sample, problem.start))
    # Coherence (which language the letters look like) is noise on a short list; chaos (how
    # garbled the text would be) is not. So cp1252 wins whenever it reads as cleanly.
    least = min(match.chaos for match in matches)
    if any(match.encoding == PREFERRED and match.chaos <= least for match in matches):
        return PREFERRED
    try:
        western = sample.decode(PREFERRED)
    except UnicodeDecodeError:
        return best.encoding
    # charset-normalizer leaves cp1252 out of its answers on some short samples.
    return PREFERRED if mess_ratio(western) <= least else best.encoding


def _unreadable(path: Path, data: bytes, at: int) -> str:
    line = data.count(b"\n", 0, at) + 1
    column = at - (data.rfind(b"\n", 0, at) + 1) + 1
    return (
        f"{path}: line {line} is not text in any encoding we know (byte 0x{data[at]:02x} at"
        f" byte {column} of the line); save the list as CSV UTF-8 or give --encoding"
    )


def shown(encoding: str) -> str:
    """The encoding as people know it (`utf-8`, `windows-1252`, `utf-16`)."""
    if encoding == "utf-8-sig":
        return "utf-8 (with BOM)"
    if encoding.startswith("cp125"):
        return "windows-" + encoding[2:]
    return encoding.replace("_", "-")


def decoded_lines(path: Path, fh: IO[bytes], encoding: str) -> Iterator[str]:
    """The file's lines as text (line ends kept); a byte the encoding cannot read raises an
    EncodingError naming its line and byte."""
    if codecs.lookup(encoding).name in _WIDE:
        yield from _wide_lines(path, fh, encoding)
        return
    data = next(iter(fh), None)
    if data is None:
        return
    if b"\r" in data.rstrip(b"\r\n"):
        # Old Mac line ends: the whole file would be one line.
        raise EncodingError(
            f"{path} has line 1 ending in a bare carriage return (old Mac text);"
            " save the list as CSV UTF-8"
        )
    yield _decode(path, 1, data, encoding).removeprefix(BOM)
    for number, data in enumerate(fh, start=2):
        yield _decode(path, number, data, encoding)


def _decode(path: Path, number: int, data: bytes, encoding: str) -> str:
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise EncodingError(
            f"{path}: line {number} is not {shown(encoding)} (byte 0x{data[exc.start]:02x} at"
            f" byte {exc.start + 1} of the line); save the list as CSV UTF-8 or give --encoding"
        ) from None


def _wide_lines(path: Path, fh: IO[bytes], encoding: str) -> Iterator[str]:
    # UTF-16/32 cannot be split on b"\n" bytes; the incremental decoder does it.
    text = io.TextIOWrapper(fh, encoding=encoding, newline="")
    number = 0
    try:
        for number, line in enumerate(text, start=1):
            yield line.removeprefix(BOM) if number == 1 else line
    except UnicodeDecodeError as exc:
        raise EncodingError(
            f"{path}: line {number + 1} is not {shown(encoding)} (byte 0x"
            f"{exc.object[exc.start]:02x}); save the list as CSV UTF-8 or give --encoding"
        ) from None
