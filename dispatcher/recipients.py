"""Recipient lists: CSV (comma, semicolon or tab) or one number a line, streamed in chunks,
with numbers normalised by `phonenumbers` to the gateway's digits-only international form."""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from phonenumbers import (
    COUNTRY_CODE_TO_REGION_CODE,
    SUPPORTED_REGIONS,
    NumberParseException,
    PhoneMetadata,
    PhoneNumber,
    PhoneNumberDesc,
    PhoneNumberType,
    is_valid_number,
    national_significant_number,
    number_type,
    parse,
)

BOM = "\ufeff"
DELIMITERS = (";", ",", "\t")  # on a tie, the earlier wins: Swedish exports use semicolons

# Header names of the number column, compared without case, spaces, `_`, `-` and `.`
# ("Mobile number", "mobile_number" and "MobileNumber" are all "mobilenumber"). When a
# header has several, the first group wins: a "Mobil" column beats a "Telefon" column, which
# beats a plain "Number" (often a customer number).
NUMBER_COLUMNS = (
    (
        "mobile",
        "mobilenumber",
        "mobileno",
        "mobilephone",
        "msisdn",
        "cell",
        "cellphone",
        "cellnumber",
        "mobil",
        "mobilnr",
        "mobilnummer",
        "mobiltelefon",
        "handy",
        "handynummer",
    ),
    (
        "phone",
        "phonenumber",
        "phoneno",
        "telephone",
        "telephonenumber",
        "tel",
        "telnr",
        "telefon",
        "telefonnr",
        "telefonnummer",
    ),
    ("number", "nummer"),
)
_HEADER_NOISE = str.maketrans("", "", " _-.\u00a0")
_LOOKS_LIKE_NUMBER = re.compile(r"[\d\s+()\-./]*\d[\d\s+()\-./]*")


class RecipientListError(ValueError):
    """A list that cannot be read; one line for the user, naming the file (and line)."""


@dataclass(slots=True)
class Row:
    """One data row: where it is, its number as given and normalised, and its cells by column."""

    line: int  # 1-based physical line in the file (a quoted multi-line row: its first line)
    raw: str  # the number exactly as given, stripped
    mobile: str | None  # international, digits only (no + or 00); None when invalid
    error: str | None  # why the number is not valid, when it is not
    fields: dict[str, str]  # the row's cells by header name; a plain list has {"mobile": raw}


# --- Normalising numbers -------------------------------------------------------------------
#
# `phonenumbers.parse` spends most of its time on generic text handling (finding the number
# in free text, extensions, RFC 3966, letters) that list cells almost never need. So the
# common shapes -- ASCII digits with an optional leading `+` and the separators ` -()./` --
# take a fast path that repeats exactly what `parse` + `is_valid_number` do for such input,
# with the region metadata's patterns compiled once. The fast path only ever answers "valid,
# and this is the number"; everything else (invalid numbers, letters, extensions, anything
# it is not sure of) goes to `_normalise_slowly`, which is the reference implementation.
# tests/test_recipients.py checks both agree over every region's example numbers.

_DROP_SEPARATORS = str.maketrans("", "", " -()./\u00a0")  # all "valid punctuation" to parse
_UNSURE = ""  # fast-path answer: ask the slow path (never a valid number)
_MAX_NSN = 17  # phonenumbers' _MAX_LENGTH_FOR_NSN: longer raises TOO_LONG
_POSSIBLE, _TOO_SHORT, _TOO_LONG, _LOCAL_ONLY, _INVALID_LENGTH = range(5)
_CC_BY_PREFIX = {str(cc): cc for cc in COUNTRY_CODE_TO_REGION_CODE}


_Desc = tuple[frozenset[int], re.Pattern[str]]  # a number type: possible lengths, pattern


