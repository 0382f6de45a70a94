"""What a mapping is: the customer fields, the transformations, and a compiled-ready
``MappingSpec`` (read from TOML by ``migrator.mapping_file``, applied by
``migrator.mapping.map_profile``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from migrator.values import (
    string_value,
    to_boolean,
    to_date,
    to_datetime,
    to_integer,
    to_json,
    to_lower,
    to_number,
    to_trim,
)


class MetadataMode(StrEnum):
    """What becomes the customer's metadata besides the file's keys (docs/mapping.md)."""

    metadata = "metadata"  # the `metadata` trait
    all = "all"  # every trait no entry reads
    none = "none"


METADATA_MODES: tuple[str, ...] = tuple(MetadataMode)

ADDRESS_FIELDS: tuple[str, ...] = (
    "line_1",
    "line_2",
    "city",
    "state",
    "postal_code",
    "country",
)
# The customer fields a file may fill, in the order the customer dict has them.
CUSTOMER_FIELDS: tuple[str, ...] = (
    "name",
    "email",
    "phone",
    "description",
    "birthdate",
    *(f"address.{key}" for key in ADDRESS_FIELDS),
)

# Converter of each transformation: value -> converted value, or None when it does not
# convert. "join" is not here: it builds the value from several traits (see Join).
TRANSFORMS: dict[str, Callable[[Any], Any]] = {
    "string": string_value,
    "lower": to_lower,
    "trim": to_trim,
    "number": to_number,
    "integer": to_integer,
    "boolean": to_boolean,
    "date": to_date,
    "datetime": to_datetime,
    "json": to_json,
}
# Transformations after which a value that does not convert simply has no value (as a
# blank name has none today), so the next source is tried. With the others, a value that
# is there but does not convert is dropped with a warning.
TEXT_TRANSFORMS = frozenset({"string", "lower", "trim"})
# Why a value was dropped, for the warning (names the rule, never the value).
TRANSFORM_REASONS: dict[str, str] = {
    "number": "not a number",
    "integer": "not an integer",
    "boolean": "not a boolean",
    "date": "not an ISO 8601 date",
    "datetime": "not an ISO 8601 date-time",
    "json": "cannot be written as JSON",
}
# Customer fields are strings in Voucherify: only transformations that give text.
FIELD_TRANSFORMS = ("string", "lower", "trim", "json", "date", "datetime", "join")
ENTRY_KEYS = ("from", "as", "separator", "default", "required")

TraitPath = tuple[str, ...]
"""A trait, then keys inside it: ``("address", "city")`` is written ``address.city``."""


@dataclass(frozen=True, slots=True)
class Join:
    """Several traits joined into one text: each part is the first of its paths with a
    string value; parts with none are left out; no part at all means no value."""

    parts: tuple[tuple[TraitPath, ...], ...]
    separator: str = " "


Source = TraitPath | Join


@dataclass(frozen=True, slots=True)
class Entry:
    """How one customer field or metadata key gets its value.

    ``target`` is a name of CUSTOMER_FIELDS or ``metadata.<key>``. ``sources`` are tried
    in order. ``transform`` None means the target's own kind: text for fields, the date
    for ``birthdate``, the value as is (nulls stripped) for metadata. ``default`` (None:
    none) is used when no source gives a value and is already converted.
    """

    target: str
    sources: tuple[Source, ...]
    transform: str | None = None
    default: Any = None
    required: bool = False

    @property
    def metadata_key(self) -> str | None:
        """The metadata key this entry fills, or None for a customer field."""
        return self.target[9:] if self.target.startswith("metadata.") else None


@dataclass(frozen=True, slots=True)
class MappingSpec:
    """A whole mapping: customer fields (in customer order), metadata keys (in file order)
    and how the rest of the metadata is built (``metadata_mode``)."""

    fields: tuple[Entry, ...] = ()
    metadata: tuple[Entry, ...] = ()
    metadata_mode: MetadataMode = MetadataMode.metadata
    origin: str = "<built-in>"
    consumed: frozenset[str] = field(init=False, compare=False)
    _reads: tuple[str, ...] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        reads: dict[str, None] = {}
        for entry in (*self.fields, *self.metadata):
            for source in entry.sources:
                paths = (
                    [p for part in source.parts for p in part]
                    if isinstance(source, Join)
                    else [source]
                )
                for path in paths:
                    reads[path[0]] = None
        object.__setattr__(self, "_reads", tuple(reads))
        object.__setattr__(self, "consumed", frozenset(reads))

    def traits_to_fetch(self, metadata_mode: str | None = None) -> tuple[str, ...] | None:
        """The top-level traits the mapping reads, in file order, for Segment's ``include=``;
        None when every trait is needed (``all`` mode)."""
        mode = metadata_mode or self.metadata_mode
        if mode == "all":
            return None
        if mode == "metadata" and "metadata" not in self.consumed:
            return (*self._reads, "metadata")
        return self._reads
