"""The mapping file: which traits fill which customer field and metadata key (TOML).

This module only reads, checks and describes a mapping (``MappingSpec``); applying it to
a profile is ``migrator.mapping.map_profile``. The built-in rules of docs/mapping.md are
themselves a mapping file (``builtin_mapping_toml``), so the migrator has one code path
whether or not the user wrote a file, and ``migrator mapping init`` can hand the user the
exact rules it would apply.

Every problem in a file is reported as one ``ConfigError`` line naming the file, the
entry and what is wrong, because the user fixes files one message at a time.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

from migrator.exceptions import ConfigError
from migrator.mapping_spec import (
    ADDRESS_FIELDS,
    CUSTOMER_FIELDS,
    ENTRY_KEYS,
    FIELD_TRANSFORMS,
    METADATA_MODES,
    TEXT_TRANSFORMS,
    TRANSFORMS,
    Entry,
    Join,
    MappingSpec,
    MetadataMode,
    Source,
    TraitPath,
)

__all__ = [
    "ADDRESS_FIELDS",
    "CUSTOMER_FIELDS",
    "METADATA_MODES",
    "TRANSFORMS",
    "Entry",
    "Join",
    "MappingSpec",
    "MetadataMode",
    "TraitPath",
    "builtin_mapping_toml",
    "builtin_spec",
    "load_mapping",
    "parse_mapping",
]


# -- the built-in rules ---------------------------------------------------------------------

_BUILTIN_TOML = """\
# How a Segment profile becomes a Voucherify customer: the migrator's built-in rules,
# written as a mapping file. Edit it, then run the migrator with this file.
# The format and every rule: docs/mapping.md ("The mapping file").
#
# An entry is a trait ("email"), a list of traits tried in order (the first with a value
# wins), or a table: { from = [...], as = "...", default = ..., required = true }.
# A dot reads inside a trait: "address.city" is the key city of the trait address.

# The rest of the metadata, besides the keys under [metadata]: "metadata" (the `metadata`
# trait object), "all" (every trait that no entry reads) or "none".
metadata_mode = "{mode}"

[customer]
# `name`, else first name and last name joined by a space (either may be missing).
name = [
    "name",
    { join = [["firstName", "first_name"], ["lastName", "last_name"]], separator = " " },
]
email = "email"
phone = "phone"
description = "description"
# The first of the two that is not null; it must be an ISO 8601 date or date-time, else it
# is dropped with a warning (and `birthday` is not looked at).
birthdate = { from = ["birthdate", "birthday"], as = "date" }

[customer.address]
# The nested `address` trait first, then the same keys at trait level.
line_1 = ["address.street", "address.line_1", "street", "line_1"]
line_2 = ["address.line_2", "line_2"]
city = ["address.city", "city"]
state = ["address.state", "state"]
postal_code = ["address.postalCode", "address.postal_code", "postalCode", "postal_code"]
country = ["address.country", "country"]

[metadata]
# One entry per metadata key, for example:
# plan = { from = ["plan", "subscription.plan"], as = "lower", default = "free" }
# signed_up_at = { from = "createdAt", as = "datetime" }
"""


def builtin_mapping_toml(metadata_mode: str = "metadata") -> str:
    """The text ``migrator mapping init`` writes: the built-in rules as a mapping file.

    Loading it gives exactly the customers (and warnings) of the migrator without a file.
    """
    if metadata_mode not in METADATA_MODES:
        raise ValueError(f"unknown metadata mode {metadata_mode!r}; use one of {METADATA_MODES}")
    return _BUILTIN_TOML.replace("{mode}", metadata_mode)


_BUILTIN_SPECS: dict[str, MappingSpec] = {}


def builtin_spec(metadata_mode: str = "metadata") -> MappingSpec:
    """The built-in rules as a spec (parsed once per mode)."""
    spec = _BUILTIN_SPECS.get(metadata_mode)
    if spec is None:
        spec = parse_mapping(builtin_mapping_toml(metadata_mode))
        _BUILTIN_SPECS[metadata_mode] = spec
    return spec


# -- reading a file ---------------------------------------------------------------------------


def load_mapping(path: str | Path) -> MappingSpec:
    """Read and check a mapping file; any problem is one ConfigError line."""
    origin = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"{origin}: cannot read the mapping file: {exc.strerror or exc}"
        ) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{origin}: the mapping file is not UTF-8 text") from None
    return parse_mapping(text, origin=origin)


def parse_mapping(text: str, *, origin: str = "<built-in>") -> MappingSpec:
    """Check a mapping file's text and turn it into a spec (``origin`` names it in errors)."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib names the line, except at the end of the text: name the last line there.
        lines = max(1, len(text.splitlines()))
        problem = str(exc).replace("(at end of document)", f"(at the end, line {lines})")
        raise ConfigError(f"{origin}: not valid TOML: {problem}") from None
    return _Reader(origin).document(document)