class _Plan:
    """One region's metadata as `parse` and `is_valid_number` use it, patterns compiled."""

    __slots__ = (
        "cc",
        "cc_str",
        "fixed",
        "general",
        "general_lengths",
        "idd",
        "leading",
        "lengths",
        "local_lengths",
        "mobile",
        "prefix",
        "same",
        "special",
        "transform",
        "types",
    )

    def __init__(self, md: PhoneMetadata) -> None:
        self.cc: int = md.country_code
        self.cc_str = str(md.country_code)
        general = md.general_desc
        self.general = _compiled(general.national_number_pattern)
        self.general_lengths = frozenset(general.possible_length)
        self.lengths = tuple(general.possible_length)  # in metadata order, as parse reads it
        self.local_lengths = frozenset(general.possible_length_local_only)
        self.idd = _compiled(md.international_prefix)
        self.prefix = _compiled(md.national_prefix_for_parsing)
        self.transform = md.national_prefix_transform_rule or None
        self.leading = _compiled(md.leading_digits)
        self.mobile = _desc(md.mobile)
        self.fixed = _desc(md.fixed_line)
        self.same = bool(md.same_mobile_and_fixed_line_pattern)
        self.special = tuple(
            d
            for d in map(
                _desc,
                [
                    md.premium_rate,
                    md.toll_free,
                    md.shared_cost,
                    md.voip,
                    md.personal_number,
                    md.pager,
                    md.uan,
                    md.voicemail,
                ],
            )
            if d is not None
        )
        # A number is valid when it matches the general pattern and any type's pattern (the
        # order only decides the type). Mobile first: it is most rows. When mobile and fixed
        # line share a pattern phonenumbers tests fixed line only.
        first = [self.fixed] if self.same else [self.mobile, self.fixed]
        self.types = tuple(d for d in [*first, *self.special] if d is not None)


def _desc(desc: PhoneNumberDesc | None) -> _Desc | None:
    if desc is None or not desc.national_number_pattern:
        return None
    return frozenset(desc.possible_length), re.compile(desc.national_number_pattern)


def _desc_matches(desc: _Desc | None, nsn: str) -> bool:
    """phonenumbers: _is_number_matching_desc."""
    if desc is None:
        return False
    lengths, pattern = desc
    return (not lengths or len(nsn) in lengths) and pattern.fullmatch(nsn) is not None


def _compiled(pattern: str | None) -> re.Pattern[str] | None:
    return re.compile(pattern) if pattern else None


_REGION_PLANS: dict[str, _Plan | None] = {}
_MAIN_PLANS: dict[int, _Plan | None] = {}
_CC_PLANS: dict[int, tuple[_Plan, ...]] = {}


def _region_plan(region: str) -> _Plan | None:
    try:
        return _REGION_PLANS[region]
    except KeyError:
        pass
    code = region.upper()
    md = PhoneMetadata.metadata_for_region(code, None) if code in SUPPORTED_REGIONS else None
    plan = _REGION_PLANS[region] = _Plan(md) if md is not None and _usable(md) else None
    return plan


def _usable(md: PhoneMetadata) -> bool:
    # parse reads possible_length[0] and [-1]; without them the fast path stays out.
    return md.general_desc is not None and bool(md.general_desc.possible_length)


def _main_plan(cc: int) -> _Plan | None:
    """The metadata parse uses for numbers of country code `cc`: its main region's."""
    try:
        return _MAIN_PLANS[cc]
    except KeyError:
        pass
    md = PhoneMetadata.metadata_for_region_or_calling_code(cc, COUNTRY_CODE_TO_REGION_CODE[cc][0])
    plan = _MAIN_PLANS[cc] = _Plan(md) if md is not None and _usable(md) else None
    return plan


def _cc_plans(cc: int) -> tuple[_Plan, ...]:
    """Every region of `cc`, in the order region_code_for_number tries them."""
    try:
        return _CC_PLANS[cc]
    except KeyError:
        pass
    plans = []
    for code in COUNTRY_CODE_TO_REGION_CODE[cc]:
        md = PhoneMetadata.metadata_for_region_or_calling_code(cc, code)
        if md is not None:
            plans.append(_Plan(md))
    _CC_PLANS[cc] = result = tuple(plans)
    return result


