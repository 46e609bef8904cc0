"""Benchmark: reading every row of an `.xlsx` list, the streaming reader against python-calamine.

Writes each --rows list (mobile, name, consent; openpyxl's write-only mode), then reads all its
rows in a fresh process each: through `dispatcher.spreadsheets.sheet_rows` (openpyxl, streamed)
and through python-calamine directly (the reader `.xlsx` had before), both turning every cell
into text with `cell_text`. Prints rows, seconds, rows/s and the reading process's peak RSS.

    .venv/bin/python bench/workbook_memory.py --rows 100000,1000000

Peak RSS is the process's VmHWM: getrusage's ru_maxrss would carry over the peak of the
process that started it (this one, after writing the list).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
READERS = ("sheet_rows", "calamine")


def write_list(path: Path, rows: int) -> None:
    from openpyxl import Workbook

    book = Workbook(write_only=True)
    sheet = book.create_sheet("List")
    sheet.append(["mobile", "name", "consent"])
    for i in range(rows):
        # Numbers typed as numbers, as most lists have them; names all different.
        sheet.append([46700000000 + i, f"Name {i}", "yes" if i % 10 else "no"])
    book.save(path)


def _peak_mb() -> float:
    status = Path("/proc/self/status").read_text()
    found = re.search(r"VmHWM:\s+(\d+) kB", status)
    assert found is not None
    return int(found.group(1)) / 1024


def read_all(reader: str, path: Path) -> dict[str, float]:
    """Run in the child: read every row with `reader`; rows, seconds and peak RSS in MB."""
    from dispatcher.spreadsheets import cell_text, sheet_rows

    start = time.perf_counter()
    rows = 0
    if reader == "sheet_rows":
        for _ in sheet_rows(path):
            rows += 1
    else:
        from python_calamine import CalamineWorkbook

        book = CalamineWorkbook.from_path(str(path))
        try:
            sheet = book.get_sheet_by_name(book.sheet_names[0])
            for row in sheet.iter_rows():
                [cell_text(value) for value in row]
                rows += 1
        finally:
            book.close()
    return {"rows": rows, "seconds": time.perf_counter() - start, "peak_mb": _peak_mb()}


def measure(reader: str, path: Path) -> dict[str, float]:
    result = subprocess.run(
        [sys.executable, __file__, "--read", reader, str(path)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},  # this checkout, not an installed copy
        capture_output=True,
        text=True,
        check=True,
    )
    data: dict[str, float] = json.loads(result.stdout)
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="100000,1000000", help="list sizes, comma-separated")
    parser.add_argument("--read", nargs=2, metavar=("READER", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.read:
        print(json.dumps(read_all(args.read[0], Path(args.read[1]))))
        return
    sizes = [int(n) for n in args.rows.split(",")]
    with tempfile.TemporaryDirectory(prefix="workbook-bench-") as tmp:
        for size in sizes:
            path = Path(tmp) / f"list-{size}.xlsx"
            start = time.perf_counter()
            write_list(path, size)
            mb = path.stat().st_size / 1024 / 1024
            took = time.perf_counter() - start
            print(f"{size:,} rows: wrote {path.name} ({mb:.1f} MB) in {took:.1f} s", flush=True)
            for reader in READERS:
                got = measure(reader, path)
                print(
                    f"  {reader:<10} rows {int(got['rows']):,}  {got['seconds']:.1f} s"
                    f"  {got['rows'] / got['seconds']:,.0f} rows/s"
                    f"  peak RSS {got['peak_mb']:.1f} MB",
                    flush=True,
                )
            path.unlink()


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
