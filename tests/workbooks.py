# ruff: noqa: E501 (the XML boilerplate reads best unbroken)
"""Minimal .xlsx and .ods writers (stdlib only), streamed, for fixtures and the workbook bench.

Each sheet is a list of rows; a cell is a str (a text cell) or an int/float (a number cell,
the way a spreadsheet stores a number typed without formatting).
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from xml.sax.saxutils import escape

Cell = str | int | float
Sheet = tuple[str, Iterable[Sequence[Cell]]]

_XLSX_TYPES = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">
<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>
<Default Extension="xml" ContentType="application/xml"/>
<Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>
{sheets}
</Types>"""
_XLSX_SHEET_TYPE = (
    '<Override PartName="/xl/worksheets/sheet{n}.xml" ContentType="application/'
    'vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
)
_RELS = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">
<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/>
</Relationships>"""
_WORKBOOK = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships">
<sheets>{sheets}</sheets>
</workbook>"""
_WORKBOOK_RELS = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">
{rels}
</Relationships>"""
_SHEET_REL = (
    '<Relationship Id="rId{n}" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
    'relationships/worksheet" Target="worksheets/sheet{n}.xml"/>'
)


def _column(index: int) -> str:
    name = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        name = chr(65 + rest) + name
    return name


def write_xlsx(path: Path, sheets: Sequence[Sheet]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as book:
        types = "\n".join(_XLSX_SHEET_TYPE.format(n=n) for n in range(1, len(sheets) + 1))
        book.writestr("[Content_Types].xml", _XLSX_TYPES.format(sheets=types))
        book.writestr("_rels/.rels", _RELS)
        entries = "".join(
            f'<sheet name="{escape(name)}" sheetId="{n}" r:id="rId{n}"/>'
            for n, (name, _) in enumerate(sheets, start=1)
        )
        book.writestr("xl/workbook.xml", _WORKBOOK.format(sheets=entries))
        rels = "\n".join(_SHEET_REL.format(n=n) for n in range(1, len(sheets) + 1))
        book.writestr("xl/_rels/workbook.xml.rels", _WORKBOOK_RELS.format(rels=rels))
        for n, (_, rows) in enumerate(sheets, start=1):
            with book.open(f"xl/worksheets/sheet{n}.xml", "w", force_zip64=True) as out:
                out.write(
                    b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<worksheet'
                    b' xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
                    b"<sheetData>"
                )
                for r, row in enumerate(rows, start=1):
                    cells = []
                    for c, value in enumerate(row):
                        ref = f"{_column(c)}{r}"
                        if isinstance(value, str):
                            if value:
                                cells.append(
                                    f'<c r="{ref}" t="inlineStr"><is><t>{escape(value)}</t></is></c>'
                                )
                        else:
                            cells.append(f'<c r="{ref}"><v>{value}</v></c>')
                    out.write(f'<row r="{r}">{"".join(cells)}</row>'.encode())
                out.write(b"</sheetData></worksheet>")
    return path


_ODS_MANIFEST = """<?xml version="1.0" encoding="UTF-8"?>
<manifest:manifest xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0" manifest:version="1.2">
<manifest:file-entry manifest:full-path="/" manifest:media-type="application/vnd.oasis.opendocument.spreadsheet"/>
<manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml"/>
</manifest:manifest>"""
_ODS_HEAD = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<office:document-content'
    ' xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0"'
    ' xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0"'
    ' xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" office:version="1.2">'
    "<office:body><office:spreadsheet>"
)


def write_ods(path: Path, sheets: Sequence[Sheet]) -> Path:
    with zipfile.ZipFile(path, "w") as book:
        # The mimetype entry comes first and uncompressed, as the format requires.
        book.writestr("mimetype", "application/vnd.oasis.opendocument.spreadsheet")
        book.writestr("META-INF/manifest.xml", _ODS_MANIFEST, zipfile.ZIP_DEFLATED)
        with book.open("content.xml", "w", force_zip64=True) as out:
            out.write(_ODS_HEAD.encode())
            for name, rows in sheets:
                out.write(f'<table:table table:name="{escape(name)}">'.encode())
                for row in rows:
                    cells = []
                    for value in row:
                        if isinstance(value, str):
                            cells.append(
                                '<table:table-cell office:value-type="string">'
                                f"<text:p>{escape(value)}</text:p></table:table-cell>"
                            )
                        else:
                            cells.append(
                                '<table:table-cell office:value-type="float"'
                                f' office:value="{value}"><text:p>{value}</text:p>'
                                "</table:table-cell>"
                            )
                    out.write(f"<table:table-row>{''.join(cells)}</table:table-row>".encode())
                out.write(b"</table:table>")
            out.write(b"</office:spreadsheet></office:body></office:document-content>")
    return path
