"""Map one Segment Unify profile to one Voucherify customer (see docs/mapping.md).

Everything here is a pure function of its inputs: no I/O, no logging, no global state.
The same rules are implemented independently in ``migrator_sandbox/oracle.py``; when the
two disagree, ``docs/mapping.md`` is the judge.

Results may be passed straight to ``json.dumps``; no function mutates its arguments.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

__all__ = [
    "CONSUMED_TRAITS",
    "METADATA_MODES",
    "STANDARD_TRAITS",
    "Mapped",
    "MetadataMode",
    "map_profile",
    "normalize_birthdate",
    "select_source_id",
    "string_value",
    "strip_nulls",
]


class MetadataMode(StrEnum):
    """What becomes the customer's metadata (docs/mapping.md)."""

    metadata = "metadata"  # the `metadata` trait
    all = "all"  # every trait not mapped to a field
    none = "none"


METADATA_MODES: tuple[str, ...] = tuple(MetadataMode)

# Address target key -> trait keys, in precedence order (looked up nested first, then flat).
_ADDRESS_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("line_1", ("street", "line_1")),
    ("line_2", ("line_2",)),
    ("city", ("city",)),
    ("state", ("state",)),
    ("postal_code", ("postalCode", "postal_code")),
    ("country", ("country",)),
)

# Doc order; a tuple so the Segment client sends a stable `include=` list.
_CONSUMED_ORDER: tuple[str, ...] = (
    "name",
    "firstName",
    "first_name",
    "lastName",
    "last_name",
    "email",
    "phone",
    "description",
    "birthdate",
    "birthday",
    "address",
    "street",
    "line_1",
    "line_2",
    "city",
    "state",
    "postalCode",
    "postal_code",
    "country",
)
CONSUMED_TRAITS: frozenset[str] = frozenset(_CONSUMED_ORDER)
# Every trait the mapping can read outside "all" mode: fetching only these keeps the
# Segment traits request to a single page.
STANDARD_TRAITS: tuple[str, ...] = (*_CONSUMED_ORDER, "metadata")

# YYYY-MM-DD, then optionally [T ]HH:MM[:SS[.fraction]] with an optional Z / ±HH:MM / ±HHMM.
# [0-9] rather than \d: \d also matches non-ASCII digits such as "١٩٩٠".
_BIRTHDATE_RE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
    r"(?:[T ](?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:\.[0-9]+)?)?"
    r"(?:Z|[+-](?:[01][0-9]|2[0-3]):?[0-5][0-9])?)?"
)
# The first fraction in an ISO timestamp: the seconds fraction, kept beyond microseconds.
_FRACTION_RE = re.compile(r"[.,]([0-9]+)")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_UNPARSEABLE: tuple[int] = (1,)  # sorts after every (0, ...) instant key


@dataclass(frozen=True, slots=True)
class Mapped:
    """The outcome of mapping one profile.

    ``customer`` is None when the profile has no identifier (it must not be sent).
    ``warnings`` name the profile and field, never the value, so logs hold no PII.
    """

    segment_id: str
    customer: dict[str, Any] | None
    warnings: tuple[str, ...]


def string_value(value: Any) -> str | None:
    """Return the "string value" of a trait, or None when it has no value.

    Non-blank strings are kept as is (not stripped); numbers become their decimal text;
    everything else (None, bools, containers, blank strings, nan/inf) has no value.
    """
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


def normalize_birthdate(value: Any) -> str | None:
    """Return the ``YYYY-MM-DD`` part of an ISO 8601 date(-time) string, or None.

    The date is taken as written (no time-zone shift): a birthdate is a calendar day,
    not an instant. The date must exist (1990-02-30 does not) and the year be 0001-9999.
    """
    if not isinstance(value, str):
        return None
    match = _BIRTHDATE_RE.fullmatch(value)
    if match is None:
        return None
    year, month, day = match.groups()
    try:
        date(int(year), int(month), int(day))
    except ValueError:
        return None
    return value[:10]


def strip_nulls(value: Any) -> Any:
    """Return ``value`` without any None inside, recursively.

    A None would erase that key in Voucherify. Containers that become empty are kept
    (they were sent empty on purpose). Dicts and lists are rebuilt, so the result
    never aliases the caller's traits; scalars are returned as is.
    """
    if isinstance(value, dict):
        return {k: strip_nulls(v) for k, v in value.items() if not _is_null(v)}
    if isinstance(value, list):
        return [strip_nulls(v) for v in value if not _is_null(v)]
    return value


def _is_null(value: Any) -> bool:
    """None, and the non-finite floats JSON cannot carry (they would make the body invalid)."""
    return value is None or (isinstance(value, float) and not math.isfinite(value))


