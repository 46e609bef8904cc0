"""Message texts: templates filled from list rows, SMS segment counting, sender checks.

Every error is a `TextError` whose message is one line a user can act on.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterator, Mapping, Sequence

# The segment counter is shared with the simulator, which bills with it: see smsparts.
from config import UserError
from smsparts import _ASCII_GSM_BYTES, _GSM, Segments, count_segments
from smsparts import GSM_7 as GSM_7
from smsparts import GSM_BASIC as GSM_BASIC
from smsparts import GSM_EXTENSION as GSM_EXTENSION
from smsparts import GSM_PART as GSM_PART
from smsparts import GSM_SINGLE as GSM_SINGLE
from smsparts import UCS_2 as UCS_2
from smsparts import UCS_PART as UCS_PART
from smsparts import UCS_SINGLE as UCS_SINGLE

SENDER_NAME_MAX = 11
SENDER_DIGITS_MAX = 15
_ASCII_ALNUM = frozenset(string.ascii_letters + string.digits)


class TextError(UserError, ValueError):
    """A text, template or sender that cannot be sent; the message is one line for the user."""


class TemplateError(TextError):
    """A template that cannot be used: bad placeholder syntax or unknown columns."""


class MissingValueError(TextError):
    """A row has no value (missing or blank) for one of the template's placeholders."""

    def __init__(self, name: str) -> None:
        super().__init__(f"empty value for {{{name}}}")
        self.name = name

    def __reduce__(self) -> tuple[type[MissingValueError], tuple[str]]:
        return type(self), (self.name,)  # survives a trip to a worker process


