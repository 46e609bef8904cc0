"""Recipient lists as people export them: CSV (comma, semicolon or tab, any common encoding),
one number a line, or a workbook sheet; header words in several languages, Google Contacts'
phone columns. Rows are streamed in chunks with numbers normalised (`dispatcher.numbers`)."""

from __future__ import annotations

import csv
import re
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from phonenumbers import SUPPORTED_REGIONS

from config import UserError
from dispatcher.encodings import EncodingError, decoded_lines, detect, shown
from dispatcher.numbers import normalise
from dispatcher.spreadsheets import SheetError, is_workbook, sheet_name, sheet_rows

__all__ = ["RecipientList", "RecipientListError", "Row", "read_numbers"]

DELIMITERS = (";", ",", "\t")  # on a tie, the earlier wins: Swedish exports use semicolons
MULTI = ":::"  # Google Contacts joins several numbers of one label in one cell with " ::: "

# Header names of the number column, compared without case, accents, spaces, `_`, `-` and `.`
# ("Mobile number", "mobile_number" and "MobileNumber" are all "mobilenumber"; "Téléphone"
# is "telephone"). When a header has several, the first group wins: a "Mobil" column beats a
# "Telefon" column (HubSpot's "Mobile Phone Number" beats its "Phone Number"), which beats a
# plain "Number" (often a customer number).
NUMBER_COLUMNS = (
    frozenset(
        {
            # English (Outlook "Mobile Phone", HubSpot "Mobile Phone Number")
            "mobile", "mobilenumber", "mobileno", "mobilephone", "mobilephonenumber",
            "mobiletelephone", "msisdn", "cell", "cellphone", "cellnumber", "cellular",
            "cellphonenumber",
            # Swedish, Danish, Norwegian, German
            "mobil", "mobilnr", "mobilnummer", "mobiltelefon", "mobiltelefonnummer",
            "mobiltlf", "handy", "handynummer", "handynr",
            # French, Spanish, Portuguese, Italian, Dutch, Finnish, Polish
            "portable", "telephoneportable", "numeroportable", "telportable", "celular",
            "numerocelular", "telefonocelular", "movil", "telefonomovil", "numeromovil",
            "telemovel", "cellulare", "numerocellulare", "telefonocellulare", "mobiel",
            "mobielnummer", "gsm", "gsmnummer", "matkapuhelin", "komorka",
            "telefonkomorkowy", "numerkomorkowy", "мобильный", "мобильныйтелефон", "сотовый",
        }
    ),
    frozenset(
        {
            "phone", "phonenumber", "phoneno", "telephone", "telephonenumber", "tel", "telnr",
            "telefon", "telefonnr", "telefonnummer", "numerodetelephone", "telefono",
            "numerodetelefono", "numerotelefono", "telefone", "numerodetelefone", "telefoon",
            "telefoonnummer", "puhelin", "puhelinnumero", "numertelefonu", "tlf",
            "телефон", "номертелефона",
        }
    ),
    frozenset({"number", "nummer", "numero", "numer"}),
)  # fmt: skip
_HEADER_NOISE = str.maketrans("", "", " _-.:#\u00a0")
_LOOKS_LIKE_NUMBER = re.compile(r"[\d\s+()\-./']*\d[\d\s+()\-./]*")
# Google Contacts: "Phone 1 - Type" (or "- Label") and "Phone 1 - Value", numbered on.
_GOOGLE = re.compile(r"phone\s*(\d+)\s*-\s*(type|label|value)", re.IGNORECASE)
GOOGLE_LAYOUT = (
    "Google Contacts phone columns: the first Mobile number, else the first valid mobile"
)


class RecipientListError(UserError, ValueError):
    """A list that cannot be read; one line for the user, naming the file (and line)."""


@dataclass(slots=True)
class Row:
    """One data row: where it is, its number as given and normalised, and its cells by column."""

    line: int  # 1-based physical line in the file (a quoted multi-line row: its first line)
    raw: str  # the number exactly as given, stripped
    mobile: str | None  # international, digits only (no + or 00); None when invalid
    error: str | None  # why the number is not valid, when it is not
    fields: dict[str, str]  # the row's cells by header name; a plain list has {"mobile": raw}


# --- Reading lists -------------------------------------------------------------------------


