"""Message texts: templates, SMS segment counting at every boundary, sender checks."""

from __future__ import annotations

import pickle

import pytest

from dispatcher.texts import (
    GSM_BASIC,
    MissingValueError,
    Segments,
    Template,
    TemplateError,
    TextError,
    check_sender,
    check_text,
    count_segments,
)

COLUMNS = ["mobile", "name", "date"]

# --- Templates --------------------------------------------------------------------------


def test_placeholders_are_filled_from_the_row_with_values_stripped() -> None:
    template = Template("Hi {name}, your time is {date}.")
    template.check_columns(COLUMNS)
    assert template.render({"mobile": "070", "name": "  Anna ", "date": "3 May 10:00"}) == (
        "Hi Anna, your time is 3 May 10:00."
    )


def test_placeholders_are_listed_once_in_order_of_first_use() -> None:
    template = Template("{name}, {date}: {name}")
    assert template.placeholders == ("name", "date")
    assert template.source == "{name}, {date}: {name}"
    assert template.render({"name": "Bo", "date": "today"}) == "Bo, today: Bo"


def test_double_braces_are_literal_braces() -> None:
    template = Template("{{ref}} {name} }}{{")
    assert template.placeholders == ("name",)
    assert template.render({"name": "Eva"}) == "{ref} Eva }{"


def test_percent_signs_and_braces_in_values_are_kept_as_written() -> None:
    template = Template("100% sure, {name}")
    assert template.render({"name": "50% {off}"}) == "100% sure, 50% {off}"


def test_template_without_placeholders_is_the_text_itself() -> None:
    source = "Our shop is closed on Friday."
    template = Template(source)
    assert template.placeholders == ()
    assert template.render({}) is source


def test_template_without_placeholders_still_unescapes_double_braces() -> None:
    assert Template("Use code {{X}}").render({}) == "Use code {X}"


def test_whitespace_inside_the_braces_is_ignored() -> None:
    template = Template("Hi { name }")
    assert template.placeholders == ("name",)
    assert template.render({"name": "Cai"}) == "Hi Cai"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("Hi {a.b}", "the placeholder {a.b} is not a column name"),
        ("Hi {a[0]}", "the placeholder {a[0]} is not a column name"),
        ("Hi {a!r}", "the placeholder {a!r} has formatting, which is not supported"),
        ("Hi {a:>5}", "the placeholder {a:>5} has formatting, which is not supported"),
        ("Hi {}", "the text has an empty placeholder {}"),
        ("Hi { }", "the text has an empty placeholder {}"),
        ("Hi {0}", "the placeholder {0} is a position, not a column name"),
        ("Hi {name", "the text has a single { or }; write {{ or }} for a literal brace"),
        ("Hi name}", "the text has a single { or }; write {{ or }} for a literal brace"),
        ("Hi {a!}", "the text has a single { or }"),
    ],
)
def test_bad_placeholders_are_refused_with_a_clear_line(source: str, message: str) -> None:
    with pytest.raises(TemplateError) as err:
        Template(source)
    assert message in str(err.value)
    assert "\n" not in str(err.value)
    assert isinstance(err.value, TextError)


def test_unknown_placeholder_names_the_columns_of_the_list() -> None:
    with pytest.raises(TemplateError) as err:
        Template("Hi {nmae}").check_columns(COLUMNS)
    assert (
        str(err.value) == "unknown placeholder {nmae}; the list's columns are: mobile, name, date"
    )


def test_every_unknown_placeholder_is_listed_at_once() -> None:
    with pytest.raises(TemplateError) as err:
        Template("{nmae} {name} {dat}").check_columns(COLUMNS)
    assert str(err.value) == (
        "unknown placeholders {nmae}, {dat}; the list's columns are: mobile, name, date"
    )


def test_placeholder_in_other_case_matches_the_one_column_of_that_name() -> None:
    template = Template("Hi {Name}")
    template.check_columns(["Mobile", "NAME"])
    assert template.render({"Mobile": "070", "NAME": "Dan"}) == "Hi Dan"


def test_exact_case_wins_over_a_case_insensitive_match() -> None:
    template = Template("Hi {name}")
    template.check_columns(["Name", "name"])
    assert template.render({"Name": "Wrong", "name": "Right"}) == "Hi Right"


