"""Recipient lists: CSV (comma, semicolon or tab) or one number a line, streamed in chunks,
with numbers normalised by `phonenumbers` to the gateway's digits-only international form."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberFormat

NUMBER_COLUMNS = (
    "mobile",
    "phone",
    "number",
    "msisdn",
    "mobile_number",
    "mobilenumber",
    "phone_number",
    "phonenumber",
    "cell",
    "cellphone",
    "telephone",
    "tel",
    "mobil",
    "mobilnummer",
    "telefon",
    "telefonnummer",
    "nummer",
)
DELIMITERS = (";", ",", "\t")
_LOOKS_LIKE_NUMBER = re.compile(r"^[\d\s+()\-./]*\d[\d\s+()\-./]*$")
_SEPARATORS = re.compile(r"[\s()\-./]")
BOM = "\ufeff"


class RecipientListError(ValueError):
    """A list we cannot read; one line for the user, naming the file and line."""


@dataclass(slots=True)
class Row:
    """One data row of a list: its line, the number as given and normalised, and its cells."""

    line: int
    raw: str
    mobile: str | None
    error: str | None
    fields: dict[str, str] = field(default_factory=dict)


def normalise(raw: str, region: str) -> tuple[str | None, str | None]:
    """(digits-only international number, None) or (None, why it is not a valid number).

    `+46...` and `0046...` are international; anything else is read as a national number of
    `region`, and, if that is not valid, as an international number written without `+` (the
    way the gateway itself writes numbers: `46701234567`).
    """
    text = raw.strip()
    if not text:
        return None, "empty number"
    compact = _SEPARATORS.sub("", text)
    if compact.startswith("00"):
        compact = "+" + compact[2:]
    if not compact.lstrip("+").isdigit():
        return None, "not a phone number"
    try:
        number = phonenumbers.parse(compact, None if compact.startswith("+") else region)
    except NumberParseException:
        number = None
    if number is None or not phonenumbers.is_valid_number(number):
        if not compact.startswith("+") and len(compact) >= 8:
            try:
                bare = phonenumbers.parse("+" + compact, None)
            except NumberParseException:
                bare = None
            if bare is not None and phonenumbers.is_valid_number(bare):
                return _digits(bare), None
        if number is None:
            return None, "not a phone number"
        where = phonenumbers.region_code_for_number(number) or region
        return None, f"not a valid number for {where}"
    return _digits(number), None


def _digits(number: phonenumbers.PhoneNumber) -> str:
    if number.italian_leading_zero:  # the leading zeros are part of the number there
        return phonenumbers.format_number(number, PhoneNumberFormat.E164)[1:]
    return f"{number.country_code}{number.national_number}"


def _header_key(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", name.strip().casefold())


def _decoded_lines(path: Path, fh: IO[bytes]) -> Iterator[str]:
    for number, raw in enumerate(fh, start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            bad = raw[exc.start]
            raise RecipientListError(
                f"{path}: line {number} is not UTF-8 (byte 0x{bad:02x} at column "
                f"{exc.start + 1}); save the list as UTF-8"
            ) from None
        if number == 1:
            line = line.removeprefix(BOM)
        yield line


class RecipientList:
    """An opened list: its format detected, its number column found, its rows streamable."""

    def __init__(
        self,
        path: Path,
        columns: list[str],
        number_column: str,
        delimiter: str | None,
        region: str,
    ) -> None:
        self.path = path
        self.columns = columns
        self.number_column = number_column
        self.delimiter = delimiter
        self.region = region

    @classmethod
    def open(
        cls, path: str | Path, *, column: str | None = None, region: str = "SE"
    ) -> RecipientList:
        """Read just enough of the file to know its shape; errors name the file."""
        path = Path(path)
        if not path.exists():
            raise RecipientListError(f"{path}: no such file")
        if not path.is_file():
            raise RecipientListError(f"{path}: not a file")
        try:
            with path.open("rb") as fh:
                first = next((ln for ln in _decoded_lines(path, fh) if ln.strip()), None)
        except PermissionError:
            raise RecipientListError(f"{path}: cannot be read (permission denied)") from None
        if first is None:
            raise RecipientListError(f"{path}: the list is empty")
        first = first.rstrip("\r\n")
        if _LOOKS_LIKE_NUMBER.match(first.strip()) and not any(d in first for d in ";,\t"):
            if column:
                raise RecipientListError(
                    f"{path}: --column {column!r} given, but the list has no header"
                )
            return cls(path, ["mobile"], "mobile", None, region)
        delimiter = max(DELIMITERS, key=first.count)
        if first.count(delimiter) == 0:
            delimiter = ","
        header = next(csv.reader([first], delimiter=delimiter))
        columns = [h.strip() for h in header]
        return cls(path, columns, _number_column(path, columns, column), delimiter, region)

    def rows(self) -> Iterator[Row]:
        for chunk in self.chunks():
            yield from chunk

    def chunks(self, size: int = 10_000) -> Iterator[list[Row]]:
        """Rows in lists of `size`, numbers normalised; the file is streamed, never read whole."""
        region = self.region
        with self.path.open("rb") as fh:
            lines = _decoded_lines(self.path, fh)
            chunk: list[Row] = []
            if self.delimiter is None:
                for number, line in enumerate(lines, start=1):
                    raw = line.strip()
                    if not raw:
                        continue
                    mobile, error = normalise(raw, region)
                    chunk.append(Row(number, raw, mobile, error, {"mobile": raw}))
                    if len(chunk) >= size:
                        yield chunk
                        chunk = []
            else:
                reader = csv.reader(lines, delimiter=self.delimiter)
                columns = self.columns
                width = len(columns)
                at = columns.index(self.number_column)
                header_seen = False
                for cells in reader:
                    if not cells or not any(c.strip() for c in cells):
                        continue
                    if not header_seen:
                        header_seen = True
                        continue
                    if len(cells) < width:
                        cells += [""] * (width - len(cells))
                    raw = cells[at].strip()
                    mobile, error = normalise(raw, region)
                    fields = dict(zip(columns, cells, strict=False))
                    chunk.append(Row(reader.line_num, raw, mobile, error, fields))
                    if len(chunk) >= size:
                        yield chunk
                        chunk = []
            if chunk:
                yield chunk


def _number_column(path: Path, columns: list[str], wanted: str | None) -> str:
    keys = {_header_key(c): c for c in columns}
    if wanted:
        found = keys.get(_header_key(wanted))
        if found is None:
            raise RecipientListError(
                f"{path}: no column {wanted!r}; the columns are: {', '.join(columns)}"
            )
        return found
    for name in NUMBER_COLUMNS:
        if name in keys:
            return keys[name]
    raise RecipientListError(
        f"{path}: no number column (looked for mobile, phone, number, msisdn); the columns "
        f"are: {', '.join(columns)}; name one with --column"
    )


def read_numbers(path: str | Path, region: str = "SE") -> list[str]:
    """The raw numbers of a small file (an opt-out list): one a line, or a CSV's number column."""
    return [row.raw for row in RecipientList.open(path, region=region).rows() if row.raw]