class RecipientList:
    """An opened list: format, encoding and number column found; rows are streamed by `chunks`.

    A workbook (`.xlsx`, `.ods`, ...) is read from its first sheet or `sheet`. A text file's
    encoding comes from its byte order mark, else UTF-8 if it reads as that, else
    charset-normalizer's guess; `encoding` overrides. A CSV has a header; its delimiter
    (comma, semicolon or tab) is detected from the header line. A file whose first non-empty
    line is only digits, spaces and `+()-./` is a plain list: one number a line, no header,
    columns `["mobile"]`.
    """

    def __init__(
        self,
        path: Path,
        columns: list[str],
        number_column: str,
        delimiter: str | None,
        region: str,
        *,
        encoding: str | None = None,
        sheet: str | None = None,
        workbook: bool = False,
        landlines: bool = False,
        google: tuple[tuple[int | None, int], ...] = (),
    ) -> None:
        self.path = path
        self.columns = columns
        self.number_column = number_column
        self.delimiter = delimiter
        self.region = region
        self.encoding = encoding  # None for a workbook
        self.sheet = sheet
        self.workbook = workbook
        self.landlines = landlines
        self.google = google  # (type column, value column) pairs of a Google Contacts export

    def __repr__(self) -> str:
        return (
            f"RecipientList({str(self.path)!r}, number_column={self.number_column!r},"
            f" delimiter={self.delimiter!r}, region={self.region!r})"
        )

    @property
    def source(self) -> str:
        """Where the numbers come from, for the summary: the column, and the encoding read."""
        where = GOOGLE_LAYOUT if self.google else f"column {self.number_column!r}"
        if self.delimiter is None and not self.workbook:
            where = "one number a line"
        read = f"sheet {self.sheet!r}" if self.workbook else shown(self.encoding or "utf-8")
        return f"numbers from {where}; read as {read}"

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        column: str | None = None,
        region: str = "SE",
        encoding: str | None = None,
        sheet: str | None = None,
        landlines: bool = False,
    ) -> RecipientList:
        """Read just enough of the file to know its shape; RecipientListError if unusable."""
        path = Path(path)
        code = region.strip().upper()
        if code not in SUPPORTED_REGIONS:
            raise RecipientListError(
                f"unknown region {region!r} for national numbers; use a two-letter country"
                " code such as SE"
            )
        _check_file(path)
        options: dict[str, Any] = {"landlines": landlines}
        if is_workbook(path):
            if encoding:
                raise RecipientListError(f"{path} is a workbook: --encoding is for text lists")
            return cls._open_workbook(path, column, code, sheet, options)
        if sheet is not None:
            raise RecipientListError(f"{path} is a text list: --sheet is for workbooks")
        with _guarded(), _open(path) as fh:
            chosen = detect(path, fh, encoding)
            lines = decoded_lines(path, fh, chosen)
            header_line, first = _first_line(lines)
            options["encoding"] = chosen
            if not first:
                raise RecipientListError(f"{path} is empty: it has no rows")
            if _LOOKS_LIKE_NUMBER.fullmatch(first.strip()):
                _plain_column(path, column)
                return cls(path, ["mobile"], "mobile", None, code, **options)
            delimiter, columns, number_column, google = _read_header(path, first, column)
            reader = csv.reader(lines, delimiter=delimiter)
            rows = _checked(path, reader, header_line)
            if not any(any(cell.strip() for cell in cells) for cells in rows):
                raise RecipientListError(f"{path} has a header but no rows")
        return cls(path, columns, number_column, delimiter, code, google=google, **options)

    @classmethod
    def _open_workbook(
        cls, path: Path, column: str | None, code: str, sheet: str | None, options: dict[str, Any]
    ) -> RecipientList:
        with _guarded():
            name = sheet_name(path, sheet)
            rows = sheet_rows(path, name)
            try:
                first = next((cells for _, cells in rows if any(c.strip() for c in cells)), None)
                if first is None:
                    raise RecipientListError(f"{path}: the sheet is empty: it has no rows")
                filled = [c for c in first if c.strip()]
                if len(filled) == 1 and _LOOKS_LIKE_NUMBER.fullmatch(filled[0].strip()):
                    _plain_column(path, column)
                    return cls(path, ["mobile"], "mobile", None, code, workbook=True,
                               sheet=name, **options)  # fmt: skip
                columns = [c.strip() for c in first]
                number_column, google = _choose_columns(path, columns, column)
                if not any(any(c.strip() for c in cells) for _, cells in rows):
                    raise RecipientListError(f"{path} has a header but no rows")
            finally:
                rows.close()
        return cls(path, columns, number_column, None, code, workbook=True, sheet=name,
                   google=google, **options)  # fmt: skip

    def rows(self) -> Iterator[Row]:
        """Every data row, in file order."""
        for chunk in self.chunks():
            yield from chunk

    def chunks(self, size: int = 10_000) -> Iterator[list[Row]]:
        """Rows in lists of up to `size`, numbers normalised; the file is streamed.

        Empty lines are skipped; every other line (a quoted cell may span lines) is a Row,
        valid or not. A row shorter than the header gets "" for the missing cells; cells
        beyond the header are ignored. Duplicates are left to the caller.
        """
        region = self.region
        landlines = self.landlines
        check = normalise
        chunk: list[Row] = []
        for line, raw, fields in self._records():
            mobile, error = check(raw, region, landlines=landlines)
            chunk.append(Row(line, raw, mobile, error, fields))
            if len(chunk) >= size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def _records(self) -> Iterator[tuple[int, str, dict[str, str]]]:
        """(line, raw number, fields) of every data row, numbers as given."""
        with _guarded():
            if self.delimiter is None and not self.workbook:
                with _open(self.path) as fh:
                    lines = decoded_lines(self.path, fh, self.encoding or "utf-8")
                    for line, text in enumerate(lines, start=1):
                        raw = text.strip()
                        if raw:
                            yield line, raw, {"mobile": raw}
                return
            columns = self.columns
            width = len(columns)
            at = columns.index(self.number_column)
            pick = self._pick
            simple = not self.google
            for line, cells in self._data_rows():
                if len(cells) < width:
                    if not cells:
                        continue
                    cells += [""] * (width - len(cells))
                raw = cells[at].strip()
                if not raw and not any(cell.strip() for cell in cells):
                    continue  # only delimiters and spaces: an empty line
                if not simple or MULTI in raw:
                    raw = pick(cells, at)
                yield line, raw, dict(zip(columns, cells, strict=False))

    def _data_rows(self) -> Iterator[tuple[int, list[str]]]:
        """(line, cells) of every row after the header."""
        if self.workbook:
            header_seen = False
            for line, cells in sheet_rows(self.path, self.sheet):
                if not header_seen:
                    header_seen = any(c.strip() for c in cells)
                    if header_seen and self.delimiter is None and self.columns == ["mobile"]:
                        yield line, cells[:1] if cells[0].strip() else [_first_filled(cells)]
                    continue
                if self.columns == ["mobile"]:
                    cells = [_first_filled(cells)]
                yield line, cells
            return
        with _open(self.path) as fh:
            lines = decoded_lines(self.path, fh, self.encoding or "utf-8")
            header_line, _ = _first_line(lines)
            reader = csv.reader(lines, delimiter=self.delimiter or ",")
            done = 0  # lines the reader has consumed: a record starts on the next one
            for cells in _checked(self.path, reader, header_line):
                line = header_line + done + 1
                done = reader.line_num
                yield line, cells

    def _pick(self, cells: list[str], at: int) -> str:
        """The row's number when it has several: the first typed Mobile that is valid, else
        the first valid mobile; when none is, the first given (its error is the row's)."""
        typed: list[str] = []
        others: list[str] = []
        pairs = self.google or ((None, at),)
        for type_at, value_at in pairs:
            value = cells[value_at] if value_at < len(cells) else ""
            kind = cells[type_at] if type_at is not None and type_at < len(cells) else ""
            numbers = [part.strip() for part in value.split(MULTI) if part.strip()]
            (typed if "mobile" in kind.casefold() else others).extend(numbers)
        for raw in typed + others:
            if normalise(raw, self.region, landlines=self.landlines)[0]:
                return raw
        return (typed + others + [""])[0]


