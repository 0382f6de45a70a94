"""The Voucherify customer metadata schema, and fitting a customer's metadata to it.

Voucherify checks every *defined* metadata key even in its default mode: one value of the
wrong type, or outside the allowed values, rejects the whole customer, and only after a
bulk call and a poll. Checking here first lets the migrator convert what converts without
loss ("34" for a number key), and decide what to do with the rest (``SchemaPolicy``)
before any API call is spent. The rules are in docs/mapping.md ("The metadata schema").

Pure: no I/O. Reasons name the key and the rule, never the value (values are customer
data, and reasons end up in logs and the failure ledger).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from migrator.coercion import Coercion, coerce, parse_length, parse_limit, parse_value_set

__all__ = [
    "METADATA_TYPES",
    "SCHEMA_POLICIES",
    "Coercion",
    "KeyEvent",
    "KeyStatus",
    "KeyTally",
    "MetadataSchema",
    "PropertyDefinition",
    "SchemaOutcome",
    "SchemaPolicy",
    "SchemaReport",
    "apply_schema",
    "coerce",
]

SchemaPolicy = Literal["drop_value", "drop_customer", "send"]
SCHEMA_POLICIES: tuple[str, ...] = ("drop_value", "drop_customer", "send")
METADATA_TYPES: tuple[str, ...] = (
    "string",
    "number",
    "object",
    "date",
    "datetime",
    "geopoint",
    "boolean",
    "image_url",
)
# What happened to one key of one customer:
# filled   - sent, the value fitted as it was
# coerced  - sent, converted without loss to the defined type
# dropped  - left out (policy drop_value); the customer is still sent
# refused  - the customer is refused because of this value (policy drop_customer, or a
#            required key whose value did not fit)
# sent     - did not fit but sent as is (policy send): Voucherify will likely reject it
# undefined - an undefined key left out because the schema allows defined keys only
# missing  - a required key absent from a customer being created: the customer is refused
KeyStatus = Literal["filled", "coerced", "dropped", "refused", "sent", "undefined", "missing"]

_REQUIRED_RULE = "required when a customer is created (optional: false)"
_UNDEFINED_RULE = "not defined in the schema, which allows defined keys only"


# -- the schema -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PropertyDefinition:
    """One key of the schema, with its constraints already in comparable form.

    ``eq``/``ne`` hold canonical keys of the allowed/forbidden values (see ``_eq_key``);
    ``lt``..``gte`` hold numbers, dates or aware datetimes depending on ``type``. A
    constraint the migrator cannot read is left out: Voucherify still checks it.
    """

    key: str
    type: str
    array: bool = False
    optional: bool = True
    deleted: bool = False
    eq: frozenset[Any] = frozenset()
    ne: frozenset[Any] = frozenset()
    lt: Any = None
    lte: Any = None
    gt: Any = None
    gte: Any = None
    min_length: int | None = None
    max_length: int | None = None
    exact_length: int | None = None
    object_type: str | None = None

    @classmethod
    def from_body(cls, key: str, body: Mapping[str, Any]) -> PropertyDefinition:
        """Read one definition of ``GET /v1/metadata-schemas/customer``'s ``properties``."""
        if not isinstance(body, Mapping):
            raise ValueError(f"metadata schema: the definition of {key!r} is not an object")
        kind = body.get("type")
        kind = kind if isinstance(kind, str) else "unknown"
        limits = {name: parse_limit(kind, body.get(name)) for name in ("lt", "lte", "gt", "gte")}
        object_type = body.get("objectType")
        return cls(
            key=key,
            type=kind,
            array=body.get("array") is True,
            optional=body.get("optional") is not False,
            deleted=body.get("deleted") is True,
            eq=parse_value_set(kind, body.get("eq")),
            ne=parse_value_set(kind, body.get("ne")),
            min_length=parse_length(body.get("minLength")),
            max_length=parse_length(body.get("maxLength")),
            exact_length=parse_length(body.get("exactLength")),
            object_type=object_type if isinstance(object_type, str) else None,
            **limits,
        )


@dataclass(frozen=True, slots=True)
class MetadataSchema:
    """The customer metadata schema: live definitions, and whether other keys are allowed.

    Deleted definitions are kept apart in ``deleted`` and otherwise ignored: their keys are
    undefined keys.
    """

    properties: Mapping[str, PropertyDefinition] = field(default_factory=dict)
    allow_defined_only: bool = False
    deleted: frozenset[str] = frozenset()
    _required: tuple[str, ...] = field(init=False, repr=False, compare=False)

    @classmethod
    def from_body(cls, body: Mapping[str, Any] | None) -> MetadataSchema:
        """Read the body of ``GET /v1/metadata-schemas/customer``; None (a 404) = no schema.

        Raises ValueError when the body is not shaped like a schema at all; unknown types
        and unreadable constraints are tolerated (Voucherify still checks them).
        """
        if body is None:
            return cls()
        if not isinstance(body, Mapping):
            raise ValueError("metadata schema: the body is not an object")
        raw = body.get("properties") or {}
        if not isinstance(raw, Mapping):
            raise ValueError("metadata schema: properties is not an object")
        live: dict[str, PropertyDefinition] = {}
        deleted = set()
        for key, definition_body in raw.items():
            definition = PropertyDefinition.from_body(str(key), definition_body)
            if definition.deleted:
                deleted.add(definition.key)
            else:
                live[definition.key] = definition
        return cls(live, body.get("allow_defined_only") is True, frozenset(deleted))

    @property
    def required(self) -> tuple[str, ...]:
        """Keys a customer must have when it is created."""
        return self._required

    def __post_init__(self) -> None:
        required = tuple(key for key, d in self.properties.items() if not d.optional)
        object.__setattr__(self, "_required", required)

    @property
    def checks_anything(self) -> bool:
        """False when no customer could be changed by this schema (skip the work)."""
        return bool(self.properties) or self.allow_defined_only