class _Reader:
    """Walks a parsed TOML document; ``fail`` names the file and entry in one line."""

    def __init__(self, origin: str) -> None:
        self.origin = origin

    def fail(self, where: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.origin}: {where}: {problem}")

    def document(self, document: dict[str, Any]) -> MappingSpec:
        for key in document:
            if key not in ("metadata_mode", "customer", "metadata"):
                raise self.fail(
                    key,
                    "unknown setting (a mapping file has metadata_mode, [customer], [metadata])",
                )
        mode = document.get("metadata_mode", "metadata")
        if mode not in METADATA_MODES:
            raise self.fail("metadata_mode", f"must be one of {', '.join(METADATA_MODES)}")
        fields = self.customer(self.table(document, "customer"))
        metadata = []
        for key, value in self.table(document, "metadata").items():
            if not key.strip():
                raise self.fail(f"metadata.{key}", "a metadata key must not be blank")
            metadata.append(self.entry(f"metadata.{key}", value, None))
        return MappingSpec(fields, tuple(metadata), MetadataMode(mode), self.origin)

    def table(self, parent: dict[str, Any], name: str) -> dict[str, Any]:
        value = parent.get(name, {})
        if not isinstance(value, dict):
            raise self.fail(name, "must be a table")
        return value

    def customer(self, table: dict[str, Any]) -> tuple[Entry, ...]:
        raw: dict[str, Any] = {}
        for key, value in table.items():
            if key == "address" and isinstance(value, dict) and not _is_entry_table(value):
                for sub, sub_value in value.items():
                    self.put(raw, f"address.{sub}", sub_value)
            else:
                self.put(raw, key, value)
        return tuple(
            self.entry(f"customer.{name}", raw[name], name)
            for name in CUSTOMER_FIELDS
            if name in raw
        )

    def put(self, raw: dict[str, Any], name: str, value: Any) -> None:
        where = f"customer.{name}"
        if name == "address":
            raise self.fail(where, "the address is filled key by key: address.city = ... and so on")
        if name == "source_id":
            raise self.fail(
                where, "source_id comes from the external ids (IDENTIFIER_SAVED_AS_SOURCE_ID)"
            )
        if name not in CUSTOMER_FIELDS:
            raise self.fail(where, f"unknown customer field (fields: {', '.join(CUSTOMER_FIELDS)})")
        if name in raw:
            raise self.fail(where, "given twice")
        raw[name] = value

    def entry(self, where: str, value: Any, field_name: str | None) -> Entry:
        """One entry; ``field_name`` is the customer field, None for a metadata key."""
        target = field_name if field_name is not None else where
        if isinstance(value, str | list):
            return Entry(
                target, self.sources(where, value), self.transform(where, None, field_name)
            )
        if not isinstance(value, dict):
            raise self.fail(where, "must be a trait, a list of traits or a table")
        for key in value:
            if key not in ENTRY_KEYS:
                hint = "" if field_name else "; quote a metadata key that holds a dot"
                raise self.fail(
                    where,
                    f"unknown setting {key!r} (an entry takes {', '.join(ENTRY_KEYS)}{hint})",
                )
        if "from" not in value:
            raise self.fail(where, "needs from = a trait or a list of traits")
        transform = self.transform(where, value.get("as"), field_name)
        if "separator" in value and transform != "join":
            raise self.fail(where, 'separator only goes with as = "join"')
        if transform == "join":
            separator = self.separator(where, value.get("separator", " "))
            sources: tuple[Source, ...] = (Join(self.parts(where, value["from"]), separator),)
            transform = None
        else:
            sources = self.sources(where, value["from"])
        required = value.get("required", False)
        if not isinstance(required, bool):
            raise self.fail(where, "required must be true or false")
        default = None
        if "default" in value:
            if required:
                raise self.fail(where, "has both a default and required = true (pick one)")
            default = self.default(where, value["default"], transform, field_name)
        return Entry(target, sources, transform, default, required)

    def transform(self, where: str, name: Any, field_name: str | None) -> str | None:
        if name is None:
            return "date" if field_name == "birthdate" else None
        if not isinstance(name, str) or (name not in TRANSFORMS and name != "join"):
            known = ", ".join([*TRANSFORMS, "join"])
            raise self.fail(where, f"unknown transformation {name!r} (as = one of {known})")
        if field_name == "birthdate" and name != "date":
            raise self.fail(where, 'birthdate is a date: as = "date" or nothing')
        if field_name is not None and name not in FIELD_TRANSFORMS:
            raise self.fail(
                where,
                f"customer fields are text: as = one of {', '.join(FIELD_TRANSFORMS)}",
            )
        return None if name == "string" and field_name is not None else name

    def sources(self, where: str, value: Any) -> tuple[Source, ...]:
        items = value if isinstance(value, list) else [value]
        if not items:
            raise self.fail(where, "from is empty")
        sources: list[Source] = []
        for item in items:
            if isinstance(item, dict):
                sources.append(self.join_table(where, item))
            else:
                sources.append(self.path(where, item))
        return tuple(sources)

    def join_table(self, where: str, table: dict[str, Any]) -> Join:
        for key in table:
            if key not in ("join", "separator"):
                raise self.fail(where, f"unknown setting {key!r} in a join (join, separator)")
        if "join" not in table:
            raise self.fail(where, "a table in from must be { join = [...], separator = ... }")
        return Join(
            self.parts(where, table["join"]), self.separator(where, table.get("separator", " "))
        )

    def parts(self, where: str, value: Any) -> tuple[tuple[TraitPath, ...], ...]:
        if not isinstance(value, list) or not value:
            raise self.fail(where, "join needs a list of traits")
        parts = []
        for part in value:
            paths = part if isinstance(part, list) else [part]
            if not paths:
                raise self.fail(where, "a part of a join is an empty list")
            parts.append(tuple(self.path(where, p) for p in paths))
        return tuple(parts)

    def separator(self, where: str, value: Any) -> str:
        if not isinstance(value, str):
            raise self.fail(where, "separator must be a string")
        return value

    def path(self, where: str, value: Any) -> TraitPath:
        if not isinstance(value, str):
            raise self.fail(where, f"a trait must be a string, not {_toml_type(value)}")
        segments = tuple(value.split("."))
        if not all(segments):
            raise self.fail(where, f"bad trait path {value!r} (empty part around a dot)")
        return segments

    def default(self, where: str, value: Any, transform: str | None, field_name: str | None) -> Any:
        value = _plain(value)
        if value is _NOT_JSON:
            raise self.fail(
                where, "default must be a string, number, boolean, date, array or table"
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise self.fail(where, "default must be a finite number")
        kind = transform or ("string" if field_name is not None else None)
        if kind is None:
            return value
        converted = TRANSFORMS[kind](value)
        if converted is None:
            what = (
                "a non-blank string"
                if kind in TEXT_TRANSFORMS
                else f'a value that as = "{kind}" accepts'
            )
            raise self.fail(where, f"default must be {what}")
        return converted


_NOT_JSON = object()


def _plain(value: Any) -> Any:
    """A TOML value as JSON would carry it: dates as ISO text; a bare time cannot be."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, time):
        return _NOT_JSON
    if isinstance(value, dict):
        items = {k: _plain(v) for k, v in value.items()}
        return _NOT_JSON if any(v is _NOT_JSON for v in items.values()) else items
    if isinstance(value, list):
        listed = [_plain(v) for v in value]
        return _NOT_JSON if any(v is _NOT_JSON for v in listed) else listed
    return value


def _is_entry_table(value: Mapping[str, Any]) -> bool:
    """``address = { from = ... }`` would be an entry, which the address field is not."""
    return "from" in value


def _toml_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return "a date or time"
