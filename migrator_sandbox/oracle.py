"""The expected Voucherify customer of a profile, and a verdict on a finished run.

An independent implementation of docs/mapping.md (written without looking at
migrator/mapping.py), so that a bug in one shows up as a disagreement with the other.

Two rules beyond one profile's mapping (issue 11), implemented here independently too:

- **Ownership.** Profiles whose chosen identifier resolves to the same ``source_id`` share
  one customer. Its *owner* is the profile whose chosen entry (the earliest one of the
  identifier type, as ``source_id_of`` picks it) has the earliest ``created_at``, compared
  as instants, an unparseable one last; ties go to the smallest ``segment_id``. The
  customer must be the owner's; every other profile is a *duplicate*, listed by the
  migrator in ``duplicate-identifiers.csv`` (``source_id,segment_id,owner_segment_id``).
- **Cleared means absent.** The migrator clears a field or key it wrote earlier by sending
  ``null``; a stored ``null`` scalar, or a ``null`` key of ``address`` or ``metadata``,
  therefore counts as absent (and an object left with only ``null`` keys as no object).
"""

from __future__ import annotations

import calendar
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from migrator_sandbox.metadata_rules import comparable, conform, metadata_problems

if TYPE_CHECKING:
    from migrator_sandbox.state import Sandbox

FIELD_ORDER = (
    "source_id",
    "name",
    "email",
    "phone",
    "description",
    "birthdate",
    "address",
    "metadata",
)
CONSUMED_KEYS = frozenset(
    {
        "name", "firstName", "first_name", "lastName", "last_name", "email", "phone",
        "description", "birthdate", "birthday", "address", "street", "line_1", "line_2",
        "city", "state", "postalCode", "postal_code", "country",
    }
)  # fmt: skip
ADDRESS_SOURCES = (
    ("line_1", ("street", "line_1")),
    ("line_2", ("line_2",)),
    ("city", ("city",)),
    ("state", ("state",)),
    ("postal_code", ("postalCode", "postal_code")),
    ("country", ("country",)),
)
METADATA_MODES = ("metadata", "all", "none")

# [0-9], not \d: \d also matches non-ASCII digits such as "١".
_BIRTHDATE = re.compile(
    r"(?P<y>[0-9]{4})-(?P<m>[0-9]{2})-(?P<d>[0-9]{2})"
    r"(?:[T ](?P<hh>[0-9]{2}):(?P<mm>[0-9]{2})(?::(?P<ss>[0-9]{2})(?:\.[0-9]+)?)?"
    r"(?:Z|[+-](?P<zh>[0-9]{2}):?(?P<zm>[0-9]{2}))?)?"
)
_INSTANT = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[T ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:\.([0-9]+))?)?"
    r"(Z|[+-][0-9]{2}:?[0-9]{2})?"
)
_LAST = datetime.max.replace(tzinfo=UTC)


def string_value(value: Any) -> str | None:
    """The mapping's notion of "a string value"; None means the field has no value."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        return value if value.strip() else None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return str(int(value)) if value.is_integer() else repr(value)
    return None


def _instant(text: Any) -> datetime:
    """An external id's created_at as an instant; unparseable ones sort last."""
    if not isinstance(text, str):
        return _LAST
    match = _INSTANT.fullmatch(text)
    if not match:
        return _LAST
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    try:
        micro = int((fraction or "0")[:6].ljust(6, "0"))
        moment = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second or 0), micro
        )
    except ValueError:
        return _LAST
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        digits = zone[1:].replace(":", "")
        offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
        return moment.replace(tzinfo=timezone(sign * offset))
    return moment.replace(tzinfo=UTC)  # "Z", or no zone: read as UTC


def chosen_identity(
    external_ids: Iterable[dict[str, Any]], identifier: str
) -> tuple[datetime, str] | None:
    """(instant, id) of the entry the mapping picks: earliest created_at, then smallest id."""
    best: tuple[datetime, str] | None = None
    for entry in external_ids:
        if entry.get("type") != identifier:
            continue
        value = string_value(entry.get("id"))
        if value is None:
            continue
        key = (_instant(entry.get("created_at")), value)
        if best is None or key < best:
            best = key
    return best


def source_id_of(external_ids: Iterable[dict[str, Any]], identifier: str) -> str | None:
    """The earliest identity of the chosen type: it never changes when ids are added."""
    chosen = chosen_identity(external_ids, identifier)
    return None if chosen is None else chosen[1]


