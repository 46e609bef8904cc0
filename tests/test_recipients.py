"""Recipient lists: formats, encodings, header detection, streaming, number normalisation."""

from __future__ import annotations

import pickle
from pathlib import Path

import phonenumbers
import pytest
from phonenumbers import PhoneNumberFormat, PhoneNumberType

from dispatcher.recipients import (
    RecipientList,
    RecipientListError,
    Row,
    _normalise_slowly,
    normalise,
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


# --- normalise ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "region", "mobile"),
    [
        # Sweden: national, +, 00, bare international, and separators of every kind
        ("070-123 45 67", "SE", "46701234567"),
        ("0701234567", "SE", "46701234567"),
        ("+46 70 123 45 67", "SE", "46701234567"),
        ("+46 (0)70-123 45 67", "SE", "46701234567"),
        ("0046 70 123 45 67", "SE", "46701234567"),
        ("46701234567", "SE", "46701234567"),
        ("070.123.45.67", "SE", "46701234567"),
        ("08-123 456 78", "SE", "46812345678"),
        # United Kingdom
        ("07911 123456", "GB", "447911123456"),
        ("+44 7911 123456", "GB", "447911123456"),
        ("0044 7911 123456", "GB", "447911123456"),
        ("447911123456", "GB", "447911123456"),
        ("+44 7911 123456", "SE", "447911123456"),
        ("0044 7911 123456", "SE", "447911123456"),
        ("447911123456", "SE", "447911123456"),
        # United States: its international prefix is 011, and 00 is still read as +
        ("(201) 555-0123", "US", "12015550123"),
        ("201-555-0123", "US", "12015550123"),
        ("1 201 555 0123", "US", "12015550123"),
        ("+1 201-555-0123", "US", "12015550123"),
        ("011 1 201 555 0123", "US", "12015550123"),
        ("0046701234567", "US", "46701234567"),
        ("+1 201 555 0123", "SE", "12015550123"),
        ("0012015550123", "SE", "12015550123"),
        # Germany
        ("0151 23456789", "DE", "4915123456789"),
        ("0151/23456789", "DE", "4915123456789"),
        ("+49 151 23456789", "DE", "4915123456789"),
        ("0049 151 23456789", "DE", "4915123456789"),
        ("4915123456789", "DE", "4915123456789"),
        ("4915123456789", "SE", "4915123456789"),
        # Digits phonenumbers knows but the fast path leaves to it
        ("٠٧٠١٢٣٤٥٦٧", "SE", "46701234567"),
        ("０７０-１２３ ４５ ６７", "SE", "46701234567"),
        ("tel: 070-123 45 67", "SE", "46701234567"),
    ],
)
def test_national_and_international_forms_give_the_same_number(
    raw: str, region: str, mobile: str
) -> None:
    assert normalise(raw, region) == (mobile, None)


@pytest.mark.parametrize(
    ("raw", "region", "error"),
    [
        ("", "SE", "empty number"),
        ("   ", "SE", "empty number"),
        ("12345", "SE", "not a valid number for SE"),
        ("070-123 45", "SE", "not a valid number for SE"),
        ("0201234567", "GB", "not a valid number for GB"),
        ("-1", "SE", "not a phone number"),
        ("n/a", "SE", "not a phone number"),
        ("+999 123 456 789", "SE", "unknown country code"),
        ("+46 1", "SE", "too short to be a phone number"),
        ("070123456789012345678", "SE", "too long to be a phone number"),
        ("+44 7911", "SE", "not a valid number for country code +44"),
        ("+49 151", "SE", "not a valid number for DE"),
        ("070-123 45 67 ext. 12", "SE", "has an extension; give the number alone"),
        ("070-123 45 67", "XX", "unknown region XX for a national number"),
    ],
)
def test_invalid_numbers_say_why(raw: str, region: str, error: str) -> None:
    assert normalise(raw, region) == (None, error)


def test_international_numbers_do_not_need_a_known_region() -> None:
    assert normalise("+46 70 123 45 67", "XX") == ("46701234567", None)


def test_a_valid_national_reading_wins_over_a_bare_international_one() -> None:
    # Ten digits: a US number in the US, a Singapore mobile (+65 9720 6165) elsewhere.
    assert normalise("6597206165", "US") == ("16597206165", None)
    assert normalise("6597206165", "SE") == ("6597206165", None)
    # Hamburg 040 374244797 or the Romanian landline +40 374 244 797: both landlines.
    assert normalise("40374244797", "DE") == ("4940374244797", None)


def test_bare_international_mobile_wins_over_a_national_landline_reading() -> None:
    # Germany's variable-length numbers make these valid landlines (area codes 04915 and
    # 04479) too; only the mobile readings can receive a text.
    assert normalise("4915123456789", "DE") == ("4915123456789", None)
    assert normalise("447911123456", "DE") == ("447911123456", None)


def _example_forms() -> list[tuple[str, str]]:
    """Every region's example numbers, written the ways lists write them, and near misses."""
    forms = []
    types = [PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE, PhoneNumberType.TOLL_FREE]
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in types:
            number = phonenumbers.example_number_for_type(region, kind)
            if number is None:
                continue
            e164 = phonenumbers.format_number(number, PhoneNumberFormat.E164)
            national = phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL)
            for raw in (national, e164, "00" + e164[1:], e164[1:], e164[:-1], national + "1"):
                forms += [(raw, region), (raw, "SE"), (raw, "US")]
    return forms


def test_fast_path_agrees_with_phonenumbers_alone_for_every_region() -> None:
    forms = _example_forms()
    assert len(forms) > 5000
    disagree = [
        (raw, region, normalise(raw, region), _normalise_slowly(raw, region))
        for raw, region in forms
        if normalise(raw, region) != _normalise_slowly(raw, region)
    ]
    assert disagree == []
    assert sum(1 for raw, region in forms if normalise(raw, region)[0]) > 2000


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


def test_bytes_that_are_not_utf8_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("name;mobile\nAnna;0701234567\nJos\xe9;0701234568\n".encode("latin-1"))
    recipients = RecipientList.open(path)  # the first lines are fine
    with pytest.raises(RecipientListError) as err:
        list(recipients.rows())
    assert str(err.value) == (
        f"{path}: line 3 is not UTF-8 (byte 0xe9 at column 4); save the list as UTF-8"
    )


def test_bad_byte_in_the_header_is_found_when_opening(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("\ufeffNamn;Telefonnr;Län\n".encode() + b"x;0701234567;Sk\xe5ne\n")
    path.write_bytes(b"Namn;Telefonnr;L\xe4n\nx;0701234567;y\n")
    assert error_of(path) == (
        f"{path}: line 1 is not UTF-8 (byte 0xe4 at column 17); save the list as UTF-8"
    )


def test_utf16_file_is_refused_with_advice(tmp_path: Path) -> None:
    path = write(tmp_path, "mobile\n0701234567\n", encoding="utf-16")
    assert error_of(path) == f"{path} is UTF-16 text; save the list as UTF-8 (CSV UTF-8)"


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
    body = "".join(f"0701{i:06d}\n" for i in range(30_000))
    path.write_bytes(("mobile\n" + body).encode() + b"\xff\n")
    chunks = RecipientList.open(path).chunks(1000)
    first = next(chunks)
    assert len(first) == 1000 and first[0].mobile == "46701000000"
    with pytest.raises(RecipientListError, match="line 30002 is not UTF-8"):
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