def _matches(plan: _Plan, nsn: str) -> bool:
    """phonenumbers: _number_type_helper(nsn, metadata) != UNKNOWN."""
    size = len(nsn)
    if plan.general_lengths and size not in plan.general_lengths:
        return False
    if plan.general is None or plan.general.fullmatch(nsn) is None:
        return False
    for lengths, pattern in plan.types:
        if (not lengths or size in lengths) and pattern.fullmatch(nsn) is not None:
            return True
    return False


def _valid(cc: int, nsn: str) -> bool:
    """phonenumbers: is_valid_number(+cc nsn)."""
    plans = _CC_PLANS.get(cc) or _cc_plans(cc)
    if len(plans) == 1:
        return _matches(plans[0], nsn)
    plan = _region_for(plans, nsn)
    return plan is not None and _matches(plan, nsn)


def _region_for(plans: tuple[_Plan, ...], nsn: str) -> _Plan | None:
    """phonenumbers: region_code_for_number. The first region whose leading digits match
    decides; a region without leading digits is chosen when the number is valid there."""
    if len(plans) == 1:
        return plans[0]
    for plan in plans:
        if plan.leading is not None:
            if plan.leading.match(nsn):
                return plan
        elif _matches(plan, nsn):
            return plan
    return None


def _is_mobile(mobile: str) -> bool:
    """phonenumbers: number_type(n) in (MOBILE, FIXED_LINE_OR_MOBILE), for a valid number."""
    for size in (1, 2, 3):  # country codes are a prefix code: the first hit is the one
        cc = _CC_BY_PREFIX.get(mobile[:size])
        if cc is not None:
            break
    else:
        return False
    nsn = mobile[size:]
    plan = _region_for(_CC_PLANS.get(cc) or _cc_plans(cc), nsn)
    if plan is None or not _matches(plan, nsn):
        return False
    # _number_type_helper tests the special types (premium rate, toll free...) first.
    if any(_desc_matches(desc, nsn) for desc in plan.special):
        return False
    return _desc_matches(plan.fixed if plan.same else plan.mobile, nsn)


def _length(nsn: str, plan: _Plan) -> int:
    """phonenumbers: _test_number_length(nsn, metadata) for an unknown type."""
    size = len(nsn)
    if size in plan.local_lengths:
        return _LOCAL_ONLY
    lengths = plan.lengths
    if lengths[0] == size:
        return _POSSIBLE
    if lengths[0] > size:
        return _TOO_SHORT
    if lengths[-1] < size:
        return _TOO_LONG
    return _POSSIBLE if size in lengths[1:] else _INVALID_LENGTH


def _strip_national_prefix(number: str, plan: _Plan) -> str:
    """phonenumbers: _maybe_strip_national_prefix_carrier_code(number, metadata)[1]."""
    prefix = plan.prefix
    if prefix is None or not number:
        return number
    found = prefix.match(number)
    if found is None:
        return number
    groups = found.groups()
    if plan.transform is None or groups[-1:] == (None,):
        stripped = number[found.end() :]
    elif not groups:
        return _UNSURE  # phonenumbers itself fails on this metadata; let it say how
    else:
        stripped = prefix.sub(plan.transform, number, count=1)
    general = plan.general
    if (
        general is not None
        and general.fullmatch(number) is not None
        and general.fullmatch(stripped) is None
    ):
        return number  # the number was viable as it was and would not be after stripping
    return stripped


def _finish(cc: int, nsn: str, plan: _Plan | None) -> str | None:
    """parse's tail (national prefix, lengths) then is_valid_number: mobile, None or unsure."""
    if plan is None or len(nsn) < 2:
        return _UNSURE
    stripped = _strip_national_prefix(nsn, plan)
    if stripped is _UNSURE:
        return _UNSURE
    if stripped != nsn and _length(stripped, plan) in (_POSSIBLE, _TOO_LONG):
        nsn = stripped
    if len(nsn) > _MAX_NSN:
        return _UNSURE
    return f"{cc}{nsn}" if _valid(cc, nsn) else None