def _first_filled(cells: list[str]) -> str:
    return next((c for c in cells if c.strip()), "")


@contextmanager
def _guarded() -> Iterator[None]:
    """Turns the readers' own errors into RecipientListError (one line, naming the file)."""
    try:
        yield
    except (EncodingError, SheetError) as exc:
        raise RecipientListError(str(exc)) from None


def _check_file(path: Path) -> None:
    if not path.exists():
        raise RecipientListError(f"{path}: no such file")
    if not path.is_file():
        raise RecipientListError(f"{path} is not a file")


def _open(path: Path) -> IO[bytes]:
    _check_file(path)
    try:
        return path.open("rb")
    except OSError as exc:
        raise RecipientListError(f"{path} cannot be read: {exc.strerror or exc}") from None


def _plain_column(path: Path, column: str | None) -> None:
    if column is not None and column.strip().casefold() != "mobile":
        raise RecipientListError(
            f"{path} is a plain list of numbers without a header, so it has no"
            f" column {column!r}; leave out --column"
        )


def _first_line(lines: Iterator[str]) -> tuple[int, str]:
    """(line number, text) of the first line that is not blank; (0, "") if there is none."""
    for number, text in enumerate(lines, start=1):
        if text.strip():
            return number, text
    return 0, ""


def _checked(path: Path, reader: Any, offset: int) -> Iterator[list[str]]:
    """csv rows, with csv's own errors (a runaway quote) turned into one line for the user."""
    start = offset + 1
    try:
        for cells in reader:
            yield cells
            start = offset + reader.line_num + 1
    except csv.Error as exc:
        raise RecipientListError(
            f"{path}: the row starting on line {start} cannot be read as CSV ({exc});"
            " check its quotes"
        ) from None


