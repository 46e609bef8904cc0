"""Phone numbers: a list cell to the gateway's digits-only international form, by
`phonenumbers`, with a fast path for the common shapes that gives the same answers."""

from __future__ import annotations

import re
from collections.abc import Callable

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

# --- Normalising numbers -------------------------------------------------------------------
#
# `phonenumbers.parse` spends most of its time on generic text handling (finding the number
# in free text, extensions, RFC 3966, letters) that list cells almost never need. So the
# common shapes -- ASCII digits with an optional leading `+` and the separators ` -()./` --
# take a fast path that repeats exactly what `parse` + `is_valid_number` do for such input,
# with the region metadata's patterns compiled once. The fast path only ever answers "valid,
# and this is the number"; everything else (invalid numbers, letters, extensions, anything
# it is not sure of) goes to `_normalise_slowly`, which is the reference implementation.
# tests/test_numbers.py checks both agree over every region's example numbers.

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
        "kinds",
        "leading",
        "lengths",
        "local_lengths",
        "mobile",
        "ordered",
        "prefix",
        "same",
        "special",
        "transform",
        "types",
    )

    def __init__(self, md: PhoneMetadata) -> None:
        general, cc = md.general_desc, md.country_code
        if general is None or cc is None:  # loaded metadata always has both
            raise ValueError(f"phonenumbers metadata for {md.id} has no general description")
        self.cc: int = cc
        self.cc_str = str(cc)
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
        # The types phonenumbers tests before fixed line and mobile, in its order, each with
        # whether it can receive a text (VoIP and personal numbers often can; the rest not).
        special = [
            (md.premium_rate, False),
            (md.toll_free, False),
            (md.shared_cost, False),
            (md.voip, True),
            (md.personal_number, True),
            (md.pager, False),
            (md.uan, False),
            (md.voicemail, False),
        ]
        self.ordered = tuple((d, ok) for d, ok in ((_desc(x), ok) for x, ok in special) if d)
        self.special = tuple(d for d, _ in self.ordered)
        # The type test as one regex per number length: the types in phonenumbers' order as
        # named alternatives, so the first that matches (fullmatch tries them in order) is the
        # number's type. Fixed line, when mobile has its own pattern, needs one more test.
        self.kinds = _kinds(self.ordered, self.fixed, None if self.same else self.mobile)
        # A number is valid when it matches the general pattern and any type's pattern (the
        # order only decides the type). Mobile first: it is most rows. When mobile and fixed
        # line share a pattern phonenumbers tests fixed line only.
        first = [self.fixed] if self.same else [self.mobile, self.fixed]
        self.types = tuple(d for d in [*first, *self.special] if d is not None)


def _kinds(
    ordered: tuple[tuple[_Desc, bool], ...], fixed: _Desc | None, mobile: _Desc | None
) -> dict[int, re.Pattern[str]]:
    named = [(f"{'y' if ok else 'n'}{i}", desc) for i, (desc, ok) in enumerate(ordered)]
    named += [(name, desc) for name, desc in (("fixed", fixed), ("mobile", mobile)) if desc]
    out = {}
    for size in range(1, _MAX_NSN + 1):
        fitting = [
            f"(?P<{name}>{pattern.pattern})"
            for name, (lengths, pattern) in named
            if not lengths or size in lengths
        ]
        if fitting:
            out[size] = re.compile("|".join(fitting))
    return out


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
    """Whether a number known to be valid can receive a text: phonenumbers' number_type is MOBILE,
    FIXED_LINE_OR_MOBILE, VOIP or PERSONAL_NUMBER (not fixed line, toll free, premium rate,
    shared cost, UAN, voicemail or pager)."""
    for size in (1, 2, 3):  # country codes are a prefix code: the first hit is the one
        cc = _CC_BY_PREFIX.get(mobile[:size])
        if cc is not None:
            break
    else:
        return False
    nsn = mobile[size:]
    plans = _CC_PLANS.get(cc) or _cc_plans(cc)
    plan = plans[0] if len(plans) == 1 else _region_for(plans, nsn)
    if plan is None:
        return False
    # Only ever asked about valid numbers, so the general pattern is known to match.
    # phonenumbers: _number_type_helper, which tests the other types first.
    pattern = plan.kinds.get(len(nsn))
    found = pattern.fullmatch(nsn) if pattern is not None else None
    if found is None:
        return False
    kind = found.lastgroup or ""
    if kind == "fixed":
        return plan.same or _desc_matches(plan.mobile, nsn)
    return kind == "mobile" or kind[:1] == "y"


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


NOT_MOBILE = "not a mobile number"
NOT_A_NUMBER = "not a phone number"
# What spreadsheets and address books put around a number: `="0701234567"` (Excel keeping a
# leading zero), a leading `'` (the same in LibreOffice), and `tel:` (RFC 3966 links).
_EXCEL_TEXT = re.compile(r'=\s*"(.*)"', re.DOTALL)
_WRAPPED = ("=", "'", "t", "T")