def _international(digits: str, unknown: str | None = _UNSURE) -> str | None:
    """`+digits`: mobile, None (not valid) or _UNSURE.

    `unknown` is the answer when parse would raise (too short, no country code); with the
    default region, parse may still retry those, so the default is _UNSURE.
    """
    if len(digits) <= 2 or digits[0] == "0":
        return unknown
    for size in (1, 2, 3):
        cc = _CC_BY_PREFIX.get(digits[:size])
        if cc is not None:
            return _finish(cc, digits[size:], _MAIN_PLANS.get(cc) or _main_plan(cc))
    return unknown


def _national(digits: str, plan: _Plan) -> str | None:
    """`digits` parsed with `plan`'s region as default: mobile, None (not valid) or _UNSURE."""
    if plan.idd is not None:
        idd = plan.idd.match(digits)
        if idd is not None:
            rest = digits[idd.end() :]
            return _international(rest) if rest[:1] not in ("", "0") else _UNSURE
    if digits.startswith(plan.cc_str):
        # parse drops the region's own country code when the number is not viable with it
        # but is without it, or is too long with it ("46701234567" in SE).
        local = _strip_national_prefix(digits[len(plan.cc_str) :], plan)
        if local is _UNSURE:
            return _UNSURE
        general = plan.general
        if (
            general is not None
            and general.fullmatch(digits) is None
            and general.fullmatch(local) is not None
        ) or _length(digits, plan) == _TOO_LONG:
            return _finish(plan.cc, local, _MAIN_PLANS.get(plan.cc) or _main_plan(plan.cc))
    return _finish(plan.cc, digits, plan)


def normalise(raw: str, region: str) -> tuple[str | None, str | None]:
    """(mobile, None) for a valid number, else (None, why not).

    `mobile` is the international number in digits only, the way the gateway writes it
    (`46701234567`). `raw` may be national for `region` (`070-123 45 67`), international
    with `+` or with the region's international prefix (`00` in most of Europe), with any of
    ` -()./` as separators. The number must pass `phonenumbers.is_valid_number`; a number
    with an extension is refused.

    Digits alone that could be international without `+` (the way the gateway and lists
    exported from it write numbers) are read both ways: as a national number of `region`
    and as `+digits` (`00` counts as `+` even where the international prefix is not `00`).
    When only one reading is valid, that one is used. When both are valid and differ, the
    national reading wins unless the international reading is a mobile number and the
    national one is not: in Germany `4915123456789` is both a landline in area code 04915
    and the mobile +49 151 23456789, and only the mobile can receive a text.
    """
    text = raw.strip()
    if not text:
        return None, "empty number"
    if len(text) <= 40:
        compact = text if text.isdigit() else text.translate(_DROP_SEPARATORS)
        if len(compact) >= 4 and compact.isascii():
            mobile: str | None = _UNSURE
            if compact[0] == "+":
                if compact[1:].isdigit():
                    mobile = _international(compact[1:])
            elif compact.isdigit():
                plan = _REGION_PLANS.get(region) or _region_plan(region)
                if plan is not None:
                    mobile = _national(compact, plan)
                    if mobile is not _UNSURE and not _reads_the_same(mobile, compact):
                        other = _bare_international(compact)
                        if other is _UNSURE:
                            mobile = _UNSURE
                        elif other is not None:
                            mobile = _choose(mobile, other, _is_mobile)
            if mobile:
                return mobile, None
    return _normalise_slowly(text, region)


def _reads_the_same(mobile: str | None, digits: str) -> bool:
    """Whether `digits` read as international is sure to give `mobile` again: it is written
    that way already (`46701234567`, `0046701234567`) and has no national prefix to strip."""
    if mobile is None or mobile != (digits[2:] if digits.startswith("00") else digits):
        return False
    for size in (1, 2, 3):
        cc = _CC_BY_PREFIX.get(mobile[:size])
        if cc is not None:
            plan = _MAIN_PLANS.get(cc) or _main_plan(cc)
            return plan is not None and (
                plan.prefix is None or not plan.prefix.match(mobile[size:])
            )
    return False