def _read_header(
    path: Path, first: str, column: str | None
) -> tuple[str, list[str], str, tuple[tuple[int | None, int], ...]]:
    """(delimiter, columns, number column, Google pairs) from the header line."""
    unquoted = re.sub(r'"[^"]*"', "", first)
    found = [d for d in DELIMITERS if d in unquoted]
    found.sort(key=unquoted.count, reverse=True)  # stable: ties keep DELIMITERS order
    tried: list[tuple[str, list[str]]] = []
    for delimiter in found or [","]:
        columns = [cell.strip() for cell in next(csv.reader([first], delimiter=delimiter))]
        tried.append((delimiter, columns))
        try:
            number_column, google = _choose_columns(path, columns, column)
        except _NoColumn:
            continue
        return delimiter, columns, number_column, google
    delimiter, columns = tried[0]
    raise _no_column_error(path, columns, column)


class _NoColumn(Exception):
    pass


def _choose_columns(
    path: Path, columns: list[str], column: str | None
) -> tuple[str, tuple[tuple[int | None, int], ...]]:
    """The number column, and the Google Contacts pairs when the list is such an export."""
    number_column = _number_column(path, columns, column)
    if number_column is not None:
        return number_column, ()
    if column is None:
        google = _google_pairs(columns)
        if google:
            return columns[google[0][1]], google
    raise _NoColumn


def _no_column_error(path: Path, columns: list[str], column: str | None) -> RecipientListError:
    shown_columns = ", ".join(c for c in columns if c) or "(none)"
    if column is not None:
        return RecipientListError(
            f"{path} has no column {column!r}; the columns are: {shown_columns}"
        )
    hint = ""
    if any(_LOOKS_LIKE_NUMBER.fullmatch(c) for c in columns):
        hint = " (the first line looks like data: a CSV list needs a header line)"
    return RecipientListError(
        f"{path} has no number column{hint}; the columns are: {shown_columns};"
        " name the number column with --column"
    )


def _google_pairs(columns: list[str]) -> tuple[tuple[int | None, int], ...]:
    """(type column, value column) of each "Phone N - Value", in N order."""
    types: dict[int, int] = {}
    values: dict[int, int] = {}
    for at, name in enumerate(columns):
        found = _GOOGLE.fullmatch(name.strip())
        if found:
            n = int(found.group(1))
            (values if found.group(2).lower() == "value" else types).setdefault(n, at)
    return tuple((types.get(n), values[n]) for n in sorted(values))


def header_key(name: str) -> str:
    """A header as compared with NUMBER_COLUMNS: no case, accents or separators."""
    folded = unicodedata.normalize("NFKD", name.casefold())
    return "".join(c for c in folded if not unicodedata.combining(c)).translate(_HEADER_NOISE)


def _number_column(path: Path, columns: list[str], wanted: str | None) -> str | None:
    if wanted is not None:
        wanted = wanted.strip()
        if wanted in columns:
            return wanted
        matches = [c for c in columns if c.casefold() == wanted.casefold()]
        if len(matches) > 1:
            raise RecipientListError(
                f"{path} has several columns named {wanted!r} ({', '.join(matches)});"
                " give --column with the exact case"
            )
        if matches:
            return matches[0]
        raise _no_column_error(path, columns, wanted)
    keys = [header_key(c) for c in columns]
    for group in NUMBER_COLUMNS:
        matches = list(dict.fromkeys(c for c, k in zip(columns, keys, strict=True) if k in group))
        if len(matches) > 1:
            raise RecipientListError(
                f"{path} has several number columns ({', '.join(matches)});"
                " choose one with --column"
            )
        if matches:
            return matches[0]
    return None


def read_numbers(path: str | Path, *, column: str | None = None) -> list[str]:
    """The numbers of a small file (an opt-out list) as given: one a line, or a CSV column."""
    recipients = RecipientList.open(path, column=column)
    return [raw for _, raw, _ in recipients._records() if raw]
