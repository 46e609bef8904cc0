"""Why a campaign may be sent: its purpose, and for marketing each row's recorded consent.

Marketing goes only to rows whose consent column says yes (or holds the date consent was
given); every other row becomes `no_consent`. Service messages (reminders, receipts) need no
marketing consent. A campaign always names its purpose, so nobody sends marketing by accident.
"""

from __future__ import annotations

import re
from datetime import date

from dispatcher.texts import TextError
from workers.ledger import Purpose

PURPOSES = tuple(Purpose)
YES_VALUES = frozenset({"yes", "ja", "true", "1", "x"})
NO_CONSENT_NOTE = "no consent to marketing in this row"
_ISO_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})(?:[T ].*)?")
_DMY_DATE = re.compile(r"(\d{1,2})[./](\d{1,2})[./](\d{4})")


class ConsentError(TextError):
    """A purpose or consent column that cannot be used; one line for the user."""


def check_purpose(purpose: str | None, consent_column: str | None) -> Purpose:
    """The purpose, lower case; marketing must say which column holds the consent."""
    if not purpose:
        raise ConsentError(
            "say what the campaign is for: --purpose service (reminders, receipts) or"
            " --purpose marketing (needs --consent-column)"
        )
    value = purpose.strip().lower()
    if value not in PURPOSES:
        raise ConsentError(f"--purpose {purpose!r}: use marketing or service")
    if value == Purpose.MARKETING and not (consent_column or "").strip():
        raise ConsentError(
            "a marketing campaign needs --consent-column: the list's column that says who"
            " agreed to marketing (yes, ja, true, 1, x or the date of consent)"
        )
    return Purpose(value)


def check_consent_column(column: str | None, columns: list[str]) -> str | None:
    """The list's own spelling of the consent column; an error when the list has none."""
    if column is None or not column.strip():
        return None
    wanted = column.strip().casefold()
    for name in columns:
        if name.strip().casefold() == wanted:
            return name
    if columns == ["mobile"]:
        raise ConsentError(
            f"the list is only numbers, so it has no consent column {column!r}; marketing"
            " needs a CSV with a consent column"
        )
    raise ConsentError(f"the list has no column {column!r} (columns: {', '.join(columns)})")


def has_consent(cell: str | None) -> bool:
    """A yes value (yes, ja, true, 1, x, any case) or a real calendar date."""
    text = (cell or "").strip()
    if not text:
        return False
    if text.casefold() in YES_VALUES:
        return True
    iso = _ISO_DATE.fullmatch(text)
    if iso:
        return _is_date(int(iso[1]), int(iso[2]), int(iso[3]))
    dmy = _DMY_DATE.fullmatch(text)
    if dmy:
        day, month, year = int(dmy[1]), int(dmy[2]), int(dmy[3])
        # 05/31/2024 (US) and 31.05.2024 are both dates; which one it is does not matter here.
        return _is_date(year, month, day) or _is_date(year, day, month)
    return False


def _is_date(year: int, month: int, day: int) -> bool:
    try:
        date(year, month, day)
    except ValueError:
        return False
    return True