def _bare_international(digits: str) -> str | None:
    """The reading of digits as international without `+`: mobile, None or _UNSURE."""
    if digits.startswith("00"):
        return _international(digits[2:], None)
    if digits[0] != "0":
        return _international(digits, None)
    return None  # a national number with its trunk prefix


def _choose(national: str | None, other: str, is_mobile: Callable[[str], bool]) -> str:
    """The national or the bare international reading of the same digits (`other` valid)."""
    if national is None or national == other:
        return other
    return other if is_mobile(other) and not is_mobile(national) else national


def _normalise_slowly(text: str, region: str) -> tuple[str | None, str | None]:
    """normalise by phonenumbers alone, for any input; also the reference for the fast path."""
    code = region.upper()
    error = None
    found: dict[str, PhoneNumber] = {}  # valid readings by mobile
    national = None
    try:
        number = parse(text, code)
    except NumberParseException as exc:
        error = _parse_error(exc, code)
    else:
        if not is_valid_number(number):
            error = _invalid(number, code)
        elif number.extension:
            return None, "has an extension; give the number alone"
        else:
            national = _digits(number)
            found[national] = number
    compact = text.translate(_DROP_SEPARATORS)
    if compact.isascii() and compact.isdigit():
        if compact.startswith("00"):
            candidate = "+" + compact[2:]
        elif compact[:1] != "0":
            candidate = "+" + compact
        else:
            candidate = ""
        try:
            other = parse(candidate, None) if candidate else None
        except NumberParseException:
            other = None
        if other is not None and is_valid_number(other):
            found[_digits(other)] = other

            def is_mobile(mobile: str) -> bool:
                kind = number_type(found[mobile])
                return kind in (PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE)

            return _choose(national, _digits(other), is_mobile), None
    if national is not None:
        return national, None
    return None, error


def _digits(number: PhoneNumber) -> str:
    return f"{number.country_code}{national_significant_number(number)}"


def _parse_error(exc: NumberParseException, region: str) -> str:
    kind = exc.error_type
    if kind == NumberParseException.INVALID_COUNTRY_CODE:
        if region not in SUPPORTED_REGIONS:
            return f"unknown region {region} for a national number"
        return "unknown country code"
    if kind in (NumberParseException.TOO_SHORT_NSN, NumberParseException.TOO_SHORT_AFTER_IDD):
        return "too short to be a phone number"
    if kind == NumberParseException.TOO_LONG:
        return "too long to be a phone number"
    return "not a phone number"


def _invalid(number: PhoneNumber, region: str) -> str:
    plan = _region_plan(region)
    if plan is not None and number.country_code == plan.cc:
        return f"not a valid number for {region}"
    regions = COUNTRY_CODE_TO_REGION_CODE.get(number.country_code, ())
    if len(regions) == 1 and regions[0].isalpha():
        return f"not a valid number for {regions[0]}"
    return f"not a valid number for country code +{number.country_code}"


# --- Reading lists -------------------------------------------------------------------------


