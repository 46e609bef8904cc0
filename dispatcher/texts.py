"""Message texts: `{column}` templates, GSM 03.38 / UCS-2 segment counting, sender checks."""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM_EXTENDED = frozenset("^{}\\[~]|€\f")  # sent as ESC + char: two septets
GSM_SINGLE, GSM_PART = 160, 153
UCS2_SINGLE, UCS2_PART = 70, 67
_ALNUM_SENDER = re.compile(r"^[A-Za-z0-9]{1,11}$")
_NUMERIC_SENDER = re.compile(r"^\+?[0-9]{1,15}$")


class TextError(ValueError):
    """A text, template or sender we cannot send; one line for the user."""


class TemplateError(TextError):
    """A template that does not fit the list."""


class MissingValueError(TextError):
    """A row has no value for a placeholder the template uses."""

    def __init__(self, name: str) -> None:
        super().__init__(f"empty value for {{{name}}}")
        self.name = name


@dataclass(frozen=True)
class Segments:
    """How a text travels: its encoding, its length in that encoding, and its parts."""

    encoding: str
    units: int
    parts: int


def _pack(sizes: list[int], single: int, part: int) -> int:
    # Parts of a concatenated message never split an escape pair or a surrogate pair, so
    # the count is a greedy packing, not a plain division.
    total = sum(sizes)
    if total == 0:
        return 0
    if total <= single:
        return 1
    parts, used = 1, 0
    for size in sizes:
        if used + size > part:
            parts += 1
            used = 0
        used += size
    return parts


def count_segments(text: str) -> Segments:
    """The encoding and number of parts the gateway will bill for `text`."""
    if all(ch in GSM_BASIC or ch in GSM_EXTENDED for ch in text):
        sizes = [2 if ch in GSM_EXTENDED else 1 for ch in text]
        return Segments("GSM-7", sum(sizes), _pack(sizes, GSM_SINGLE, GSM_PART))
    sizes = [2 if ord(ch) > 0xFFFF else 1 for ch in text]
    return Segments("UCS-2", sum(sizes), _pack(sizes, UCS2_SINGLE, UCS2_PART))


def check_text(text: str, max_parts: int) -> Segments:
    """The text's segments; an empty text or one over `max_parts` is refused."""
    if not text.strip():
        raise TextError("the text is empty")
    segments = count_segments(text)
    if segments.parts > max_parts:
        raise TextError(
            f"the text is {segments.parts} parts ({segments.units} {segments.encoding} "
            f"characters); the limit is {max_parts} parts"
        )
    return segments


def check_sender(sender: str) -> str:
    """The sender, checked: up to 11 letters and digits, or up to 15 digits (`+` dropped).

    Spaces are refused: many networks drop or mangle them in an alphanumeric sender.
    """
    cleaned = sender.strip()
    if _NUMERIC_SENDER.match(cleaned):
        return cleaned.lstrip("+")
    if _ALNUM_SENDER.match(cleaned) and any(ch.isalpha() for ch in cleaned):
        return cleaned
    if not cleaned:
        raise TextError("the sender is empty")
    raise TextError(
        f"sender {sender!r} is not valid: use up to 11 letters and digits (no spaces), "
        "or up to 15 digits"
    )


class Template:
    """A message text with `{column}` placeholders filled from each row of a list.

    Only plain names: no attribute or index access, conversions or format specs, so a list
    cannot make a template read anything but its own cells. `{{` and `}}` are braces.
    A placeholder matches a column by exact name, else by name ignoring case when that is
    unambiguous (spreadsheets vary the case of headers).
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self._parts: list[tuple[str, str | None]] = []
        names: list[str] = []
        try:
            parsed = list(string.Formatter().parse(source))
        except ValueError as exc:
            raise TemplateError(f"the text has a stray brace ({exc}); write {{{{ or }}}}") from None
        for literal, field, spec, conversion in parsed:
            if field is None:
                self._parts.append((literal, None))
                continue
            if field == "" or field.isdigit():
                raise TemplateError("empty or numbered placeholder {}; name a column: {name}")
            if conversion or spec or not re.fullmatch(r"[^.\[\]]+", field):
                raise TemplateError(f"placeholder {{{field}}} must be a plain column name")
            self._parts.append((literal, field))
            if field not in names:
                names.append(field)
        self.placeholders: tuple[str, ...] = tuple(names)
        self._columns: dict[str, str] = {name: name for name in names}

    def check_columns(self, columns: Sequence[str]) -> None:
        """Map placeholders to the list's columns; unknown ones are an error listing columns."""
        exact = set(columns)
        folded: dict[str, list[str]] = {}
        for column in columns:
            folded.setdefault(column.casefold(), []).append(column)
        unknown = []
        for name in self.placeholders:
            if name in exact:
                self._columns[name] = name
            elif len(folded.get(name.casefold(), [])) == 1:
                self._columns[name] = folded[name.casefold()][0]
            else:
                unknown.append(f"{{{name}}}")
        if unknown:
            word = "placeholder" if len(unknown) == 1 else "placeholders"
            raise TemplateError(
                f"unknown {word} {', '.join(unknown)}; the list's columns are: "
                + ", ".join(columns)
            )

    def render(self, row: Mapping[str, str]) -> str:
        """The text for one row; a blank value for a used placeholder is an error."""
        if not self.placeholders:
            return self.source
        out = []
        for literal, field in self._parts:
            out.append(literal)
            if field is not None:
                value = (row.get(self._columns[field]) or "").strip()
                if not value:
                    raise MissingValueError(field)
                out.append(value)
        return "".join(out)
