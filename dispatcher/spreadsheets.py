"""Workbook lists: one sheet's rows as text cells, the way the same sheet saved as CSV would
give them.

`.xlsx` and `.xlsm` are streamed with openpyxl in read-only mode: the sheet's XML is parsed
one row at a time, so memory does not grow with the number of rows (text that the file keeps in
its shared-string table, one copy of each distinct text, is held while the sheet is read).
`.xls`, `.xlsb` and `.ods` are read with python-calamine, which has no streaming reader:
opening a sheet builds all of its cells in memory, so memory grows with the sheet.
"""

from __future__ import annotations

import warnings
import zipfile
import zlib
from collections.abc import Callable, Generator, Iterable, Iterator
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import IO, Any
from xml.etree.ElementTree import Element, ParseError

SUFFIXES = frozenset({".xlsx", ".xlsm", ".xlsb", ".xls", ".ods"})
STREAMED = frozenset({".xlsx", ".xlsm"})

# What openpyxl raises for a file that is not a readable workbook: not a zip, a part missing
# (KeyError) or a shared string (IndexError), XML it cannot parse or whose values do not fit
# (ParseError, ValueError, TypeError), a damaged zip entry (zlib.error, EOFError, BadZipFile
# for a bad CRC).
_OPENPYXL_ERRORS: tuple[type[BaseException], ...] = (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    LookupError,
    OSError,
    ParseError,
    TypeError,
    ValueError,
)
# openpyxl gives an error cell (`#N/A` from a failed lookup, ...) as its code; python-calamine,
# which read these files before, gives "" and so do we: a formula error is not a value.
_ERROR_CODES = frozenset(
    {"#NULL!", "#DIV/0!", "#VALUE!", "#REF!", "#NAME?", "#NUM!", "#N/A", "#GETTING_DATA"}
    | {"#SPILL!", "#CALC!"}  # newer Excel's
)
_MAIN = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
_READ_ONCE = frozenset({f"{_MAIN}row", f"{_MAIN}si"})  # a sheet's row, a shared string


class SheetError(ValueError):
    """A workbook that cannot be read, or no such sheet; one line for the user."""


def is_workbook(path: Path) -> bool:
    return path.suffix.lower() in SUFFIXES


def sheet_name(path: Path, sheet: str | None) -> str:
    """The name of the sheet `sheet` names (exact, else ignoring case), or of the first."""
    if path.suffix.lower() in STREAMED:
        book = _open_xlsx(path)
        try:
            return _pick_sheet(path, book.sheetnames, sheet)
        finally:
            book.close()
    from python_calamine import CalamineError, CalamineWorkbook

    try:
        calamine_book = CalamineWorkbook.from_path(str(path))
    except (CalamineError, OSError, ValueError) as exc:
        raise SheetError(f"{path} cannot be read as a workbook ({_first_line(exc)})") from None
    try:
        return _pick_sheet(path, calamine_book.sheet_names, sheet)
    finally:
        calamine_book.close()


def _pick_sheet(path: Path, names: list[str], sheet: str | None) -> str:
    if sheet is None:
        if not names:
            raise SheetError(f"{path} has no sheets")
        return names[0]
    wanted = [n for n in names if n == sheet] or [
        n for n in names if n.casefold() == sheet.strip().casefold()
    ]
    if not wanted:
        raise SheetError(f"{path} has no sheet {sheet!r}; its sheets are: {', '.join(names)}")
    return wanted[0]


def sheet_rows(
    path: Path, sheet: str | None = None
) -> Generator[tuple[int, list[str]], None, None]:
    """(row number as the spreadsheet shows it, cells as text) of every row of the sheet named
    `sheet`, or the first sheet. Rows come one at a time, converted as they are read.

    `.xlsx` rows start at column A and end at their last cell (an empty row has no cells), as
    CSV gives them; the others' start at the sheet's first used column and all are as wide as
    the sheet. Callers pad short rows."""
    if path.suffix.lower() in STREAMED:
        return _xlsx_rows(path, sheet)
    return _calamine_rows(path, sheet)


def _xlsx_rows(path: Path, sheet: str | None) -> Generator[tuple[int, list[str]], None, None]:
    from openpyxl.worksheet._read_only import ReadOnlyWorksheet

    book = _open_xlsx(path)
    try:
        name = _pick_sheet(path, book.sheetnames, sheet)
        worksheet = book[name]
        if not isinstance(worksheet, ReadOnlyWorksheet):
            raise SheetError(f"{path}: sheet {name!r} is a chart, not a sheet of cells")
        # The <dimension> a file declares can be stale (some writers never update it), and
        # openpyxl would stop at its last row and column: read every row the XML has instead.
        worksheet.reset_dimensions()
        # Any: types-openpyxl types iter_rows for the writable Worksheet only.
        cells: Any = worksheet
        rows: Iterator[tuple[object, ...]] = cells.iter_rows(values_only=True)
        number = 0  # row 1 first: openpyxl yields an empty row for each one the XML skips
        while True:
            try:
                values = next(rows)
            except StopIteration:
                return
            except _OPENPYXL_ERRORS as exc:
                raise SheetError(
                    f"{path} cannot be read as a workbook ({_first_line(exc)})"
                ) from None
            number += 1
            yield number, [_xlsx_text(value) for value in values]
    finally:
        book.close()