def test_placeholder_matching_several_columns_by_case_is_ambiguous() -> None:
    with pytest.raises(TemplateError) as err:
        Template("Hi {nAme}").check_columns(["Name", "NAME"])
    assert "{nAme} matches several columns (Name, NAME)" in str(err.value)


def test_render_without_check_columns_still_finds_a_column_in_other_case() -> None:
    assert Template("Hi {name}").render({"Name": "Fia"}) == "Hi Fia"


@pytest.mark.parametrize("row", [{"name": ""}, {"name": "   "}, {}, {"name": None}])
def test_missing_or_blank_value_names_the_placeholder(row: dict) -> None:
    with pytest.raises(MissingValueError) as err:
        Template("Hi {name}, see you {date}").render({"date": "today", **row})
    assert str(err.value) == "empty value for {name}"
    assert err.value.name == "name"
    assert isinstance(err.value, TextError)


def test_missing_value_error_survives_pickling() -> None:
    copy = pickle.loads(pickle.dumps(MissingValueError("date")))
    assert (str(copy), copy.name) == ("empty value for {date}", "date")


def test_missing_value_names_the_placeholder_as_written_not_the_column() -> None:
    template = Template("Hi {Name}")
    template.check_columns(["name"])
    with pytest.raises(MissingValueError) as err:
        template.render({"name": " "})
    assert err.value.name == "Name"


# --- Segments ---------------------------------------------------------------------------


def test_gsm_basic_table_has_its_127_characters_and_escape_is_not_one() -> None:
    # 0x1B escapes to the extension table on the air; a raw one typed in a text is not GSM-7.
    assert len(GSM_BASIC) == 127
    assert "\x1b" not in GSM_BASIC
    assert {
        "@",
        "£",
        "$",
        "¥",
        "Δ",
        "Ø",
        "Å",
        "ß",
        "É",
        "¤",
        "¡",
        "§",
        "¿",
        "à",
    } <= GSM_BASIC


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", Segments("GSM-7", 0, 0)),
        ("a", Segments("GSM-7", 1, 1)),
        ("a" * 160, Segments("GSM-7", 160, 1)),
        ("a" * 161, Segments("GSM-7", 161, 2)),
        ("a" * 306, Segments("GSM-7", 306, 2)),
        ("a" * 307, Segments("GSM-7", 307, 3)),
        ("Hej Åsa! Välkommen till vår butik på Söder." * 4, Segments("GSM-7", 172, 2)),
    ],
)
def test_gsm_texts_count_septets_and_parts(text: str, expected: Segments) -> None:
    assert count_segments(text) == expected


@pytest.mark.parametrize("char", list("^{}\\[~]|€\x0c"))
def test_extension_characters_cost_two_septets(char: str) -> None:
    assert count_segments(char) == Segments("GSM-7", 2, 1)
    assert count_segments("a" * 158 + char) == Segments("GSM-7", 160, 1)
    assert count_segments("a" * 159 + char) == Segments("GSM-7", 161, 2)


def test_a_raw_escape_makes_a_text_ucs2_as_the_simulator_bills_it() -> None:
    from simulator.segments import encoding_of, segment_count

    text = "Hi\x1b" + "a" * 80
    assert count_segments(text) == Segments("UCS-2", 83, 2)
    assert (encoding_of(text), segment_count(text)) == ("UCS-2", 2)


SAMPLES = [
    "",
    "Hej",
    "a" * 160,
    "a" * 161,
    "{" * 80,
    "{" * 81,
    "a" * 152 + "€" + "a",
    "Zoë 😀" * 20,
    "😀" * 35,
    "😀" * 36,
    "Привет" * 12,
    "tab\there",
    "esc\x1bhere" * 20,
    "`backtick`",
    "Ünïcödé ÄÖÅ àèé ç" * 10,
]


@pytest.mark.parametrize("text", SAMPLES)
def test_the_producer_estimates_what_the_simulator_bills(text: str) -> None:
    from simulator.segments import encoding_of, segment_count

    segments = count_segments(text)
    assert segment_count(text) == max(1, segments.parts)
    assert encoding_of(text) == segments.encoding