def resolve_owners(
    profiles: Iterable[tuple[str, Iterable[dict[str, Any]]]], identifier: str = "user_id"
) -> tuple[dict[str, str], list[tuple[str, str, str]]]:
    """Owners and duplicates of ``(segment_id, external_ids)`` pairs.

    Returns ``source_id -> owner segment_id`` (profiles with no identifier are left out) and
    the duplicates ``(source_id, segment_id, owner_segment_id)``, sorted.
    """
    best: dict[str, tuple[datetime, str]] = {}
    members: dict[str, list[str]] = {}
    for segment_id, external_ids in profiles:
        chosen = chosen_identity(external_ids, identifier)
        if chosen is None:
            continue
        instant, source_id = chosen
        members.setdefault(source_id, []).append(segment_id)
        key = (instant, segment_id)
        if source_id not in best or key < best[source_id]:
            best[source_id] = key
    owners = {source_id: key[1] for source_id, key in best.items()}
    duplicates = sorted(
        (source_id, segment_id, owners[source_id])
        for source_id, group in members.items()
        if len(group) > 1
        for segment_id in group
        if segment_id != owners[source_id]
    )
    return owners, duplicates


def birthdate_of(traits: dict[str, Any]) -> str | None:
    value = None
    for key in ("birthdate", "birthday"):
        if traits.get(key) is not None:
            value = traits[key]
            break
    if not isinstance(value, str):
        return None
    match = _BIRTHDATE.fullmatch(value)
    if not match:
        return None
    year, month, day = int(match["y"]), int(match["m"]), int(match["d"])
    if not (1 <= year <= 9999 and 1 <= month <= 12):
        return None
    if not 1 <= day <= calendar.monthrange(year, month)[1]:
        return None
    limits = (("hh", 23), ("mm", 59), ("ss", 59), ("zh", 23), ("zm", 59))
    if any(match[g] is not None and int(match[g]) > top for g, top in limits):
        return None
    return value[:10]


def name_of(traits: dict[str, Any]) -> str | None:
    name = string_value(traits.get("name"))
    if name is not None:
        return name
    first = string_value(traits.get("firstName")) or string_value(traits.get("first_name"))
    last = string_value(traits.get("lastName")) or string_value(traits.get("last_name"))
    parts = [part for part in (first, last) if part is not None]
    return " ".join(parts) if parts else None


def address_of(traits: dict[str, Any]) -> dict[str, str] | None:
    nested = traits.get("address")
    sources = (nested, traits) if isinstance(nested, dict) else (traits,)
    address: dict[str, str] = {}
    for target, aliases in ADDRESS_SOURCES:
        for source in sources:
            found = next(
                (v for a in aliases if (v := string_value(source.get(a))) is not None), None
            )
            if found is not None:
                address[target] = found
                break
    return address or None