class RecipientList:
    """An opened list: format detected, number column found; rows are streamed by `chunks`.

    A CSV has a header; its delimiter (comma, semicolon or tab) is detected from the header
    line. A file whose first non-empty line is only digits, spaces and `+()-./` is a plain
    list: one number a line, no header, columns `["mobile"]`. Text is UTF-8, with or
    without a byte order mark.
    """

    def __init__(
        self,
        path: Path,
        columns: list[str],
        number_column: str,
        delimiter: str | None,
        region: str,
    ) -> None:
        self.path = path
        self.columns = columns
        self.number_column = number_column
        self.delimiter = delimiter
        self.region = region

    def __repr__(self) -> str:
        return (
            f"RecipientList({str(self.path)!r}, number_column={self.number_column!r},"
            f" delimiter={self.delimiter!r}, region={self.region!r})"
        )

    @classmethod
    def open(
        cls, path: str | Path, *, column: str | None = None, region: str = "SE"
    ) -> RecipientList:
        """Read just enough of the file to know its shape; RecipientListError if unusable."""
        path = Path(path)
        code = region.strip().upper()
        if code not in SUPPORTED_REGIONS:
            raise RecipientListError(
                f"unknown region {region!r} for national numbers; use a two-letter country"
                " code such as SE"
            )
        with _open(path) as fh:
            lines = _decoded_lines(path, fh)
            header_line, first = _first_line(lines)
            if not first:
                raise RecipientListError(f"{path} is empty: it has no rows")
            if _LOOKS_LIKE_NUMBER.fullmatch(first.strip()):
                if column is not None and column.strip().casefold() != "mobile":
                    raise RecipientListError(
                        f"{path} is a plain list of numbers without a header, so it has no"
                        f" column {column!r}; leave out --column"
                    )
                return cls(path, ["mobile"], "mobile", None, code)
            delimiter, columns, number_column = _read_header(path, first, column)
            reader = csv.reader(lines, delimiter=delimiter)
            rows = _checked(path, reader, header_line)
            if not any(any(cell.strip() for cell in cells) for cells in rows):
                raise RecipientListError(f"{path} has a header but no rows")
        return cls(path, columns, number_column, delimiter, code)

    def rows(self) -> Iterator[Row]:
        """Every data row, in file order."""
        for chunk in self.chunks():
            yield from chunk

    def chunks(self, size: int = 10_000) -> Iterator[list[Row]]:
        """Rows in lists of up to `size`, numbers normalised; the file is streamed.

        Empty lines are skipped; every other line (a quoted cell may span lines) is a Row,
        valid or not. A row shorter than the header gets "" for the missing cells; cells
        beyond the header are ignored. Duplicates are left to the caller.
        """
        region = self.region
        check = normalise
        chunk: list[Row] = []
        for line, raw, fields in self._records():
            mobile, error = check(raw, region)
            chunk.append(Row(line, raw, mobile, error, fields))
            if len(chunk) >= size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def _records(self) -> Iterator[tuple[int, str, dict[str, str]]]:
        """(line, raw number, fields) of every data row, numbers as given."""
        with _open(self.path) as fh:
            lines = _decoded_lines(self.path, fh)
            if self.delimiter is None:
                for line, text in enumerate(lines, start=1):
                    raw = text.strip()
                    if raw:
                        yield line, raw, {"mobile": raw}
                return
            header_line, _ = _first_line(lines)
            columns = self.columns
            width = len(columns)
            at = columns.index(self.number_column)
            reader = csv.reader(lines, delimiter=self.delimiter)
            done = 0  # lines the reader has consumed: a record starts on the next one
            for cells in _checked(self.path, reader, header_line):
                line = header_line + done + 1
                done = reader.line_num
                if len(cells) < width:
                    if not cells:
                        continue
                    cells += [""] * (width - len(cells))
                raw = cells[at].strip()
                if not raw and not any(cell.strip() for cell in cells):
                    continue  # only delimiters and spaces: an empty line
                yield line, raw, dict(zip(columns, cells, strict=False))


def _open(path: Path) -> IO[bytes]:
    if not path.exists():
        raise RecipientListError(f"{path}: no such file")
    if not path.is_file():
        raise RecipientListError(f"{path} is not a file")
    try:
        return path.open("rb")
    except OSError as exc:
        raise RecipientListError(f"{path} cannot be read: {exc.strerror or exc}") from None