# -- a whole customer --------------------------------------------------------------------------


class KeyEvent(NamedTuple):
    """What happened to one key of one customer (``rule``: why, when it did not fit).

    A NamedTuple: one is made per defined key of every customer, and it is cheap."""

    key: str
    status: KeyStatus
    rule: str | None = None

    @property
    def reason(self) -> str | None:
        return None if self.rule is None else f"metadata key {self.key!r}: {self.rule}"


@dataclass(frozen=True, slots=True)
class SchemaOutcome:
    """A customer's metadata after the schema: ``metadata`` to send (None when refused),
    ``refused`` (the reason for the failure ledger) and one event per key that the schema
    concerned (undefined keys that are simply kept have none): undefined keys first, then
    in the schema's order. ``metadata`` keeps the customer's key order."""

    metadata: dict[str, Any] | None
    refused: str | None
    events: tuple[KeyEvent, ...]


def apply_schema(
    metadata: Mapping[str, Any],
    schema: MetadataSchema | None,
    policy: SchemaPolicy = "drop_value",
    *,
    creating: bool,
) -> SchemaOutcome:
    """Fit one customer's metadata (``{}`` when it has none) to ``schema``.

    ``creating``: the customer does not exist in Voucherify yet, so its required keys must
    all be there (whatever the policy). ``metadata`` is never mutated; when the schema
    checks nothing the result is a plain copy of it.
    """
    if policy not in SCHEMA_POLICIES:
        raise ValueError(f"unknown schema policy {policy!r}; use one of {SCHEMA_POLICIES}")
    if schema is None or not schema.checks_anything:
        return SchemaOutcome(dict(metadata), None, ())
    properties = schema.properties
    events: list[KeyEvent] = []
    refusals: list[KeyEvent] = []
    if schema.allow_defined_only:
        kept = {key: value for key, value in metadata.items() if key in properties}
        events.extend(
            KeyEvent(key, "undefined", _UNDEFINED_RULE) for key in metadata if key not in kept
        )
    else:
        kept = dict(metadata)  # undefined keys pass as they are
    # Only defined keys need work: walk the (usually shorter) schema, not every trait.
    for key, definition in properties.items():
        if key not in kept:
            continue
        value = kept[key]
        result = coerce(value, definition)
        if result.ok:
            kept[key] = result.value
            events.append(KeyEvent(key, "coerced" if result.coerced else "filled"))
            continue
        if policy == "send":
            events.append(KeyEvent(key, "sent", result.rule))
            continue
        del kept[key]
        if policy == "drop_customer":
            refusals.append(KeyEvent(key, "refused", result.rule))
        elif creating and not definition.optional:
            # Dropping it would leave a required key out: Voucherify would reject anyway.
            refusals.append(KeyEvent(key, "refused", f"{result.rule}; {_REQUIRED_RULE}"))
        else:
            events.append(KeyEvent(key, "dropped", result.rule))
    if creating:
        for key in schema.required:
            if key not in metadata:
                refusals.append(KeyEvent(key, "missing", _REQUIRED_RULE))
    if refusals:
        reason = "; ".join(event.reason or "" for event in refusals)
        return SchemaOutcome(None, f"metadata does not fit the schema: {reason}", tuple(refusals))
    return SchemaOutcome(kept, None, tuple(events))


# -- over a run -------------------------------------------------------------------------------


@dataclass
class KeyTally:
    """Counts of one key over many customers (one per status), and of each broken rule."""

    filled: int = 0
    coerced: int = 0
    dropped: int = 0
    refused: int = 0
    sent: int = 0
    undefined: int = 0
    missing: int = 0
    rules: Counter[str] = field(default_factory=Counter)

    @property
    def problems(self) -> int:
        return self.dropped + self.refused + self.sent + self.undefined + self.missing


@dataclass
class SchemaReport:
    """Adds up SchemaOutcomes for the per-key table and the warning summary of a run."""

    customers: int = 0
    refused_customers: int = 0
    keys: dict[str, KeyTally] = field(default_factory=dict)

    def add(self, outcome: SchemaOutcome) -> None:
        self.customers += 1
        if outcome.refused is not None:
            self.refused_customers += 1
        for event in outcome.events:
            tally = self.keys.get(event.key)
            if tally is None:
                tally = self.keys[event.key] = KeyTally()
            setattr(tally, event.status, getattr(tally, event.status) + 1)
            if event.rule is not None:
                tally.rules[event.rule] += 1

    def warnings(self) -> list[str]:
        """One line per key that had problems, worst first; names keys and rules only."""
        lines = []
        ranked = sorted(self.keys.items(), key=lambda item: (-item[1].problems, item[0]))
        for key, tally in ranked:
            if not tally.problems:
                continue
            counts = [
                f"{getattr(tally, status)} {label}"
                for status, label in (
                    ("dropped", "dropped"),
                    ("refused", "refused the customer"),
                    ("missing", "missing (required)"),
                    ("sent", "sent although invalid"),
                    ("undefined", "undefined, dropped"),
                )
                if getattr(tally, status)
            ]
            rules = ", ".join(f"{rule} ({n})" for rule, n in tally.rules.most_common(3))
            lines.append(f"metadata key {key!r}: {', '.join(counts)}: {rules}")
        return lines
