"""Lists as people export them, through `sms-dispatch send --dry-run` (the real CLI process):
each fixture under tests/fixtures/exports is built from the export's documented header."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from dispatcher.campaigns import LoadRequest, NothingToSend, load_campaign
from dispatcher.suppression import add_numbers
from tests.processes import ROOT, base_env, cli
from workers.database import get_engine

EXPORTS = ROOT / "tests" / "fixtures" / "exports"


def run_cli(tmp_path: Path, *args: str, db: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {
        "SMS_DATA_DIR": str(tmp_path / "data"),
        "SMS_REGION": "SE",
        # A real send checks the gateway settings first; nothing here reaches a gateway.
        "SMS_GATEWAY_URL": "http://127.0.0.1:9",
        "SMS_GATEWAY_KEY": "unused",
    }
    if db:
        env["SMS_DATABASE_URL"] = db
    return cli(*args, env=env, check=False, cwd=tmp_path)


def dry_run(tmp_path: Path, name: str, *extra: str, text: str = "Hi") -> dict[str, Any]:
    result = run_cli(
        tmp_path,
        "send",
        str(EXPORTS / name),
        "--sender",
        "Shop",
        "--text",
        text,
        "--purpose",
        "service",
        "--dry-run",
        "--json",
        *extra,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_google_contacts_takes_the_first_mobile_else_the_first_valid_mobile(tmp_path):
    data = dry_run(tmp_path, "google-contacts.csv", text="Hi {Given Name}")
    assert data["counts"] == {"queued": 3, "invalid": 1}
    assert "Google Contacts" in data["source"]
    assert data["sample"] == "Hi Anna"
    # Dan has only a home landline.
    assert data["problems"] == [
        {
            "line": 5,
            "mobile_as_given": "08-123 456 79",
            "status": "invalid",
            "error": "not a mobile number",
        }
    ]


def test_google_contacts_rows_pick_the_numbers_the_rule_says(tmp_path):
    from dispatcher.recipients import RecipientList

    got = [r.mobile for r in RecipientList.open(EXPORTS / "google-contacts.csv").rows()]
    # Anna: the Mobile-typed one, not Home; Bo: the first of two Mobiles joined by " ::: ";
    # Cai: no Mobile type, so the first valid mobile among Work numbers.
    assert got == ["46701234567", "46707654321", "46733332211", None]


def test_hubspot_prefers_the_mobile_column_and_says_so(tmp_path):
    data = dry_run(tmp_path, "hubspot.csv")
    assert data["source"].startswith("numbers from column 'Mobile Phone Number'")
    assert data["counts"] == {"queued": 2, "invalid": 1}  # Cai has no mobile
    human = run_cli(
        tmp_path,
        *("send", str(EXPORTS / "hubspot.csv"), "--sender", "Shop", "--text", "Hi"),
        *("--purpose", "service", "--dry-run"),
    )
    assert "numbers from column 'Mobile Phone Number'" in human.stdout


@pytest.mark.parametrize(
    ("name", "column", "queued"),
    [
        ("outlook.csv", "Mobile Phone", 2),
        ("libreoffice.csv", "Telefon", 2),
        ("excel-csv-utf8.csv", "Mobilnummer", 2),
        ("german.csv", "Handynummer", 1),
        ("french.csv", "Téléphone portable", 1),
        ("spanish.csv", "Celular", 1),
        ("italian.csv", "Cellulare", 1),
        ("dutch.csv", "Mobiel", 1),
        ("portuguese.csv", "Telemóvel", 1),
    ],
)
def test_exports_load_without_editing(tmp_path, name, column, queued):
    region = {
        "german.csv": "DE",
        "french.csv": "FR",
        "spanish.csv": "ES",
        "italian.csv": "IT",
        "dutch.csv": "NL",
        "portuguese.csv": "PT",
    }.get(name, "SE")
    data = dry_run(tmp_path, name, "--region", region)
    assert data["counts"] == {"queued": queued}
    assert data["source"].startswith(f"numbers from column {column!r}")


def test_mailchimp_us_numbers_stay_american(tmp_path):
    data = dry_run(tmp_path, "mailchimp.csv", "--region", "US")
    assert data["counts"] == {"queued": 2}
    # Read with the wrong region they are refused, never sent to Egypt (+20).
    result = run_cli(
        tmp_path,
        *("send", str(EXPORTS / "mailchimp.csv"), "--sender", "Shop", "--text", "Hi"),
        *("--purpose", "service", "--dry-run", "--json"),
    )
    assert result.returncode != 0
    data = json.loads(result.stdout)
    assert data["counts"] == {"invalid": 2}
    assert {p["error"] for p in data["problems"]} == {"not a valid number for SE"}


@pytest.mark.parametrize(
    ("name", "encoding"),
    [
        ("excel-csv-ansi.csv", "windows-1252"),
        ("excel-unicode-text.txt", "utf-16"),
        ("excel-csv-utf8.csv", "utf-8 (with BOM)"),
        ("libreoffice.csv", "utf-8"),
    ],
)
def test_the_encoding_read_is_printed(tmp_path, name, encoding):
    data = dry_run(tmp_path, name, text="Hej {Namn}" if "Namn" in _header(name) else "Hej")
    assert data["source"].endswith(f"read as {encoding}")
    assert data["counts"] == {"queued": 2}
    if "Namn" in _header(name):
        assert data["sample"] == "Hej Åsa Öberg"


def _header(name: str) -> str:
    raw = (EXPORTS / name).read_bytes()
    return raw.decode("utf-16") if raw.startswith(b"\xff\xfe") else raw.decode("cp1252")


def test_encoding_option_overrides_detection(tmp_path):
    # Read as UTF-8 the cp1252 file has a byte UTF-8 refuses: one line naming line and byte.
    result = run_cli(
        tmp_path,
        *("send", str(EXPORTS / "excel-csv-ansi.csv"), "--sender", "Shop", "--text", "Hi"),
        *("--purpose", "service", "--dry-run", "--encoding", "utf-8"),
    )
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "line 2 is not utf-8 (with BOM) (byte 0xc5 at byte 1 of the line)" in result.stderr
    data = dry_run(tmp_path, "excel-csv-ansi.csv", "--encoding", "cp1252")
    assert data["source"].endswith("read as windows-1252")


@pytest.mark.parametrize("name", ["workbook.xlsx", "workbook.ods"])
def test_workbooks_load_from_the_first_sheet_or_the_named_one(tmp_path, name):
    data = dry_run(tmp_path, name, text="Hej {Namn}")
    assert data["counts"] == {"queued": 3}
    assert data["sample"] == "Hej Åsa Öberg"
    assert data["source"] == "numbers from column 'Mobil'; read as sheet 'Kunder'"
    data = dry_run(tmp_path, name, "--sheet", "export uk")
    assert data["counts"] == {"queued": 1}
    result = run_cli(
        tmp_path,
        *("send", str(EXPORTS / name), "--sender", "Shop", "--text", "Hi"),
        *("--purpose", "service", "--dry-run", "--sheet", "Nope"),
    )
    assert result.returncode != 0
    assert "has no sheet 'Nope'; its sheets are: Kunder, Export UK" in result.stderr


# Reads a workbook's first sheet through sheet_rows and prints the rows and its peak RSS (KB).
# VmHWM, not getrusage's ru_maxrss: Linux carries the parent's peak over fork and exec into
# ru_maxrss, and pytest's (over 100 MB) would hide the reader's own.
_READ_ALL = """
import re, sys
from pathlib import Path
from dispatcher.spreadsheets import sheet_rows
rows = sum(1 for _ in sheet_rows(Path(sys.argv[1])))
status = Path("/proc/self/status").read_text()
print(rows, re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1))
"""


def _write_list(path: Path, rows: int) -> Path:
    from openpyxl import Workbook

    book = Workbook(write_only=True)
    sheet = book.create_sheet("List")
    sheet.append(["mobile", "name", "consent"])
    for i in range(rows):
        sheet.append([46700000000 + i, f"Name {i}", "yes"])
    book.save(path)
    return path


def _peak_kb_reading(path: Path) -> tuple[int, int]:
    result = subprocess.run(
        [sys.executable, "-c", _READ_ALL, str(path)],
        env=base_env({"PYTHONPATH": str(ROOT)}),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr
    rows, peak = result.stdout.split()
    return int(rows), int(peak)


def test_an_xlsx_sheet_is_streamed_in_flat_memory(tmp_path):
    # Ten times the rows, the same peak. python-calamine (the reader before) builds the whole
    # sheet first: 18.2 MB for 20,000 rows, 66.3 MB for 200,000. openpyxl as it comes keeps
    # an emptied element a row: 26.5 and 42.3 MB (spreadsheets._tune_openpyxl prunes them).
    small = _peak_kb_reading(_write_list(tmp_path / "small.xlsx", 20_000))
    big = _peak_kb_reading(_write_list(tmp_path / "big.xlsx", 200_000))
    assert (small[0], big[0]) == (20_001, 200_001)
    assert big[1] < small[1] + 10 * 1024, f"peak RSS {small[1]} KB for 20,000, {big[1]} KB"


def test_xlsx_cells_read_as_calamine_read_them(tmp_path):
    from datetime import date, datetime, time, timedelta

    from openpyxl import Workbook
    from python_calamine import CalamineWorkbook

    from dispatcher.spreadsheets import cell_text, sheet_rows

    book = Workbook()
    sheet = book.active
    sheet.title = "List"
    sheet.append(["mobile", "name", "when", "n"])
    sheet.append([46701234567, "  Åsa ", datetime(2031, 3, 30, 10, 30), 1.5])
    sheet.append([4.6701234567e10, "Bo", date(2031, 3, 30), True])
    sheet.append(["+46 70-123 45 67", None, time(9, 15), -3])
    sheet.append([None, "Cai", timedelta(hours=30), 0.1])
    sheet["A7"] = "0701234567"  # row 6 left out of the XML altogether
    sheet["D7"] = "=1/0"  # given its cached value, #DIV/0!, below
    path = tmp_path / "list.xlsx"
    book.save(path)
    # A stale <dimension>, as some writers leave it: the rows past it are still read.
    with zipfile.ZipFile(path) as zipped:
        parts = {name: zipped.read(name) for name in zipped.namelist()}
    xml = parts["xl/worksheets/sheet1.xml"].decode()
    formula = '<c r="D7"><f>1/0</f><v /></c>'
    assert '<dimension ref="A1:D7"' in xml and formula in xml
    xml = xml.replace(formula, '<c r="D7" t="e"><f>1/0</f><v>#DIV/0!</v></c>')
    parts["xl/worksheets/sheet1.xml"] = xml.replace('ref="A1:D7"', 'ref="A1:B2"').encode()
    with zipfile.ZipFile(path, "w") as zipped:
        for name, data in parts.items():
            zipped.writestr(name, data)

    calamine = CalamineWorkbook.from_path(str(path)).get_sheet_by_name("List").iter_rows()
    expected = [[cell_text(value) for value in row] for row in calamine]
    got = list(sheet_rows(path))
    assert [number for number, _ in got] == [1, 2, 3, 4, 5, 6, 7]
    # openpyxl ends a row at its last cell where calamine pads it to the sheet's width.
    assert [cells + [""] * (4 - len(cells)) for _, cells in got] == expected
    assert got[1][1] == ["46701234567", "  Åsa ", "2031-03-30T10:30:00", "1.5"]
    assert got[2][1] == ["46701234567", "Bo", "2031-03-30", "TRUE"]
    assert got[6][1] == ["0701234567", "", "", ""]  # the error cell reads as empty


@pytest.mark.parametrize("suffix", [".xlsx", ".ods"])
def test_row_numbers_count_the_empty_rows_above_the_list(tmp_path, suffix):
    from dispatcher.spreadsheets import sheet_rows
    from tests.workbooks import write_ods, write_xlsx

    write = write_xlsx if suffix == ".xlsx" else write_ods
    path = write(tmp_path / f"list{suffix}", [("S", [[], [], ["name", "mobile"], ["Ann", 1]])])
    rows = [(number, cells) for number, cells in sheet_rows(path) if any(cells)]
    assert rows == [(3, ["name", "mobile"]), (4, ["Ann", "1"])]


def test_an_xlsx_sheet_is_read_no_further_than_asked(tmp_path):
    from dispatcher.recipients import RecipientList, RecipientListError
    from dispatcher.spreadsheets import sheet_name
    from tests.workbooks import write_xlsx

    rows = [["name", "mobile"], *([f"P{i}", "0701234567"] for i in range(1000))]
    path = write_xlsx(tmp_path / "list.xlsx", [("Kunder", rows)])
    with zipfile.ZipFile(path) as zipped:
        parts = {name: zipped.read(name) for name in zipped.namelist()}
    # Cut off past row 500, and with no <dimension> (as openpyxl's write-only mode writes it):
    # opening the workbook must not parse the rows to find the sheet's size.
    sheet = parts["xl/worksheets/sheet1.xml"]
    assert b"<dimension" not in sheet
    parts["xl/worksheets/sheet1.xml"] = sheet[: sheet.index(b'<row r="500">')] + b"<row <<"
    with zipfile.ZipFile(path, "w") as zipped:
        for name, data in parts.items():
            zipped.writestr(name, data)
    assert sheet_name(path, None) == "Kunder"
    recipients = RecipientList.open(path)  # reads the header and the first row only
    with pytest.raises(RecipientListError) as caught:
        sum(1 for _ in recipients.rows())
    assert str(caught.value).startswith(f"{path} cannot be read as a workbook (not well-formed")
    assert "\n" not in str(caught.value)


def test_an_unreadable_xlsx_is_one_line(tmp_path):
    path = tmp_path / "list.xlsx"
    path.write_bytes(b"mobile\n0701234567\n")  # a CSV saved under a workbook's name
    result = run_cli(
        tmp_path,
        *("send", str(path), "--sender", "Shop", "--text", "Hi"),
        *("--purpose", "service", "--dry-run"),
    )
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "list.xlsx cannot be read as a workbook (File is not a zip file)" in result.stderr


def test_dry_run_lists_the_first_20_problem_rows_and_one_text(tmp_path):
    rows = ["name;mobile"] + [f"P{i};12{i:02d}" for i in range(25)] + ["Ok;0701234567"]
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    result = run_cli(
        tmp_path,
        *("send", str(path), "--sender", "Shop", "--text", "Hej {name}"),
        *("--purpose", "service", "--dry-run"),
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "first text   'Hej Ok'" in out
    assert "the first 20 rows that will not be sent:" in out
    assert "line 2: '1200' invalid (not a valid number for SE)" in out
    assert "line 21: '1219' invalid" in out and "line 22:" not in out


def test_a_list_with_no_sendable_row_is_an_error_and_leaves_nothing(tmp_path):
    path = tmp_path / "landlines.csv"
    path.write_text("name;mobile\nA;08-123 456 78\nB;abc0701234567\n", encoding="utf-8")
    args = ("send", str(path), "--sender", "Shop", "--text", "Hi", "--purpose", "service")
    result = run_cli(tmp_path, *args)
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "no row can be sent (2 invalid; line 2: '08-123 456 78' not a mobile number)" in (
        result.stderr
    )
    assert json.loads(run_cli(tmp_path, "campaigns", "--json").stdout) == []
    dry = run_cli(tmp_path, *args, "--dry-run")
    assert dry.returncode != 0 and "no row can be sent" in dry.stderr
    landlines = run_cli(tmp_path, *args, "--dry-run", "--json", "--allow-landlines")
    assert landlines.returncode == 0, landlines.stderr
    assert json.loads(landlines.stdout)["counts"] == {"queued": 1, "invalid": 1}


@pytest.fixture
def ledger(db_url, make_settings):
    settings = make_settings(database_url=db_url)
    return settings, get_engine(settings)


def test_dry_run_counts_opt_outs_like_the_real_send(ledger, tmp_path):
    settings, engine = ledger
    path = tmp_path / "l.csv"
    path.write_text("mobile\n0701234567\n0707654321\n", encoding="utf-8")
    add_numbers(engine, ["46707654321"])
    request = LoadRequest(path=path, sender="Shop", template="Hi")
    dry = load_campaign(settings, engine, request, dry_run=True)
    real = load_campaign(settings, engine, request)
    assert dry.counts == real.counts == {"queued": 1, "suppressed": 1}


def test_dry_run_through_the_cli_reads_the_opt_out_list(tmp_path):
    path = tmp_path / "l.csv"
    path.write_text("mobile\n0701234567\n0707654321\n", encoding="utf-8")
    added = run_cli(tmp_path, "suppress", "add", "0707654321")
    assert added.returncode == 0, added.stderr
    data = json.loads(
        run_cli(
            tmp_path,
            *("send", str(path), "--sender", "S", "--text", "Hi", "--purpose", "service"),
            *("--dry-run", "--json"),
        ).stdout
    )
    assert data["counts"] == {"queued": 1, "suppressed": 1}


def test_no_sendable_row_through_load_campaign_removes_the_campaign(ledger, tmp_path):
    settings, engine = ledger
    path = tmp_path / "l.csv"
    path.write_text("mobile\n0701234567\n", encoding="utf-8")
    add_numbers(engine, ["46701234567"])
    with pytest.raises(NothingToSend, match="no row can be sent \\(1 suppressed"):
        load_campaign(settings, engine, LoadRequest(path=path, sender="S", template="Hi"))
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM campaign").scalar_one() == 0
        assert conn.exec_driver_sql("SELECT count(*) FROM message").scalar_one() == 0


def test_cells_with_copy_s_special_characters_are_stored_as_given(ledger, tmp_path):
    # PostgreSQL loads rows by COPY (times given as text): a backslash, tab, newline or carriage
    # return in a name (so in the text) or in the number cell must come back unchanged, and
    # "\\N" is text, not NULL.
    settings, engine = ledger
    names = ["a\\b", "tab\there", "two\nlines", "cr\rx", "\\N", "\\.", "Åsa 😀"]
    path = tmp_path / "l.csv"
    rows = [f'"{name}",070123456{i}' for i, name in enumerate(names)]
    path.write_text("name,mobile\n" + "\n".join(rows) + '\nx,"07\\1\t2"\n', encoding="utf-8")
    request = LoadRequest(path=path, sender="S", template="Hi {name}")
    summary = load_campaign(settings, engine, request)
    assert summary.counts == {"queued": len(names), "invalid": 1}
    with engine.connect() as conn:
        stored = conn.exec_driver_sql(
            "SELECT line, raw_mobile, mobile, text, last_error, send_after, final_at,"
            " created_at FROM message ORDER BY line"
        ).all()
    assert [r.text for r in stored[:-1]] == [f"Hi {name}" for name in names]
    assert [r.raw_mobile for r in stored] == [f"070123456{i}" for i in range(7)] + ["07\\1\t2"]
    assert stored[-1].mobile is None and stored[-1].last_error and stored[-1].text is None
    assert stored[-1].final_at is not None and stored[0].final_at is None
    assert all(r.send_after is None for r in stored)


# --- reports and status -------------------------------------------------------------------


def _loaded(tmp_path: Path, *extra: str) -> int:
    path = tmp_path / "l.csv"
    path.write_text("name;mobile\nÅsa;0701234567\nBo;0707654321\nX;12\n", encoding="utf-8")
    result = run_cli(
        tmp_path,
        *("send", str(path), "--sender", "Shop", "--text", "Hej {name}", "--purpose", "service"),
        *("--json", *extra),
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["campaign"]


def test_report_file_has_a_bom_and_is_never_silently_overwritten(tmp_path):
    campaign = _loaded(tmp_path, "--at", "2099-01-01T09:00")
    out = tmp_path / "report.csv"
    first = run_cli(tmp_path, "report", str(campaign), "--out", str(out))
    assert first.returncode == 0, first.stderr
    data = out.read_bytes()
    assert data.startswith(b"\xef\xbb\xbfline,")
    out.write_text("my notes", encoding="utf-8")
    again = run_cli(tmp_path, "report", str(campaign), "--out", str(out))
    assert again.returncode != 0
    assert again.stderr.strip() == f"sms-dispatch: {out} exists; --force replaces it"
    assert out.read_text(encoding="utf-8") == "my notes"
    forced = run_cli(tmp_path, "report", str(campaign), "--out", str(out), "--force")
    assert forced.returncode == 0, forced.stderr
    assert out.read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".part")) == []


def test_a_failed_report_leaves_no_part_file(tmp_path):
    _loaded(tmp_path)
    out = tmp_path / "report.csv"
    missing = run_cli(tmp_path, "report", "999", "--out", str(out))
    assert missing.returncode != 0
    assert not out.exists() and not (tmp_path / "report.csv.part").exists()


def test_status_of_an_at_campaign_shows_when_it_starts(tmp_path):
    campaign = _loaded(tmp_path, "--at", "2099-01-01T09:00", "--tz", "Europe/Stockholm")
    shown = run_cli(tmp_path, "status", str(campaign))
    assert "starts at 2099-01-01T08:00:00+00:00 (UTC)" in shown.stdout, shown.stdout


def test_status_of_a_windowed_campaign_shows_when_the_window_opens(tmp_path):
    # A window that is not open now: 01:00-01:01 Stockholm time on one weekday away.
    from datetime import UTC, datetime, timedelta
    from zoneinfo import ZoneInfo

    now = datetime.now(UTC).astimezone(ZoneInfo("Europe/Stockholm"))
    day = ("MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN")[(now + timedelta(days=3)).weekday()]
    campaign = _loaded(tmp_path, "--window", "01:00-01:01", "--days", day)
    data = json.loads(run_cli(tmp_path, "status", str(campaign), "--json").stdout)
    assert data["waiting_for_window"] == 2
    opens = datetime.fromisoformat(data["window_opens"])
    assert opens.astimezone(ZoneInfo("Europe/Stockholm")).strftime("%a %H:%M")[4:] == "01:00"
    shown = run_cli(tmp_path, "status", str(campaign)).stdout
    assert f"2 waiting for their send window; the next window opens {data['window_opens']}" in (
        shown
    )


def test_cancel_says_how_many_will_not_be_sent_and_status_shows_the_same(tmp_path):
    campaign = _loaded(tmp_path, "--at", "2099-01-01T09:00")
    cancelled = run_cli(tmp_path, "cancel", str(campaign))
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout.strip() == f"campaign {campaign} cancelled; 2 messages will not be sent"
    status = run_cli(tmp_path, "status", str(campaign)).stdout
    assert "2 messages will not be sent (cancelled)" in status
    assert (
        json.loads(run_cli(tmp_path, "status", str(campaign), "--json").stdout)["counts"][
            "cancelled"
        ]
        == 2
    )


def test_the_report_carries_the_list_s_own_columns_beside_the_outcome(tmp_path):
    import csv
    import io

    campaign = _loaded(tmp_path, "--at", "2099-01-01T09:00")
    out = run_cli(tmp_path, "report", str(campaign)).stdout
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0][-2:] == ["name", "list:mobile"]
    assert [(r[0], r[4], r[-2]) for r in rows[1:]] == [
        ("2", "queued", "Åsa"),
        ("3", "queued", "Bo"),
        ("4", "invalid", "X"),
    ]
    # A list changed since the load is not trusted: the columns stay empty.
    (tmp_path / "l.csv").write_text("name;mobile\nZed;0709999999\n", encoding="utf-8")
    rows = list(csv.reader(io.StringIO(run_cli(tmp_path, "report", str(campaign)).stdout)))
    assert [r[-2:] for r in rows[1:]] == [["", ""]] * 3
