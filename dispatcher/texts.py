"""Message texts: templates filled from list rows, SMS segment counting, sender checks.

Every error is a `TextError` whose message is one line a user can act on.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

GSM_7 = "GSM-7"
UCS_2 = "UCS-2"

# GSM 03.38 basic character set, in table order (0x1B is the escape to the extension table).
GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# Extension table: each is sent as escape + character, so it costs two septets.
GSM_EXTENSION = frozenset("^{}\\[~]|€\x0c")
_GSM = GSM_BASIC | GSM_EXTENSION
# ASCII is most texts: these are the ASCII characters GSM-7 has, and its two-septet ones.
_ASCII_GSM_BYTES = "".join(sorted(c for c in _GSM if c.isascii())).encode("ascii")
_ASCII_EXTENSION_BYTES = "".join(sorted(c for c in GSM_EXTENSION if c.isascii())).encode("ascii")

GSM_SINGLE, GSM_PART = 160, 153  # a concatenated part loses 7 septets to its header
UCS_SINGLE, UCS_PART = 70, 67  # and 3 UTF-16 units

SENDER_NAME_MAX = 11
SENDER_DIGITS_MAX = 15
_ASCII_ALNUM = frozenset(string.ascii_letters + string.digits)


class TextError(ValueError):
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


@dataclass(frozen=True, slots=True)
class Segments:
    """How a text goes over the air: its encoding, its size in that encoding, its SMS parts."""

    encoding: str  # GSM_7 or UCS_2
    units: int  # septets for GSM-7, UTF-16 code units for UCS-2
    parts: int


def count_segments(text: str) -> Segments:
    """Encoding, size and number of SMS parts of `text` (an empty text is 0 parts)."""
    if not text:
        return _segments(GSM_7, 0)
    if text.isascii():
        # Most texts: bytes.translate does the character checks in C.
        data = text.encode("ascii")
        if data.translate(None, _ASCII_GSM_BYTES):
            return _segments(UCS_2, len(text))  # a backtick or a control character
        plain = data.translate(None, _ASCII_EXTENSION_BYTES)
        units = 2 * len(data) - len(plain)
        if len(plain) == len(data) or units <= GSM_SINGLE:
            return _segments(GSM_7, units)
        return _segments(GSM_7, units, _pack(text, GSM_EXTENSION.__contains__, GSM_PART))
    chars = set(text)
    if chars <= _GSM:
        extension = GSM_EXTENSION & chars
        units = len(text) + sum(map(text.count, extension))
        if not extension or units <= GSM_SINGLE:
            return _segments(GSM_7, units)
        # An escape and its character must stay in one part, so pack greedily.
        return _segments(GSM_7, units, _pack(text, GSM_EXTENSION.__contains__, GSM_PART))
    units = len(text.encode("utf-16-le", "surrogatepass")) // 2
    if units == len(text) or units <= UCS_SINGLE:
        return _segments(UCS_2, units)
    # A surrogate pair (emoji and other characters outside the BMP) must not be split.
    return _segments(UCS_2, units, _pack(text, _is_astral, UCS_PART))


_SEGMENTS: dict[tuple[str, int, int], Segments] = {}


def _segments(encoding: str, units: int, parts: int = 0) -> Segments:
    """Segments for `units`, parts by plain division unless given; instances are shared."""
    if not parts and units:
        single, part = (GSM_SINGLE, GSM_PART) if encoding == GSM_7 else (UCS_SINGLE, UCS_PART)
        parts = 1 if units <= single else -(-units // part)
    key = (encoding, units, parts)
    found = _SEGMENTS.get(key)
    if found is None:
        found = Segments(encoding, units, parts)
        if len(_SEGMENTS) < 10_000:  # frozen dataclasses are slow to build; texts repeat
            _SEGMENTS[key] = found
    return found


def _is_astral(char: str) -> bool:
    return char > "\uffff"


def _pack(text: str, is_double: Callable[[str], bool], capacity: int) -> int:
    """Parts needed when characters of width 2 (`is_double`) may not straddle two parts."""
    parts, used = 1, 0
    for char in text:
        width = 2 if is_double(char) else 1
        if used + width > capacity:
            parts += 1
            used = width
        else:
            used += width
    return parts


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