def _calamine_rows(path: Path, sheet: str | None) -> Generator[tuple[int, list[str]], None, None]:
    from python_calamine import CalamineError, CalamineWorkbook

    try:
        book = CalamineWorkbook.from_path(str(path))
    except (CalamineError, OSError, ValueError) as exc:
        raise SheetError(f"{path} cannot be read as a workbook ({_first_line(exc)})") from None
    try:
        data = book.get_sheet_by_name(_pick_sheet(path, book.sheet_names, sheet))
        # iter_rows starts at the sheet's row 1 even when the first used row is further down
        # (its columns start at the first used one), so the count gives the row number.
        for number, row in enumerate(data.iter_rows(), start=1):
            yield number, [cell_text(value) for value in row]
    except CalamineError as exc:
        raise SheetError(f"{path} cannot be read as a workbook ({_first_line(exc)})") from None
    finally:
        book.close()


def _open_xlsx(path: Path) -> Any:
    """The workbook in openpyxl's read-only mode (the sheets are parsed only when read)."""
    from openpyxl import load_workbook
    from openpyxl.utils.exceptions import InvalidFileException

    _tune_openpyxl()
    errors: tuple[type[BaseException], ...] = (InvalidFileException, *_OPENPYXL_ERRORS)
    try:
        return load_workbook(path, read_only=True, data_only=True)
    except errors as exc:
        raise SheetError(f"{path} cannot be read as a workbook ({_first_line(exc)})") from None


_tuned = False


def _tune_openpyxl() -> None:
    """Two changes to how openpyxl 3.1's read-only mode reads, so that a sheet is parsed once
    and in flat memory; what it reads is unchanged. Made once, for the process; another
    openpyxl version is left as it is (and tests in tests/test_lists.py fail).

    - It parses a sheet and the shared-string table with the standard library's iterparse and
      clears each <row> and each string <si> once read, but the emptied element stays in the
      tree under its parent: about 90 bytes a row (85 MB more for 1,000,000 rows) and as much
      again for each distinct text. Its readers get an iterparse that also takes those
      elements out of the tree once openpyxl is done with them.
    - Opening a workbook reads each sheet's <dimension> and, for a sheet without one (openpyxl's
      own write-only mode writes none), went on to the end of <sheetData>, parsing every row
      of every sheet before a single row was asked for. The look now stops where the rows
      start (a <dimension> comes before them). We read past a declared dimension anyway.
    """
    global _tuned
    if _tuned:
        return
    _tuned = True
    import openpyxl
    from openpyxl.reader import strings
    from openpyxl.worksheet import _reader
    from openpyxl.worksheet.dimensions import SheetDimension
    from openpyxl.xml import functions

    # Its warnings are about parts a list does not need (data validation, drawings, styles):
    # not for the user of a command that reads only the cells.
    warnings.filterwarnings("ignore", category=UserWarning, module=r"openpyxl\.")
    if not openpyxl.__version__.startswith("3.1."):
        return
    base: Callable[..., Iterable[tuple[str, Element]]] = functions.iterparse

    def iterparse(source: IO[bytes]) -> Iterator[tuple[str, Element]]:
        open_elements: list[Element] = []
        for event, element in base(source, events=("start", "end")):
            if event == "start":
                open_elements.append(element)
                continue
            open_elements.pop()
            yield event, element
            # openpyxl has read and cleared the element by the time it asks for the next
            # event. Only these two: a parent's own end event reads its other children.
            if element.tag in _READ_ONCE and open_elements:
                open_elements[-1].remove(element)

    dimension: Any = SheetDimension  # (its stubs type from_tree for lxml's elements)

    def parse_dimensions(parser: Any) -> object:
        for _, element in base(parser.source, events=("start",)):
            if element.tag == _reader.DIMENSION_TAG:  # its attributes are read by its start
                return dimension.from_tree(element).boundaries
            if element.tag == _reader.DATA_TAG:
                break
        return None

    for module in (_reader, strings):
        # Both import it by name in openpyxl 3.1 (the stubs do not declare it).
        if getattr(module, "iterparse", None) is base:
            module.iterparse = iterparse  # type: ignore[attr-defined]
    _reader.WorkSheetParser.parse_dimensions = parse_dimensions  # type: ignore[method-assign,assignment]


def _xlsx_text(value: object) -> str:
    """An openpyxl value as python-calamine's `cell_text` gives it for the same cell."""
    if value is None:
        return ""
    if type(value) is str:
        return "" if value in _ERROR_CODES else value
    if type(value) is datetime and value.time() == time():
        # A date cell: openpyxl makes every date a datetime, calamine a date at midnight.
        return value.date().isoformat()
    return cell_text(value)


def cell_text(value: object) -> str:
    """A cell as text: whole numbers without `.0` (a number typed as 46701234567 is stored as
    a float), dates in ISO form."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return str(value)
    return str(value)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
