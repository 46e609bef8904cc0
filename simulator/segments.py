"""SMS segment counting: how many message parts a text is billed as (GSM 03.38 or UCS-2)."""

from __future__ import annotations

# GSM 03.38 default alphabet (one septet each). Escape (0x1B) is left out on purpose: it is
# only a prefix for the extension table, never a character a sender types.
GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# Extension table: each costs two septets (escape + code).
GSM_EXTENSION = frozenset("^{}\\[~]|€\f")

GSM_SINGLE, GSM_PART = 160, 153
UCS2_SINGLE, UCS2_PART = 70, 67


_GSM_ALL = GSM_BASIC | GSM_EXTENSION


def is_gsm(text: str) -> bool:
    """True when every character fits the GSM 03.38 basic or extension table."""
    return set(text) <= _GSM_ALL


def encoding_of(text: str) -> str:
    """The encoding a gateway would pick: ``"GSM-7"`` or ``"UCS-2"``."""
    return "GSM-7" if is_gsm(text) else "UCS-2"


def _pack(widths: list[int], per_part: int) -> int:
    # Greedy packing: a two-unit character (escape pair, surrogate pair) never straddles parts.
    parts, used = 1, 0
    for width in widths:
        if used + width > per_part:
            parts += 1
            used = 0
        used += width
    return parts


def segment_count(text: str) -> int:
    """Number of SMS parts for ``text`` (at least 1).

    Multi-part messages lose room to the UDH: 153 septets (GSM-7) or 67 UTF-16 units (UCS-2)
    per part instead of 160 / 70 for a single one.
    """
    # Set arithmetic runs in C; this sits on the simulator's per-request hot path.
    chars = set(text)
    if chars <= _GSM_ALL:
        wide = chars & GSM_EXTENSION
        total = len(text) + sum(text.count(ch) for ch in wide)
        if total <= GSM_SINGLE:
            return 1
        if not wide:
            return -(-total // GSM_PART)
        return _pack([2 if ch in GSM_EXTENSION else 1 for ch in text], GSM_PART)
    # Outside the BMP a character is a UTF-16 surrogate pair: two code units.
    wide_ucs = max(chars) > "\uffff"
    total = len(text) + (sum(ord(ch) > 0xFFFF for ch in text) if wide_ucs else 0)
    if total <= UCS2_SINGLE:
        return 1
    if not wide_ucs:
        return -(-total // UCS2_PART)
    return _pack([2 if ord(ch) > 0xFFFF else 1 for ch in text], UCS2_PART)