def _decoded_lines(path: Path, fh: IO[bytes]) -> Iterator[str]:
    """The file's lines as text; a byte that is not UTF-8 raises an error naming its line."""
    data = next(iter(fh), None)
    if data is None:
        return
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise RecipientListError(f"{path} is UTF-16 text; save the list as UTF-8 (CSV UTF-8)")
    if b"\r" in data.rstrip(b"\r\n"):
        # Old Mac line ends: the whole file would be one line.
        raise RecipientListError(
            f"{path} has line 1 ending in a bare carriage return (old Mac text);"
            " save the list as CSV UTF-8"
        )
    yield _decode(path, 1, data).removeprefix(BOM)
    for number, data in enumerate(fh, start=2):
        yield _decode(path, number, data)


def _decode(path: Path, number: int, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        column = len(data[: exc.start].decode("utf-8", "replace").removeprefix(BOM)) + 1
        raise RecipientListError(
            f"{path}: line {number} is not UTF-8 (byte 0x{data[exc.start]:02x} at column"
            f" {column}); save the list as UTF-8"
        ) from None


def _first_line(lines: Iterator[str]) -> tuple[int, str]:
    """(line number, text) of the first line that is not blank; (0, "") if there is none."""
    for number, text in enumerate(lines, start=1):
        if text.strip():
            return number, text
    return 0, ""


def _checked(path: Path, reader: Any, offset: int) -> Iterator[list[str]]:
    """csv rows, with csv's own errors (a runaway quote) turned into one line for the user."""
    start = offset + 1
    try:
        for cells in reader:
            yield cells
            start = offset + reader.line_num + 1
    except csv.Error as exc:
        raise RecipientListError(
            f"{path}: the row starting on line {start} cannot be read as CSV ({exc});"
            " check its quotes"
        ) from None


def _read_header(path: Path, first: str, column: str | None) -> tuple[str, list[str], str]:
    """(delimiter, columns, number column) from the header line."""
    unquoted = re.sub(r'"[^"]*"', "", first)
    found = [d for d in DELIMITERS if d in unquoted]
    found.sort(key=unquoted.count, reverse=True)  # stable: ties keep DELIMITERS order
    tried: list[tuple[str, list[str]]] = []
    for delimiter in found or [","]:
        columns = [cell.strip() for cell in next(csv.reader([first], delimiter=delimiter))]
        tried.append((delimiter, columns))
        number_column = _number_column(path, columns, column)
        if number_column is not None:
            return delimiter, columns, number_column
    delimiter, columns = tried[0]
    shown = ", ".join(c for c in columns if c) or "(none)"
    if column is not None:
        raise RecipientListError(f"{path} has no column {column!r}; the columns are: {shown}")
    hint = ""
    if any(_LOOKS_LIKE_NUMBER.fullmatch(c) for c in columns):
        hint = " (the first line looks like data: a CSV list needs a header line)"
    raise RecipientListError(
        f"{path} has no number column{hint}; the columns are: {shown};"
        " name the number column with --column"
    )


def _number_column(path: Path, columns: list[str], wanted: str | None) -> str | None:
    if wanted is not None:
        wanted = wanted.strip()
        if wanted in columns:
            return wanted
        matches = [c for c in columns if c.casefold() == wanted.casefold()]
        if len(matches) > 1:
            raise RecipientListError(
                f"{path} has several columns named {wanted!r} ({', '.join(matches)});"
                " give --column with the exact case"
            )
        return matches[0] if matches else None
    keys = [c.casefold().translate(_HEADER_NOISE) for c in columns]
    for group in NUMBER_COLUMNS:
        matches = list(dict.fromkeys(c for c, k in zip(columns, keys, strict=True) if k in group))
        if len(matches) > 1:
            raise RecipientListError(
                f"{path} has several number columns ({', '.join(matches)});"
                " choose one with --column"
            )
        if matches:
            return matches[0]
    return None


def read_numbers(path: str | Path, *, column: str | None = None) -> list[str]:
    """The numbers of a small file (an opt-out list) as given: one a line, or a CSV column."""
    recipients = RecipientList.open(path, column=column)
    return [raw for _, raw, _ in recipients._records() if raw]