def test_the_simulator_imports_nothing_of_the_service() -> None:
    import subprocess
    import sys

    code = (
        "import sys, simulator.server, simulator.segments;"
        "print(sorted({m.split('.')[0] for m in sys.modules}"
        " & {'dispatcher', 'workers', 'config'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_euro_sign_keeps_a_text_in_gsm() -> None:
    assert count_segments("Only 5 € today") == Segments("GSM-7", 15, 1)


def test_extension_character_is_never_split_across_parts() -> None:
    # 306 septets would fit 2 x 153, but the € would straddle the parts: it moves to part 2,
    # which then overflows into a third.
    assert count_segments("a" * 152 + "€" + "a" * 152) == Segments("GSM-7", 306, 3)
    assert count_segments("a" * 152 + "[" + "a" * 152) == Segments("GSM-7", 306, 3)
    # Ending exactly on a part boundary is fine.
    assert count_segments("a" * 151 + "€" + "a" * 153) == Segments("GSM-7", 306, 2)


def test_one_non_gsm_character_makes_the_whole_text_ucs2() -> None:
    assert count_segments("Hi Ana 😀") == Segments("UCS-2", 9, 1)
    assert count_segments("Price `5`") == Segments("UCS-2", 9, 1)
    assert count_segments("Привет") == Segments("UCS-2", 6, 1)


@pytest.mark.parametrize(
    ("length", "parts"),
    [(70, 1), (71, 2), (134, 2), (135, 3), (201, 3), (202, 4)],
)
def test_ucs2_boundaries(length: int, parts: int) -> None:
    assert count_segments("я" * length) == Segments("UCS-2", length, parts)


def test_emoji_counts_two_utf16_units() -> None:
    assert count_segments("😀" * 35) == Segments("UCS-2", 70, 1)
    assert count_segments("😀" * 36) == Segments("UCS-2", 72, 2)


def test_emoji_is_never_split_across_parts() -> None:
    assert count_segments("я" * 66 + "😀" + "я" * 66) == Segments("UCS-2", 134, 3)
    assert count_segments("я" * 65 + "😀" + "я" * 67) == Segments("UCS-2", 134, 2)


# --- check_text ---------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_empty_text_is_refused(text: str) -> None:
    with pytest.raises(TextError) as err:
        check_text(text, 6)
    assert str(err.value) == "the text is empty"


def test_text_over_the_part_limit_says_how_long_it_is() -> None:
    with pytest.raises(TextError) as err:
        check_text("a" * 1050, 6)
    assert str(err.value) == "the text is 7 parts (1050 GSM-7 characters); the limit is 6 parts"


def test_ucs2_text_over_a_one_part_limit() -> None:
    with pytest.raises(TextError) as err:
        check_text("я" * 71, 1)
    assert str(err.value) == "the text is 2 parts (71 UCS-2 characters); the limit is 1 part"


def test_text_within_the_limit_gives_its_segments() -> None:
    assert check_text("a" * 918, 6) == Segments("GSM-7", 918, 6)


def test_text_with_an_undecodable_character_is_refused() -> None:
    with pytest.raises(TextError, match="not valid Unicode"):
        check_text("Hi \udce9", 6)


# --- Senders ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sender", "cleaned"),
    [
        ("InfoSMS", "InfoSMS"),
        ("Clinic2024", "Clinic2024"),
        ("ElevenChars", "ElevenChars"),
        ("  Shop  ", "Shop"),
        ("+46701234567", "46701234567"),
        ("123456789012345", "123456789012345"),
        ("72000", "72000"),
    ],
)
def test_good_senders_come_back_cleaned(sender: str, cleaned: str) -> None:
    assert check_sender(sender) == cleaned


@pytest.mark.parametrize(
    ("sender", "message"),
    [
        ("", "the sender is empty"),
        ("   ", "the sender is empty"),
        ("TwelveChars1", "the sender 'TwelveChars1' is 12 characters; a sender name is at most 11"),
        ("Clinic Nord", "the sender 'Clinic Nord' has characters other than letters and digits"),
        ("Shop-1", "has characters other than letters and digits ('-')"),
        ("Café", "has characters other than letters and digits ('é')"),
        ("1234567890123456", "the sender '1234567890123456' is 16 digits"),
        ("+", "has characters other than letters and digits ('+')"),
    ],
)
def test_bad_senders_are_refused_with_a_clear_line(sender: str, message: str) -> None:
    with pytest.raises(TextError) as err:
        check_sender(sender)
    assert message in str(err.value)
    assert "\n" not in str(err.value)
