"""Value conversions shared by the mapping (``as = ...`` in a mapping file) and the check
against the Voucherify metadata schema (see docs/mapping.md, "Values" and "Conversions").

One module so that "34" becomes the same number, and a date-time the same text, whether a
mapping file asked for it or the metadata schema did. Every converter is pure and total:
it returns the converted value, or None when the value does not convert *losslessly* (the
caller decides whether that is "no value" or a warning). None is never a converted value.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

__all__ = [
    "MAX_EXACT_INT",
    "is_null",
    "is_number_text",
    "normalize_birthdate",
    "parse_instant",
    "string_value",
    "strip_nulls",
    "to_boolean",
    "to_date",
    "to_datetime",
    "to_integer",
    "to_json",
    "to_lower",
    "to_number",
    "to_trim",
]

# Voucherify reads JSON numbers as doubles: past 2**53 an integer is no longer exact, so a
# text such as "12345678901234567890" is not converted (it would silently change).
MAX_EXACT_INT = 2**53

# YYYY-MM-DD, then optionally [T ]HH:MM[:SS[.fraction]] with an optional Z / ±HH:MM / ±HHMM.
# [0-9] rather than \d: \d also matches non-ASCII digits such as "١٩٩٠".
_ISO_RE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
    r"(?:[T ]([01][0-9]|2[0-3]):([0-5][0-9])(?::([0-5][0-9])(?:\.([0-9]+))?)?"
    r"(Z|[+-](?:[01][0-9]|2[0-3]):?[0-5][0-9])?)?"
)
# A plain decimal number as people write it in text; no spaces, no "NaN", no "0x".
_NUMBER_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def string_value(value: Any) -> str | None:
    """Return the "string value" of a trait, or None when it has no value.

    Non-blank strings are kept as is (not stripped); numbers become their decimal text;
    everything else (None, bools, containers, blank strings, nan/inf) has no value.
    """
    if value is None:  # first: most traits a mapping asks for are absent
        return None
    if isinstance(value, str):
        return value if value and not value.isspace() else None
    if isinstance(value, bool):  # bool is an int subclass: check it first
        return None
    if isinstance(value, int):
        return _int_text(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        if value.is_integer():
            return _int_text(int(value))
        return float.__repr__(value)
    return None


def _int_text(value: int) -> str:
    """Decimal text of an int, even past Python's 4300-digit str() limit."""
    try:
        return int.__repr__(value)  # not str(): an IntEnum would render its name
    except ValueError:
        # Decimal converts without the digit limit and prints exponent-0 values in full.
        return str(Decimal(value))


def is_null(value: Any) -> bool:
    """None, and the non-finite floats JSON cannot carry (they would make the body invalid)."""
    return value is None or (isinstance(value, float) and not math.isfinite(value))


def strip_nulls(value: Any) -> Any:
    """Return ``value`` without any None (or nan/inf) inside, recursively.

    A None would erase that key in Voucherify. Containers that become empty are kept
    (they were sent empty on purpose). Dicts and lists are rebuilt, so the result
    never aliases the caller's traits; scalars are returned as is.
    """
    # `is_null` and the call for a scalar inlined: metadata is mostly scalars, and two calls
    # per value were most of the time (callgrind, warehouse dry-run replay).
    if isinstance(value, dict):
        return {
            k: strip_nulls(v) if isinstance(v, _CONTAINERS) else v
            for k, v in value.items()
            if v is not None and not (isinstance(v, float) and not math.isfinite(v))
        }
    if isinstance(value, list):
        return [
            strip_nulls(v) if isinstance(v, _CONTAINERS) else v
            for v in value
            if v is not None and not (isinstance(v, float) and not math.isfinite(v))
        ]
    return value


_CONTAINERS = (dict, list)


def _iso_match(value: Any) -> re.Match[str] | None:
    """The ISO date(-time) match of ``value`` if its calendar date exists, else None."""
    if not isinstance(value, str):
        return None
    match = _ISO_RE.fullmatch(value)
    if match is None:
        return None
    try:
        date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        return None
    return match