def unwrap(text: str) -> str:
    """The cell without the spreadsheet or link wrapping people export numbers in."""
    if text[:1] == "=":
        found = _EXCEL_TEXT.fullmatch(text)
        return found.group(1).strip() if found else text
    if text[:1] == "'":
        return text[1:].strip()
    if text[:4].lower() == "tel:":
        return text[4:].strip()
    return text


def normalise(raw: str, region: str, *, landlines: bool = False) -> tuple[str | None, str | None]:
    """(mobile, None) for a number that can be texted, else (None, why not).

    `mobile` is the international number in digits only, the way the gateway writes it
    (`46701234567`). `raw` may be national for `region` (`070-123 45 67`), international
    with `+` or with the region's international prefix (`00` in most of Europe), with any of
    ` -()./` as separators, and wrapped as spreadsheets export it (`tel:`, a leading `'`,
    `="..."`). The number must pass `phonenumbers.is_valid_number`; a number with an
    extension is refused, and so is a cell with letters in it ("Mob 0701234567": whatever
    phonenumbers would dig out of free text is a guess). A valid number that cannot receive
    a text (fixed line, toll free, premium rate, shared cost, UAN, voicemail, pager) is
    "not a mobile number" unless `landlines` (gateways that speak texts to landlines).

    Cells of digits alone (the gateway's own way of writing numbers: international without
    `+`), and cells starting `00`, are read both ways: as a national number of `region` and
    as `+digits` (`00` counts as `+` even where the international prefix is not `00`). A
    cell with national formatting (`(201) 555-0123`, `08-123 456 78`) is only ever read as
    national: read as international it would send a US list to Egypt. When both readings
    are valid and differ, the national one wins unless the international one is a mobile
    and the national one is not: in Germany `4915123456789` is both a landline in area code
    04915 and the mobile +49 151 23456789, and only the mobile can receive a text.
    """
    text = raw.strip()
    if text[:1] in _WRAPPED:
        text = unwrap(text)
    if not text:
        return None, "empty number"
    if len(text) <= 40:
        alone = text.isdigit()
        compact = text if alone else text.translate(_DROP_SEPARATORS)
        if len(compact) >= 4 and compact.isascii():
            mobile: str | None = _UNSURE
            if compact[0] == "+":
                if compact[1:].isdigit():
                    mobile = _international(compact[1:])
            elif compact.isdigit():
                plan = _REGION_PLANS.get(region) or _region_plan(region)
                if plan is not None:
                    mobile = _national(compact, plan)
                    if (
                        (alone or compact.startswith("00"))
                        and mobile is not _UNSURE
                        and not _reads_the_same(mobile, compact)
                    ):
                        other = _bare_international(compact)
                        if other is _UNSURE:
                            mobile = _UNSURE
                        elif other is not None:
                            mobile = _choose(mobile, other, _is_mobile)
            if mobile:
                if landlines or _is_mobile(mobile):
                    return mobile, None
                return None, NOT_MOBILE
    return _normalise_slowly(text, region, landlines=landlines)


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


def _normalise_slowly(
    text: str, region: str, *, landlines: bool = False
) -> tuple[str | None, str | None]:
    """normalise by phonenumbers alone, for any input; also the reference for the fast path."""
    text = unwrap(text.strip()) if text.strip()[:1] in _WRAPPED else text.strip()
    if not text:
        return None, "empty number"
    code = region.upper()
    error = None
    found: dict[str, PhoneNumber] = {}  # valid readings by mobile
    national = None
    try:
        number = parse(text, code)
    except NumberParseException as exc:
        error = _parse_error(exc, code)
    else:
        if number.extension:
            if not is_valid_number(number):
                return None, _invalid(number, code)
            return None, "has an extension; give the number alone"
        if any(c.isalpha() for c in text):
            return None, NOT_A_NUMBER
        if not is_valid_number(number):
            error = _invalid(number, code)
        else:
            national = _digits(number)
            found[national] = number
    if any(c.isalpha() for c in text) and error is not None:
        return None, NOT_A_NUMBER
    compact = text.translate(_DROP_SEPARATORS)
    alone = text.isascii() and text.isdigit()
    if compact.isascii() and compact.isdigit() and (alone or compact.startswith("00")):
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
                return number_type(found[mobile]) in SENDABLE

            national = _choose(national, _digits(other), is_mobile)
    if national is None:
        return None, error
    if not landlines and number_type(found[national]) not in SENDABLE:
        return None, NOT_MOBILE
    return national, None


SENDABLE = frozenset(
    {
        PhoneNumberType.MOBILE,
        PhoneNumberType.FIXED_LINE_OR_MOBILE,
        PhoneNumberType.VOIP,
        PhoneNumberType.PERSONAL_NUMBER,
    }
)


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
    cc = number.country_code
    regions = COUNTRY_CODE_TO_REGION_CODE.get(cc, ()) if cc is not None else ()
    if len(regions) == 1 and regions[0].isalpha():
        return f"not a valid number for {regions[0]}"
    return f"not a valid number for country code +{number.country_code}"
