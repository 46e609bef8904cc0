"""Number normalisation: list cells to the gateway's form, and the fast path agreeing with
phonenumbers itself over every region's example numbers."""

from __future__ import annotations

import phonenumbers
import pytest
from phonenumbers import PhoneNumberFormat, PhoneNumberType

from dispatcher.numbers import _normalise_slowly, normalise

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
    # Hamburg 040 374244797 or the Romanian landline +40 374 244 797: both landlines, so
    # nothing to text; a gateway that texts landlines gets the national one.
    assert normalise("40374244797", "DE") == (None, "not a mobile number")
    assert normalise("40374244797", "DE", landlines=True) == ("4940374244797", None)


def test_bare_international_mobile_wins_over_a_national_landline_reading() -> None:
    # Germany's variable-length numbers make these valid landlines (area codes 04915 and
    # 04479) too; only the mobile readings can receive a text.
    assert normalise("4915123456789", "DE") == ("4915123456789", None)
    assert normalise("447911123456", "DE") == ("447911123456", None)


# --- issue 9: numbers that went to the wrong place ---------------------------------------


@pytest.mark.parametrize(
    ("raw", "region"),
    [
        # US numbers in national format in a list read with region SE were Egyptian numbers.
        ("(201) 555-0123", "SE"),
        ("201.555.0123", "SE"),
        ("201-555-0123", "SE"),
        # India's 1860 numbers in national format became US numbers.
        ("1860 345 1234", "IN"),
        # A trunk 0 is national formatting too.
        ("0 201 555 0123", "SE"),
    ],
)
def test_national_formatting_is_never_read_as_a_foreign_international_number(
    raw: str, region: str
) -> None:
    mobile, error = normalise(raw, region)
    assert mobile is None
    assert error in (f"not a valid number for {region}", "not a mobile number")
    assert _normalise_slowly(raw, region) == (mobile, error)


def test_digits_alone_are_still_read_as_international_without_plus() -> None:
    # The gateway's own format, and exports made from it.
    assert normalise("12015550123", "SE") == ("12015550123", None)
    assert normalise("201.555.0123", "US") == ("12015550123", None)


@pytest.mark.parametrize(
    ("raw", "region", "kind"),
    [
        ("08-123 456 78", "SE", "fixed line"),
        ("+46 8 123 456 78", "SE", "fixed line"),
        ("020-123 456", "SE", "toll free"),
        ("0900-123 45 67", "SE", "premium rate"),
        ("+1 800 555 0123", "SE", "toll free"),
        ("0800 123 4567", "GB", "toll free"),
        ("0845 464 0000", "GB", "shared cost"),
        ("030 123456", "DE", "fixed line"),
        ("1860 345 1234", "IN", "UAN"),
        ("07624 123456", "GB", "mobile (Isle of Man)"),
    ],
)
def test_numbers_that_cannot_receive_a_text_are_not_a_mobile_number(
    raw: str, region: str, kind: str
) -> None:
    parsed = phonenumbers.parse(raw, region)
    sendable = phonenumbers.number_type(parsed) in (
        PhoneNumberType.MOBILE,
        PhoneNumberType.FIXED_LINE_OR_MOBILE,
    )
    if sendable:
        assert normalise(raw, region)[0] is not None, kind
    else:
        assert normalise(raw, region) == (None, "not a mobile number"), kind
        assert normalise(raw, region, landlines=True)[0] is not None, kind


def test_fixed_line_or_mobile_numbers_stay_valid() -> None:
    # US and Canadian numbers cannot be told apart: phonenumbers says FIXED_LINE_OR_MOBILE.
    assert normalise("(201) 555-0123", "US") == ("12015550123", None)


def test_allow_landlines_lets_a_landline_through() -> None:
    assert normalise("08-123 456 78", "SE", landlines=True) == ("46812345678", None)


@pytest.mark.parametrize(
    "raw",
    ["abc0701234567", "Mob 070-123 45 67", "x0701234567", "0701234567abc", "070 CALL NOW"],
)
def test_letters_in_a_cell_make_it_not_a_phone_number(raw: str) -> None:
    assert normalise(raw, "SE") == (None, "not a phone number")


@pytest.mark.parametrize(
    "raw",
    [
        "tel:+46701234567",
        "tel:070-123 45 67",
        "TEL:+46 70 123 45 67",
        "'0701234567",
        "'+46701234567",
        '="0701234567"',
        '="+46 70 123 45 67"',
    ],
)
def test_the_wrappings_spreadsheets_and_links_export_are_accepted(raw: str) -> None:
    assert normalise(raw, "SE") == ("46701234567", None)
    assert _normalise_slowly(raw, "SE") == ("46701234567", None)


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


@pytest.mark.parametrize("landlines", [False, True])
def test_fast_path_agrees_with_phonenumbers_alone_for_every_region(landlines: bool) -> None:
    forms = _example_forms()
    assert len(forms) > 5000
    disagree = [
        (raw, region, fast, slow)
        for raw, region in forms
        if (fast := normalise(raw, region, landlines=landlines))
        != (slow := _normalise_slowly(raw, region, landlines=landlines))
    ]
    assert disagree == []
    assert sum(1 for raw, region in forms if normalise(raw, region)[0]) > 1500
