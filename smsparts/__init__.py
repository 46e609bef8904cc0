"""How many SMS parts a text is billed as: GSM 03.38 septets or UCS-2 code units.

The one segment counter of the project: the producer (`dispatcher.texts`) estimates costs
with it and the simulator (`simulator.segments`) bills with it, so the two can never
disagree. It stands alone at the top level because the simulator may import nothing of
`dispatcher`, `workers` or `config`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

GSM_7 = "GSM-7"
UCS_2 = "UCS-2"

# GSM 03.38 basic character set, in table order, less 0x1B: the escape to the extension table
# is a prefix on the air, not a character a sender types. A raw ESC in a text makes it UCS-2,
# as gateways (and the simulator) bill it.
GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
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


GSM_ALL = _GSM


def is_gsm(text: str) -> bool:
    """True when every character fits the GSM 03.38 basic or extension table."""
    return count_segments(text).encoding == GSM_7


def encoding_of(text: str) -> str:
    """The encoding a gateway would pick: ``"GSM-7"`` or ``"UCS-2"``."""
    return count_segments(text).encoding


def segment_count(text: str) -> int:
    """Number of SMS parts for ``text``, at least 1 (an empty text is still one message)."""
    return count_segments(text).parts or 1