def _instant_key(created_at: Any) -> tuple[Any, ...]:
    """Sort key comparing ISO timestamps as instants; unparseable ones sort last.

    Naive timestamps are taken as UTC (Segment reports UTC). Digits past microseconds
    are kept as a string so nanosecond timestamps still order correctly.
    """
    if not isinstance(created_at, str):
        return _UNPARSEABLE
    try:
        parsed = datetime.fromisoformat(created_at)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        micros = (parsed - _EPOCH) // _MICROSECOND
    except (ValueError, OverflowError):
        return _UNPARSEABLE
    fraction = _FRACTION_RE.search(created_at)
    sub_micro = fraction.group(1)[6:].rstrip("0") if fraction else ""
    return (0, micros, sub_micro)


def select_source_id(external_ids: Iterable[Mapping[str, Any]], identifier: str) -> str | None:
    """Pick the customer ``source_id`` from a profile's external ids, or None.

    Among entries of type ``identifier`` whose ``id`` has a string value, the one with
    the earliest ``created_at`` wins (ties: smallest id). The first identity a profile
    got never changes, so reruns keep updating the same customer.
    """
    candidates: list[tuple[Any, str]] = []
    for entry in external_ids:
        if not isinstance(entry, Mapping) or entry.get("type") != identifier:
            continue
        source_id = string_value(entry.get("id"))
        if source_id is not None:
            candidates.append((entry.get("created_at"), source_id))
    if not candidates:
        return None
    if len(candidates) == 1:  # the usual case: no timestamp parsing needed
        return candidates[0][1]
    return min(candidates, key=lambda c: (_instant_key(c[0]), c[1]))[1]


def _map_name(traits: Mapping[str, Any]) -> str | None:
    name = string_value(traits.get("name"))
    if name is not None:
        return name
    first = string_value(traits.get("firstName"))
    if first is None:
        first = string_value(traits.get("first_name"))
    last = string_value(traits.get("lastName"))
    if last is None:
        last = string_value(traits.get("last_name"))
    if first is None:
        return last
    if last is None:
        return first
    return f"{first} {last}"


def _map_address(traits: Mapping[str, Any]) -> dict[str, str]:
    nested = traits.get("address")
    sources = (nested, traits) if isinstance(nested, dict) and nested else (traits,)
    address: dict[str, str] = {}
    for target, keys in _ADDRESS_RULES:
        for source in sources:
            found = None
            for key in keys:
                found = string_value(source.get(key))
                if found is not None:
                    break
            if found is not None:
                address[target] = found
                break
    return address


def _map_metadata(traits: Mapping[str, Any], mode: str) -> dict[str, Any]:
    if mode == "metadata":
        metadata = traits.get("metadata")
        return strip_nulls(metadata) if isinstance(metadata, dict) else {}
    if mode == "all":
        return {
            key: strip_nulls(value)
            for key, value in traits.items()
            if value is not None and key not in CONSUMED_TRAITS
        }
    return {}


def map_profile(
    segment_id: str,
    traits: Mapping[str, Any],
    external_ids: Iterable[Mapping[str, Any]],
    *,
    identifier: str = "user_id",
    metadata_mode: MetadataMode | str = MetadataMode.metadata,
) -> Mapped:
    """Map one profile to a Voucherify customer following docs/mapping.md.

    Fields with no value are omitted (never null or ""), and keys come in the documented
    order. A profile without an identifier yields ``customer=None`` and is not mapped
    further, since it will not be sent.
    """
    if metadata_mode not in METADATA_MODES:
        raise ValueError(f"unknown metadata mode {metadata_mode!r}; use one of {METADATA_MODES}")
    source_id = select_source_id(external_ids, identifier)
    if source_id is None:
        return Mapped(segment_id, None, ())

    get = traits.get
    customer: dict[str, Any] = {"source_id": source_id}
    warnings: tuple[str, ...] = ()

    name = _map_name(traits)
    if name is not None:
        customer["name"] = name
    for field in ("email", "phone", "description"):
        value = string_value(get(field))
        if value is not None:
            customer[field] = value

    raw_birthdate = get("birthdate")
    if raw_birthdate is None:
        raw_birthdate = get("birthday")
    if raw_birthdate is not None:
        birthdate = normalize_birthdate(raw_birthdate)
        if birthdate is None:
            warnings = (f"birthdate dropped for {segment_id}: not an ISO 8601 date",)
        else:
            customer["birthdate"] = birthdate

    address = _map_address(traits)
    if address:
        customer["address"] = address
    metadata = _map_metadata(traits, metadata_mode)
    if metadata:
        customer["metadata"] = metadata
    return Mapped(segment_id, customer, warnings)
