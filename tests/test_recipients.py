"""Recipient lists: formats, encodings, header detection, streaming (numbers: test_numbers.py)."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from dispatcher.recipients import (
    RecipientList,
    RecipientListError,
    Row,
    read_numbers,
)


def write(tmp_path: Path, text: str, name: str = "list.csv", encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def rows(path: Path, **kwargs: str) -> list[Row]:
    return list(RecipientList.open(path, **kwargs).rows())


def error_of(path: Path, **kwargs: str) -> str:
    with pytest.raises(RecipientListError) as err:
        rows(path, **kwargs)
    message = str(err.value)
    assert "\n" not in message
    return message


# --- Reading lists: formats -------------------------------------------------------------------


def test_semicolon_list_from_swedish_spreadsheet_is_read(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "\ufeffNamn;Mobilnummer;Ort\r\n"
        "Åsa Öberg;070-123 45 67;Göteborg\r\n"
        "Bo;0046 70 765 43 21;Malmö\r\n",
    )
    recipients = RecipientList.open(path)
    assert recipients.delimiter == ";"
    assert recipients.columns == ["Namn", "Mobilnummer", "Ort"]
    assert recipients.number_column == "Mobilnummer"
    assert recipients.region == "SE"
    got = list(recipients.rows())
    assert [(r.line, r.raw, r.mobile, r.error) for r in got] == [
        (2, "070-123 45 67", "46701234567", None),
        (3, "0046 70 765 43 21", "46707654321", None),
    ]
    assert got[0].fields == {"Namn": "Åsa Öberg", "Mobilnummer": "070-123 45 67", "Ort": "Göteborg"}


def test_comma_list_is_read(tmp_path: Path) -> None:
    path = write(tmp_path, "name,phone\nEva,+44 7911 123456\n")
    recipients = RecipientList.open(path)
    assert (recipients.delimiter, recipients.number_column) == (",", "phone")
    assert [(r.mobile, r.fields["name"]) for r in recipients.rows()] == [("447911123456", "Eva")]


def test_tab_separated_list_is_read(tmp_path: Path) -> None:
    path = write(tmp_path, "msisdn\tname\n46701234567\tDan\n")
    recipients = RecipientList.open(path)
    assert (recipients.delimiter, recipients.number_column) == ("\t", "msisdn")
    assert [r.mobile for r in recipients.rows()] == ["46701234567"]


def test_list_without_bom_and_with_bom_read_the_same(tmp_path: Path) -> None:
    plain = write(tmp_path, "mobile;name\n0701234567;Anna\n", "a.csv")
    bom = write(tmp_path, "\ufeffmobile;name\n0701234567;Anna\n", "b.csv")
    assert RecipientList.open(bom).columns == ["mobile", "name"]
    assert [r.fields for r in rows(plain)] == [r.fields for r in rows(bom)]


def test_quoted_fields_may_hold_delimiters_quotes_and_line_breaks(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'name;mobile;note\n"Berg; Anna";"070-123 45 67";"says ""hi""\nand bye"\nBo;0701234568;x\n',
    )
    got = rows(path)
    assert got[0].fields == {
        "name": "Berg; Anna",
        "mobile": "070-123 45 67",
        "note": 'says "hi"\nand bye',
    }
    # The quoted line break puts Bo on physical line 4.
    assert [(r.line, r.mobile) for r in got] == [(2, "46701234567"), (4, "46701234568")]


def test_quoted_header_names_with_commas_do_not_fool_delimiter_detection(tmp_path: Path) -> None:
    path = write(tmp_path, '"Name, full";mobile\nAnna Berg;0701234567\n')
    recipients = RecipientList.open(path)
    assert recipients.delimiter == ";"
    assert recipients.columns == ["Name, full", "mobile"]


def test_short_rows_get_empty_values_and_long_rows_lose_extra_cells(tmp_path: Path) -> None:
    path = write(tmp_path, "mobile;name;city\n0701234567\n0701234568;Bo;Umeå;extra\n")
    assert [r.fields for r in rows(path)] == [
        {"mobile": "0701234567", "name": "", "city": ""},
        {"mobile": "0701234568", "name": "Bo", "city": "Umeå"},
    ]


def test_empty_lines_are_skipped_but_line_numbers_stay_physical(tmp_path: Path) -> None:
    path = write(tmp_path, "\n\nname;mobile\n\nAnna;0701234567\n;;\n  \nBo;0701234568\n\n")
    assert [(r.line, r.fields["name"]) for r in rows(path)] == [(5, "Anna"), (8, "Bo")]


def test_every_data_row_is_a_row_valid_or_not_and_duplicates_are_kept(tmp_path: Path) -> None:
    path = write(
        tmp_path, "name;mobile\nA;0701234567\nB;12345\nC;\nD;+46 70 123 45 67\nE;call me\n"
    )
    got = [(r.line, r.raw, r.mobile, r.error) for r in rows(path)]
    assert got == [
        (2, "0701234567", "46701234567", None),
        (3, "12345", None, "not a valid number for SE"),
        (4, "", None, "empty number"),
        (5, "+46 70 123 45 67", "46701234567", None),
        (6, "call me", None, "not a phone number"),
    ]


def test_region_reads_national_numbers_of_that_country(tmp_path: Path) -> None:
    path = write(tmp_path, "mobile\n07911 123456\n(201) 555-0123\n")
    assert rows(path, region="gb")[0].mobile == "447911123456"
    assert [r.mobile for r in rows(path, region="US")] == [None, "12015550123"]
    assert RecipientList.open(path, region="gb").region == "GB"


def test_unknown_region_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "mobile\n0701234567\n")
    assert "unknown region 'XX'" in error_of(path, region="XX")


# --- Plain lists ------------------------------------------------------------------------------


def test_plain_list_of_numbers_needs_no_header(tmp_path: Path) -> None:
    path = write(tmp_path, "+46 70-123 45 67\n\n0701234568\n  46701234569  \nnot a number\n")
    recipients = RecipientList.open(path)
    assert recipients.delimiter is None
    assert recipients.columns == ["mobile"]
    assert recipients.number_column == "mobile"
    got = list(recipients.rows())
    assert [(r.line, r.raw, r.mobile) for r in got] == [
        (1, "+46 70-123 45 67", "46701234567"),
        (3, "0701234568", "46701234568"),
        (4, "46701234569", "46701234569"),
        (5, "not a number", None),
    ]
    assert got[0].fields == {"mobile": "+46 70-123 45 67"}


def test_column_option_on_a_plain_list_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "0701234567\n")
    assert "plain list of numbers without a header" in error_of(path, column="phone")


# --- Header detection and --column -----------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    ["mobile", "MOBILE", "Phone", "number", "MSISDN", "Mobile number", "mobile_number",
     "Telefon", "Mobil", "mobilnummer", "Tel.", "Cell phone", "Handynummer"],
)  # fmt: skip
def test_number_column_is_found_by_its_common_names(tmp_path: Path, header: str) -> None:
    path = write(tmp_path, f"name;{header}\nAnna;0701234567\n")
    recipients = RecipientList.open(path)
    assert recipients.number_column == header
    assert [r.mobile for r in recipients.rows()] == ["46701234567"]


def test_a_mobile_column_wins_over_a_phone_column(tmp_path: Path) -> None:
    path = write(tmp_path, "Telefon;Mobil;Kundnummer\n08-123 456 78;0701234567;17\n")
    assert RecipientList.open(path).number_column == "Mobil"


def test_two_number_columns_of_the_same_kind_need_column(tmp_path: Path) -> None:
    path = write(tmp_path, "mobile;Mobil\n0701234567;0701234568\n")
    message = error_of(path)
    assert "several number columns (mobile, Mobil); choose one with --column" in message
    assert [r.mobile for r in rows(path, column="Mobil")] == ["46701234568"]


def test_column_option_picks_the_column_ignoring_case(tmp_path: Path) -> None:
    path = write(tmp_path, "name;Work;Home\nAnna;0701234567;0701234568\n")
    recipients = RecipientList.open(path, column="home")
    assert recipients.number_column == "Home"
    assert [r.raw for r in recipients.rows()] == ["0701234568"]


def test_column_option_naming_no_column_lists_the_columns(tmp_path: Path) -> None:
    path = write(tmp_path, "name;Work;Home\nAnna;0701234567;0701234568\n")
    assert error_of(path, column="Mobile") == (
        f"{path} has no column 'Mobile'; the columns are: name, Work, Home"
    )


def test_missing_number_column_lists_the_columns_and_suggests_column(tmp_path: Path) -> None:
    path = write(tmp_path, "name,email,city\nAnna,a@example.com,Lund\n")
    assert error_of(path) == (
        f"{path} has no number column; the columns are: name, email, city;"
        " name the number column with --column"
    )


def test_csv_without_header_is_pointed_out(tmp_path: Path) -> None:
    path = write(tmp_path, "Anna;0701234567\nBo;0701234568\n")
    message = error_of(path)
    assert "the first line looks like data: a CSV list needs a header line" in message


# --- Files that cannot be read ---------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    assert error_of(tmp_path / "nope.csv") == f"{tmp_path / 'nope.csv'}: no such file"


def test_directory_is_not_a_list(tmp_path: Path) -> None:
    assert error_of(tmp_path) == f"{tmp_path} is not a file"


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "mobile\n0701234567\n")

    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "open", refuse)
    assert error_of(path) == f"{path} cannot be read: Permission denied"


@pytest.mark.parametrize("text", ["", "\n\n", "  \r\n\t\n", "\ufeff"])
def test_empty_file_is_refused(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    assert error_of(path) == f"{path} is empty: it has no rows"


def test_header_without_rows_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "name;mobile\n\n;\n")
    assert error_of(path) == f"{path} has a header but no rows"


def test_windows_1252_list_is_detected_and_read(tmp_path: Path) -> None:
    # Excel's "CSV (Comma delimited)" on a Swedish Windows: cp1252, semicolons.
    path = tmp_path / "excel-ansi.csv"
    path.write_bytes(
        "Namn;Mobil\r\nÅsa Öberg;070-123 45 67\r\nJöns Ärlig;070-765 43 21\r\n".encode("cp1252")
    )
    recipients = RecipientList.open(path)
    assert recipients.encoding == "cp1252"
    assert "read as windows-1252" in recipients.source
    got = [(r.fields["Namn"], r.mobile) for r in recipients.rows()]
    assert got == [("Åsa Öberg", "46701234567"), ("Jöns Ärlig", "46707654321")]


@pytest.mark.parametrize(
    ("text", "encoding"),
    [
        ("Name;Mobile\nÅsa;0701234567\n", "cp1252"),  # one letter: too short to be sure
        ("Imię;Telefon\nŁukasz Żółć;+48 512 345 678\nZażółć gęślą;+48 512 345 679\n", "cp1250"),
        ("Имя;Телефон\nИван Петров;+7 912 345 67 89\n", "cp1251"),
    ],
)
def test_single_byte_code_pages_are_told_apart(tmp_path: Path, text: str, encoding: str) -> None:
    path = tmp_path / "l.csv"
    path.write_bytes(text.encode(encoding))
    recipients = RecipientList.open(path)
    assert recipients.encoding == encoding
    assert next(recipients.rows()).fields == dict(
        zip(*(line.split(";") for line in text.splitlines()[:2]), strict=True)
    )


def test_unicode_text_utf16_with_bom_and_tabs_is_read(tmp_path: Path) -> None:
    # Excel's "Unicode Text": UTF-16 LE with a BOM, tab-separated.
    path = tmp_path / "unicode.txt"
    path.write_bytes("Name\tMobile\r\nZoë\t+46 70 123 45 67\r\n".encode("utf-16"))
    recipients = RecipientList.open(path)
    assert recipients.encoding == "utf-16"
    assert [(r.fields["Name"], r.mobile) for r in recipients.rows()] == [("Zoë", "46701234567")]


def test_encoding_option_overrides_the_guess(tmp_path: Path) -> None:
    path = tmp_path / "l.csv"
    path.write_bytes("name;mobile\nJos\xe9;0701234568\n".encode("latin-1"))
    recipients = RecipientList.open(path, encoding="iso-8859-15")
    assert recipients.encoding == "iso8859-15"
    assert [r.fields["name"] for r in recipients.rows()] == ["José"]
    with pytest.raises(RecipientListError, match="--encoding 'klingon' is not an encoding"):
        RecipientList.open(path, encoding="klingon")


def test_bytes_no_encoding_reads_name_the_line_and_byte(tmp_path: Path) -> None:
    path = tmp_path / "junk.csv"
    junk = bytes([0xFF, 0xFE, 0x00, 0x01, 0x9D, 0x80]) * 40  # a binary file renamed .csv
    path.write_bytes(b"name;mobile\nAnna;0701234567\n" + junk)
    message = error_of(path)
    assert message.startswith(f"{path}: line 3 is not text in any encoding we know (byte 0xff")
    assert "--encoding" in message


def test_a_bad_byte_after_the_sample_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    body = "".join(f"0701{i:06d}\n" for i in range(120_000))  # beyond the 1 MB sample
    path.write_bytes(("mobile\n" + body).encode() + b"\xff\n")
    recipients = RecipientList.open(path)
    assert recipients.encoding == "utf-8"
    with pytest.raises(RecipientListError) as err:
        list(recipients.rows())
    assert str(err.value) == (
        f"{path}: line 120002 is not utf-8 (byte 0xff at byte 1 of the line);"
        " save the list as CSV UTF-8 or give --encoding"
    )


def test_old_mac_line_ends_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "mobile\r0701234567\r0701234568\r")
    assert "bare carriage return" in error_of(path)


# --- Streaming --------------------------------------------------------------------------------


def test_chunks_stream_rows_in_lists_of_the_given_size(tmp_path: Path) -> None:
    path = write(tmp_path, "mobile\n" + "".join(f"0701234{i:03d}\n" for i in range(25)))
    sizes = [len(chunk) for chunk in RecipientList.open(path).chunks(10)]
    assert sizes == [10, 10, 5]


def test_chunks_are_yielded_before_the_rest_of_the_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    body = "".join(f"0701{i:06d}\n" for i in range(130_000))  # past the encoding sample
    path.write_bytes(("mobile\n" + body).encode() + b"\xff\n")
    chunks = RecipientList.open(path).chunks(1000)
    first = next(chunks)
    assert len(first) == 1000 and first[0].mobile == "46701000000"
    with pytest.raises(RecipientListError, match="line 130002 is not utf-8"):
        list(chunks)


def test_rows_can_be_sent_to_worker_processes(tmp_path: Path) -> None:
    path = write(tmp_path, "name;mobile\nAnna;0701234567\nBo;123\n")
    chunk = next(RecipientList.open(path).chunks())
    copy = pickle.loads(pickle.dumps(chunk))
    assert copy == chunk
    assert copy[1].error == "not a valid number for SE"


# --- read_numbers -----------------------------------------------------------------------------


def test_read_numbers_gives_the_numbers_of_a_plain_list_as_written(tmp_path: Path) -> None:
    path = write(tmp_path, "070-123 45 67\n\n+46 70 765 43 21\n")
    assert read_numbers(path) == ["070-123 45 67", "+46 70 765 43 21"]


def test_read_numbers_reads_the_number_column_of_a_csv(tmp_path: Path) -> None:
    path = write(tmp_path, "name;phone\nAnna;0701234567\nBo;\nCai;12345\n")
    assert read_numbers(path) == ["0701234567", "12345"]