def without_nulls(value: Any) -> Any:
    """Nulls would erase keys in Voucherify: drop them at every depth, keep emptied containers."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value if v is not None]
    return value


def metadata_of(traits: dict[str, Any], mode: str) -> dict[str, Any] | None:
    if mode == "none":
        return None
    if mode == "metadata":
        raw = traits.get("metadata")
        source = raw if isinstance(raw, dict) else {}
    elif mode == "all":
        source = {k: v for k, v in traits.items() if k not in CONSUMED_KEYS}
    else:
        raise ValueError(f"metadata_mode must be one of {METADATA_MODES}")
    return without_nulls(source) or None


def expected_customer(
    segment_id: str,
    traits: dict[str, Any],
    external_ids: Iterable[dict[str, Any]],
    identifier: str = "user_id",
    metadata_mode: str = "metadata",
    schema: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any] | None:
    """The customer docs/mapping.md asks for; None when the profile has no identifier.

    With a metadata ``schema``, defined keys hold their loose values converted to the
    schema's types (date-times as aware datetimes: see ``metadata_rules.conform``).

    ``segment_id`` only names the profile in warnings in the real mapping; the oracle
    takes it to keep the same signature.
    """
    del segment_id
    source_id = source_id_of(external_ids, identifier)
    if source_id is None:
        return None
    values = {
        "source_id": source_id,
        "name": name_of(traits),
        "email": string_value(traits.get("email")),
        "phone": string_value(traits.get("phone")),
        "description": string_value(traits.get("description")),
        "birthdate": birthdate_of(traits),
        "address": address_of(traits),
        "metadata": conform(metadata_of(traits, metadata_mode), schema or {}),
    }
    return {key: values[key] for key in FIELD_ORDER if values[key] is not None}


@dataclass
class Verification:
    """How a finished run compares with what the oracle expects; names fields, never values."""

    expected: int = 0
    arrived: int = 0
    correct: int = 0
    missing: list[str] = field(default_factory=list)
    wrong: list[tuple[str, str]] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    no_identifier: set[str] = field(default_factory=set)
    #: (source_id, segment_id, owner_segment_id) of every profile that is not its
    #: source_id's owner, sorted: what duplicate-identifiers.csv must list.
    duplicates: list[tuple[str, str, str]] = field(default_factory=list)
    #: source_ids whose stored metadata the schema would reject (a value of another type)
    off_schema: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.expected == self.arrived == self.correct
            and not self.missing
            and not self.wrong
            and not self.unexpected
            and not self.off_schema
        )

    def summary(self) -> str:
        return (
            f"expected={self.expected} arrived={self.arrived} correct={self.correct} "
            f"missing={len(self.missing)} wrong={len(self.wrong)} "
            f"unexpected={len(self.unexpected)} no_identifier={len(self.no_identifier)} "
            f"duplicates={len(self.duplicates)} off_schema={len(self.off_schema)}"
        )


def stored_view(customer: dict[str, Any]) -> dict[str, Any]:
    """A stored customer as the mapping sees it: cleared (``null``) fields and keys of
    ``address`` / ``metadata`` removed; an object left with only cleared keys removed too.

    Only those top-level keys: a ``null`` deeper inside metadata is data the migrator
    should never have sent, so it stays and shows up as a difference.
    """
    view: dict[str, Any] = {}
    for key, value in customer.items():
        if value is None:
            continue
        if key in ("address", "metadata") and isinstance(value, dict):
            kept = {k: v for k, v in value.items() if v is not None}
            if not kept and value:
                continue
            value = kept
        view[key] = value
    return view


def differences(
    stored: dict[str, Any],
    expected: dict[str, Any],
    schema: dict[str, dict[str, Any]] | None = None,
) -> list[str]:
    """Fields where a stored customer differs from the expected one, nulls as cleared."""
    actual = stored_view(stored)
    if schema and "metadata" in actual:
        actual["metadata"] = comparable(actual["metadata"], schema)
    keys = [*expected, *(k for k in actual if k not in expected)]
    return [key for key in keys if actual.get(key, _ABSENT) != expected.get(key, _ABSENT)]


def verify(
    sandbox: Sandbox, identifier: str = "user_id", metadata_mode: str = "metadata"
) -> Verification:
    """Compare ``sandbox.customers`` with the expected customer of every source_id's owner.

    One pass, holding per source_id only the best owner so far and how its expected
    customer compares with the stored one, so big sandboxes verify in bounded memory.
    """
    result = Verification()
    stored = sandbox.customers
    schema = sandbox.settings.schema
    # source_id -> (owner key, outcome): None = missing, else the differing fields.
    best: dict[str, tuple[tuple[datetime, str], tuple[str, ...] | None]] = {}
    members: dict[str, list[str]] = {}
    for segment_id in sandbox.segment_ids():
        traits, external_ids = sandbox.profile(segment_id)
        chosen = chosen_identity(external_ids, identifier)
        if chosen is None:
            result.no_identifier.add(segment_id)
            continue
        instant, source_id = chosen
        key = (instant, segment_id)
        previous = best.get(source_id)
        if previous is not None:
            group = members.setdefault(source_id, [previous[0][1]])
            group.append(segment_id)
            if previous[0] <= key:
                continue
        expected = expected_customer(
            segment_id, traits, external_ids, identifier, metadata_mode, schema
        )
        assert expected is not None and expected["source_id"] == source_id
        actual = stored.get(source_id)
        outcome = None if actual is None else tuple(differences(actual, expected, schema))
        best[source_id] = (key, outcome)
    for source_id, (_, outcome) in best.items():
        result.expected += 1
        if outcome is None:
            result.missing.append(source_id)
            continue
        result.arrived += 1
        if not outcome:
            result.correct += 1
        result.wrong.extend((source_id, key) for key in outcome)
    for source_id, group in members.items():
        owner = best[source_id][0][1]
        result.duplicates.extend((source_id, sid, owner) for sid in group if sid != owner)
    result.duplicates.sort()
    result.unexpected = [sid for sid in stored if sid not in best]
    result.off_schema = sorted(
        sid
        for sid, customer in stored.items()
        if metadata_problems(
            customer.get("metadata"),
            schema,
            creating=False,
            allow_defined_only=sandbox.settings.allow_defined_only,
        )
    )
    return result


_ABSENT = object()