class Template:
    """A message text with `{column}` placeholders; `{{` and `}}` are literal braces.

    Placeholders match columns case-sensitively first; a placeholder with no exact column
    falls back to the one column that matches ignoring case (spreadsheets vary case), and is
    an error when several do. `check_columns` binds placeholders to columns for `render`.
    Whitespace just inside the braces is ignored: `{ name }` is `{name}`.
    """

    __slots__ = ("_fmt", "_keys", "_names", "_text", "placeholders", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        parts: list[str] = []  # literal text around the fields: len(names) + 1 of them
        names: list[str] = []
        current = ""
        try:
            parsed = list(string.Formatter().parse(source))
        except ValueError:
            raise TemplateError(
                "the text has a single { or }; write {{ or }} for a literal brace"
            ) from None
        for literal, field, spec, conversion in parsed:
            current += literal  # `{{` splits the literal text without starting a field
            if field is None:
                continue
            names.append(_placeholder_name(field, spec, conversion))
            parts.append(current)
            current = ""
        parts.append(current)
        self._names: tuple[str, ...] = tuple(names)
        self._keys: tuple[str, ...] = self._names  # row keys to read; see check_columns
        self.placeholders: tuple[str, ...] = tuple(dict.fromkeys(names))
        self._text = "".join(parts)  # the whole text when there are no placeholders
        # %-formatting is done in C: one call per row instead of a Python-level join.
        self._fmt = "%s".join(p.replace("%", "%%") for p in parts)

    def __repr__(self) -> str:
        return f"Template({self.source!r})"

    def check_columns(self, columns: Sequence[str]) -> None:
        """Raise TemplateError naming every placeholder with no column; bind the rest."""
        binding: dict[str, str] = {}
        unknown: list[str] = []
        for name in self.placeholders:
            column = _match_column(name, columns)
            if column is None:
                unknown.append(name)
            else:
                binding[name] = column
        if unknown:
            listed = ", ".join("{" + n + "}" for n in unknown)
            label = "placeholder" if len(unknown) == 1 else "placeholders"
            shown = ", ".join(c for c in columns if c) or "(none)"
            raise TemplateError(f"unknown {label} {listed}; the list's columns are: {shown}")
        self._keys = tuple(binding[n] for n in self._names)

    def render(self, row: Mapping[str, str]) -> str:
        """The text for one row; values are stripped; a blank value raises MissingValueError."""
        if not self._keys:
            return self._text
        try:
            values = tuple([row[key].strip() for key in self._keys])
        except (KeyError, AttributeError):  # a missing column or a None value
            values = tuple(self._values_slowly(row))
        if "" in values:
            raise MissingValueError(self._names[values.index("")])
        return self._fmt % values

    def _values_slowly(self, row: Mapping[str, str]) -> Iterator[str]:
        for key in self._keys:
            value = row.get(key)
            if value is None:
                value = _lookup_ignoring_case(row, key)
            yield (value or "").strip()


def _placeholder_name(field: str, spec: str | None, conversion: str | None) -> str:
    shown = "{" + field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
    shown += "}"
    name = field.strip()
    if not name:
        raise TemplateError(
            "the text has an empty placeholder {}; put a column name inside the braces,"
            " or write {{ and }} for literal braces"
        )
    if name.isdigit():
        raise TemplateError(
            f"the placeholder {shown} is a position, not a column name;"
            " put a column name inside the braces"
        )
    if any(c in name for c in ".[]"):
        raise TemplateError(
            f"the placeholder {shown} is not a column name; write just the column name,"
            " without . or [ ]"
        )
    if conversion is not None or spec:
        raise TemplateError(
            f"the placeholder {shown} has formatting, which is not supported; write just {{{name}}}"
        )
    return name


def _match_column(name: str, columns: Sequence[str]) -> str | None:
    if name in columns:
        return name
    folded = name.casefold()
    matches = [c for c in columns if c.casefold() == folded]
    if len(matches) > 1:
        raise TemplateError(
            f"the placeholder {{{name}}} matches several columns ({', '.join(matches)});"
            " write it with the exact case of one of them"
        )
    return matches[0] if matches else None


def _lookup_ignoring_case(row: Mapping[str, str], key: str) -> str | None:
    # Only reached when render runs without check_columns and the case differs.
    folded = key.casefold()
    found = [v for k, v in row.items() if k.casefold() == folded]
    return found[0] if len(found) == 1 else None


# One C-level scan answers "is any character outside GSM-7?" without building a set per text.
_NOT_GSM = re.compile("[^" + "".join(re.escape(c) for c in sorted(_GSM)) + "]")


def has_ucs2(text: str) -> bool:
    """Whether `text` has a character GSM-7 lacks (`ucs2_characters(text)` is not empty)."""
    return _NOT_GSM.search(text) is not None


def ucs2_characters(text: str) -> set[str]:
    """The characters of `text` that GSM-7 lacks: any one of them makes the text UCS-2."""
    if text.isascii():
        return set(text.encode("ascii").translate(None, _ASCII_GSM_BYTES).decode("ascii"))
    return set(text) - _GSM


# `--gsm-safe`: typographic characters word processors and phones put in texts, each with the
# GSM-7 character a reader takes it for. One of them turns a whole text UCS-2 (70 characters
# a part instead of 160), so a 150-character text costs two or three parts instead of one.
GSM_SAFE = {
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",  # ‘ ’ ‚ ‛ ′
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"',  # “ ” „ ‟ ″
    "\u00ab": '"', "\u00bb": '"',  # « »
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-",  # dashes
    "\u2015": "-", "\u2212": "-",  # horizontal bar, minus sign
    "\u2026": "...",  # …
    "\u00a0": " ", "\u202f": " ", "\u2007": " ", "\u2009": " ", "\u200a": " ",  # no-break,
    "\u2002": " ", "\u2003": " ", "\u2004": " ", "\u2005": " ", "\u2006": " ",  # thin, en
    "\u2008": " ", "\u205f": " ", "\u3000": " ",  # and other spaces
    "\u00ad": "", "\u200b": "", "\u2060": "", "\ufeff": "",  # invisible: soft hyphen, zero width
}  # fmt: skip
_GSM_SAFE_TABLE = str.maketrans(GSM_SAFE)
# What a character GSM-7 lacks and GSM_SAFE does not know would weigh without it (one septet).
_STAND_IN = "?"


def gsm_safe(text: str) -> tuple[str, int]:
    """`text` with GSM_SAFE's characters replaced, and how many characters were replaced."""
    if text.isascii():
        return text, 0
    replaced = sum(text.count(char) for char in set(text) if char in GSM_SAFE)
    return (text.translate(_GSM_SAFE_TABLE), replaced) if replaced else (text, 0)


def gsm7_parts(text: str) -> int:
    """The parts `text` would take in GSM-7: its UCS-2-forcing characters replaced as
    `--gsm-safe` does, or each counted as one septet when GSM-7 has nothing like it."""
    missing = ucs2_characters(text)
    if not missing:
        return count_segments(text).parts
    cleaned = gsm_safe(text)[0]
    cleaned = "".join(c if c in _GSM else _STAND_IN for c in cleaned)
    return count_segments(cleaned).parts


def check_text(text: str, max_parts: int) -> Segments:
    """The text's segments; TextError if it is empty or longer than `max_parts` parts."""
    if not text or text.isspace():
        raise TextError("the text is empty")
    segments = count_segments(text)
    if segments.encoding == UCS_2 and not _encodable(text):
        raise TextError(
            "the text has characters that are not valid Unicode (a lone surrogate);"
            " check the encoding it was typed or saved in"
        )
    if segments.parts > max_parts:
        limit = f"{max_parts} part" + ("" if max_parts == 1 else "s")
        raise TextError(
            f"the text is {segments.parts} parts ({segments.units} {segments.encoding}"
            f" characters); the limit is {limit}"
        )
    return segments


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_sender(sender: str) -> str:
    """The sender as the gateway wants it, or TextError.

    A sender name is 1-11 ASCII letters and digits with at least one letter; spaces and
    punctuation are refused because many networks drop or mangle them. A numeric sender is
    up to 15 digits, with an optional leading `+` that is removed. Surrounding whitespace is
    ignored.
    """
    cleaned = sender.strip()
    if not cleaned:
        raise TextError("the sender is empty; give a name of up to 11 letters and digits")
    digits = cleaned[1:] if cleaned.startswith("+") else cleaned
    if digits.isascii() and digits.isdigit():
        if len(digits) > SENDER_DIGITS_MAX:
            raise TextError(
                f"the sender {sender.strip()!r} is {len(digits)} digits;"
                f" a numeric sender is at most {SENDER_DIGITS_MAX}"
            )
        return digits
    bad = sorted(set(cleaned) - _ASCII_ALNUM)
    if bad:
        shown = " ".join("space" if c == " " else repr(c) for c in bad)
        raise TextError(
            f"the sender {cleaned!r} has characters other than letters and digits ({shown});"
            f" a sender name is up to {SENDER_NAME_MAX} ASCII letters and digits, no spaces"
        )
    if len(cleaned) > SENDER_NAME_MAX:
        raise TextError(
            f"the sender {cleaned!r} is {len(cleaned)} characters;"
            f" a sender name is at most {SENDER_NAME_MAX}"
        )
    return cleaned