def normalize_birthdate(value: Any) -> str | None:
    """Return the ``YYYY-MM-DD`` part of an ISO 8601 date(-time) string, or None.

    The date is taken as written (no time-zone shift): a birthdate is a calendar day,
    not an instant. The date must exist (1990-02-30 does not) and the year be 0001-9999.
    """
    if type(value) is str and len(value) == 10 and value[4] == value[7] == "-":
        # YYYY-MM-DD, what birthdates mostly are (the dashes rule out a week date, which
        # `fromisoformat` also reads): ~2 -> 0.3 µs without the regex (timeit).
        try:
            date.fromisoformat(value)  # in C: ASCII digits, and the date must exist
            return value
        except ValueError:
            pass  # the regex decides, as for every other shape
    return None if _iso_match(value) is None else value[:10]


to_date = normalize_birthdate


def to_datetime(value: Any) -> str | None:
    """An ISO date or date-time as ``YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)``, or None.

    The offset is kept as written (it says which local time the source meant); a value
    with no zone is UTC, since Segment reports UTC; a bare date is midnight UTC. Seconds
    are always written, the fraction is kept digit for digit.
    """
    match = _iso_match(value)
    if match is None:
        return None
    hour, minute, second, fraction, zone = match.group(4, 5, 6, 7, 8)
    text = f"{value[:10]}T{hour or '00'}:{minute or '00'}:{second or '00'}"
    if fraction:
        text += "." + fraction
    if not zone or zone == "Z":
        return text + "Z"
    if len(zone) == 5:  # ±HHMM
        zone = f"{zone[:3]}:{zone[3:]}"
    return text + zone


def parse_instant(value: Any) -> datetime | None:
    """An ISO date or date-time as an aware datetime (digits past microseconds dropped).

    For comparisons only (the ``lt``/``gt`` rules of a metadata schema), never for output.
    """
    text = to_datetime(value)
    if text is None:
        return None
    match = _ISO_RE.fullmatch(text)
    assert match is not None  # to_datetime writes a form the pattern reads
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    tz = UTC
    if zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        tz = timezone(sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
    moment = datetime(
        int(year), int(month), int(day), int(hour), int(minute), int(second), micro, tz
    )
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 is before datetime.min in UTC
        return None


def to_number(value: Any) -> int | float | None:
    """A JSON number for ``value`` if the conversion loses nothing, else None.

    Numbers are kept as they are (bools are never numbers). A decimal text becomes an int
    when it is integral and exact as a double (|n| <= 2**53), otherwise a float, but only
    if that float reads back as the same decimal ("0.1" yes, "0.10000000000000000001" no).
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if not isinstance(value, str) or _NUMBER_RE.fullmatch(value) is None:
        return None
    try:
        exact = Decimal(value)
    except InvalidOperation:  # pragma: no cover - the pattern only lets decimals through
        return None
    # adjusted() is the exponent of the leading digit: checking it first keeps int() from
    # building a huge integer out of "1e999999999".
    if exact.adjusted() < 16 and exact == exact.to_integral_value():
        number = int(exact)
        if abs(number) <= MAX_EXACT_INT:
            return number
    as_float = float(exact)
    if not math.isfinite(as_float) or Decimal(float.__repr__(as_float)) != exact:
        return None
    return as_float


def is_number_text(value: Any) -> bool:
    """Whether ``value`` is written as a decimal number (even one to_number refuses)."""
    return isinstance(value, str) and _NUMBER_RE.fullmatch(value) is not None


def to_integer(value: Any) -> int | None:
    """An int for ``value`` if it is a whole number (see to_number), else None."""
    number = to_number(value)
    if isinstance(number, float):
        if not number.is_integer() or abs(number) > MAX_EXACT_INT:
            return None
        return int(number)
    return number


def to_boolean(value: Any) -> bool | None:
    """A bool, or the text "true"/"false" in any case; numbers are never booleans."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.lower()
        if lowered == "true":
            return True
        if lowered == "false":
            return False
    return None


def to_lower(value: Any) -> str | None:
    """The string value in lower case (e-mail addresses compare case-insensitively)."""
    text = string_value(value)
    return None if text is None else text.lower()


def to_trim(value: Any) -> str | None:
    """The string value without surrounding whitespace (never empty: blanks have no value)."""
    text = string_value(value)
    return None if text is None else text.strip()


def to_json(value: Any) -> str | None:
    """The compact JSON text of ``value``; None when JSON cannot carry it (nan, huge ints).

    Lets a structured trait (an object, a list) land in a field or key that takes text.
    """
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (ValueError, TypeError, RecursionError):
        return None
