"""Map one Segment Unify profile to one Voucherify customer (see docs/mapping.md).

Everything here is a pure function of its inputs: no I/O, no logging, no global state
beyond caches. The rules come from a mapping spec (``migrator.mapping_file``): the user's
mapping file, or the built-in rules, which are themselves a mapping file, so there is one
code path. The built-in rules are implemented independently in
``migrator_sandbox/oracle.py``; when the two disagree, ``docs/mapping.md`` is the judge.

Results may be passed straight to ``json.dumps``; no function mutates its arguments.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from migrator.mapping_file import builtin_spec
from migrator.mapping_spec import (
    METADATA_MODES,
    TEXT_TRANSFORMS,
    TRANSFORM_REASONS,
    TRANSFORMS,
    Entry,
    Join,
    MappingSpec,
    MetadataMode,
    TraitPath,
)
from migrator.values import is_null, normalize_birthdate, string_value, strip_nulls

__all__ = [
    "CONSUMED_TRAITS",
    "METADATA_MODES",
    "STANDARD_TRAITS",
    "Mapped",
    "MappingSpec",
    "MetadataMode",
    "map_profile",
    "normalize_birthdate",
    "select_source_id",
    "string_value",
    "strip_nulls",
]

_BUILTIN = builtin_spec()
# Every trait the built-in fields read; in "all" mode the others become metadata.
CONSUMED_TRAITS: frozenset[str] = _BUILTIN.consumed
# Every trait the built-in mapping can read outside "all" mode: fetching only these keeps
# the Segment traits request to a single page.
STANDARD_TRAITS: tuple[str, ...] = _BUILTIN.traits_to_fetch("metadata") or ()

# The first fraction in an ISO timestamp: the seconds fraction, kept beyond microseconds.
_FRACTION_RE = re.compile(r"[.,]([0-9]+)")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_UNPARSEABLE: tuple[int] = (1,)  # sorts after every (0, ...) instant key


@dataclass(slots=True)  # not frozen: 1.5 -> 0.3 µs to build, once per profile (measured)
class Mapped:
    """The outcome of mapping one profile.

    ``customer`` is None when the profile has no identifier (it must not be sent), or when
    the mapping refused it: then ``refused`` says why (a required field had no value) and
    the profile belongs in the failure ledger. ``warnings`` and ``refused`` name the
    profile and field, never the value, so logs hold no PII.
    """

    segment_id: str
    customer: dict[str, Any] | None
    warnings: tuple[str, ...]
    refused: str | None = None
    source_id: str | None = None
    #: Fields whose trait had a value of a type they cannot take (a boolean `name`, an
    #: object `description`, a list `metadata`, a non-ISO `birthdate`): counted per field.
    dropped: tuple[str, ...] = ()


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
        if not (type(entry) is dict or isinstance(entry, Mapping)):  # a dict: no ABC check
            continue
        if entry.get("type") != identifier:
            continue
        source_id = string_value(entry.get("id"))
        if source_id is not None:
            candidates.append((entry.get("created_at"), source_id))
    if not candidates:
        return None
    if len(candidates) == 1:  # the usual case: no timestamp parsing needed
        return candidates[0][1]
    return min(candidates, key=lambda c: (_instant_key(c[0]), c[1]))[1]


# -- running a mapping spec ---------------------------------------------------------------
#
# A spec is compiled once into the source of one Python function, much like the hand-written
# mapping it replaced (a chain of ``traits.get`` and ``string_value`` calls), because it
# runs per profile, thousands of times a second: walking the spec for each profile, or a
# closure per source, cost 30-40% more. Trait names and field names enter the source only
# through ``repr()`` (a Python string literal, whatever the text); every other object the
# code uses (converters, defaults, messages) is bound by name in its namespace.


def _dig(value: Any, keys: tuple[str, ...]) -> Any:
    """Follow keys into nested dicts; None as soon as something is not a dict."""
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _first_text(*values: Any) -> str | None:
    """The first string value among ``values`` (one part of a join)."""
    for value in values:
        text = string_value(value)
        if text is not None:
            return text
    return None


def _join(separator: str, texts: tuple[str | None, ...]) -> str | None:
    """The parts that have a value, joined; None when none has."""
    present = [text for text in texts if text is not None]
    return separator.join(present) if present else None


_EMPTY: dict[str, Any] = {}  # stands for a nested trait that is not a dict (only read)
_Run = Callable[
    [
        Mapping[str, Any],
        str,
        dict[str, Any],
        dict[str, Any],
        dict[str, Any],
        list[str],
        list[str],
    ],
    "str | None",
]


#: Values no text field can take (so their drop is counted): a boolean, an object, a list.
_NOT_TEXT = (bool, dict, list)


class _Writer:
    """Builds the source of ``run(traits, segment_id, customer, address, metadata, warnings)``,
    which fills the three dicts and the warnings and returns a refusal reason or None."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.namespace: dict[str, Any] = {
            "_dig": _dig,
            "_first_text": _first_text,
            "_join": _join,
            "_is_null": is_null,
            "_strip_nulls": strip_nulls,
            "_deepcopy": copy.deepcopy,
            "_EMPTY": _EMPTY,
            "string_value": string_value,
            "_NOT_TEXT": _NOT_TEXT,
        }
        self.nested: dict[str, str] = {}  # trait -> local holding it when it is a dict

    def bind(self, prefix: str, value: Any) -> str:
        for name, bound in self.namespace.items():
            if bound is value and name.startswith(prefix):
                return name
        name = f"{prefix}{len(self.namespace)}"
        self.namespace[name] = value
        return name

    def emit(self, depth: int, line: str) -> None:
        self.lines.append("    " * depth + line)

    def path(self, path: TraitPath) -> str:
        """An expression for the raw value at ``path`` (None when absent)."""
        if len(path) == 1:
            return f"get({path[0]!r})"
        local = self.nested.get(path[0])
        if local is None:  # hoisted: several entries read inside the same trait
            local = self.nested[path[0]] = f"nested{len(self.nested)}"
        if len(path) == 2:
            return f"{local}.get({path[1]!r})"
        return f"_dig({local}.get({path[1]!r}), {path[2:]!r})"

    def source(self, source: TraitPath | Join) -> str:
        if not isinstance(source, Join):
            return self.path(source)
        parts = []
        for part in source.parts:
            values = ", ".join(self.path(path) for path in part)
            parts.append(f"_first_text({values})" if len(part) > 1 else f"string_value({values})")
        return f"_join({source.separator!r}, ({', '.join(parts)},))"

    def entry(self, entry: Entry, out: str, name: str, label: str) -> None:
        kind = entry.transform or ("string" if entry.metadata_key is None else None)
        exprs = [self.source(source) for source in entry.sources]
        if kind in TEXT_TRANSFORMS:
            # Each source read once, converted only when present (most traits are absent,
            # and every text transformation gives None for None).
            convert = self.bind("convert", TRANSFORMS[kind])
            self.emit(1, "value = None")
            for n, expr in enumerate(exprs):
                depth = 1 if n == 0 else 2
                if n:
                    self.emit(1, "if value is None:")
                self.emit(depth, f"raw{n} = {expr}")
                call = f"{convert}(raw{n})"
                if kind == "string":
                    # `string_value` inlined for text, what most traits hold: a call per
                    # present trait was a tenth of a warehouse dry run's mapping (cProfile).
                    call = (
                        f"((raw{n} if raw{n} and not raw{n}.isspace() else None) "
                        f"if type(raw{n}) is str else {call})"
                    )
                self.emit(depth, f"if raw{n} is not None: value = {call}")
            plain = [f"raw{n}" for n, src in enumerate(entry.sources) if not isinstance(src, Join)]
            if plain:
                wrong = " or ".join(f"isinstance({raw}, _NOT_TEXT)" for raw in plain)
                self.emit(1, f"if value is None and ({wrong}):")
                self.emit(2, f"dropped.append({label!r})")
        elif kind is not None:
            convert = self.bind("convert", TRANSFORMS[kind])
            self.emit(1, f"raw = {exprs[0]}")
            for expr in exprs[1:]:
                self.emit(1, f"if raw is None: raw = {expr}")
            self.emit(1, f"value = None if raw is None else {convert}(raw)")
            self.emit(1, "if value is None and raw is not None:")
            reason = TRANSFORM_REASONS[kind]
            self.emit(
                2, f"warnings.append({label!r} + ' dropped for ' + segment_id + {': ' + reason!r})"
            )
            self.emit(2, f"dropped.append({label!r})")
            if entry.required:
                refusal = f"{label} is required by the mapping and has no value ({reason})"
                self.emit(2, f"return {refusal!r}")
        else:
            self.emit(1, f"raw = {exprs[0]}")
            for expr in exprs[1:]:
                self.emit(1, f"if _is_null(raw): raw = {expr}")
            self.emit(1, "value = None if _is_null(raw) else _strip_nulls(raw)")
        self.emit(1, f"if value is not None: {out}[{name!r}] = value")
        if entry.default is not None:
            default = self.bind("default", entry.default)
            if isinstance(entry.default, dict | list):
                default = f"_deepcopy({default})"  # never share one object between customers
            self.emit(1, f"else: {out}[{name!r}] = {default}")
        elif entry.required:
            refusal = f"{label} is required by the mapping and has no value"
            self.emit(1, f"else: return {refusal!r}")

    def function(self, spec: MappingSpec) -> str:
        for entry in spec.fields:
            if entry.target.startswith("address."):
                self.entry(entry, "address", entry.target[8:], entry.target)
            else:
                self.entry(entry, "customer", entry.target, entry.target)
        for entry in spec.metadata:
            self.entry(entry, "metadata", entry.metadata_key or "", entry.target)
        head = ["def run(traits, segment_id, customer, address, metadata, warnings, dropped):"]
        head.append("    get = traits.get")
        for trait, local in self.nested.items():
            head.append(f"    {local} = get({trait!r})")
            head.append(f"    if not isinstance({local}, dict): {local} = _EMPTY")
        return "\n".join([*head, *self.lines, "    return None", ""])


@dataclass(frozen=True, slots=True)
class _Compiled:
    spec: MappingSpec
    run: _Run
    source: str  # the generated code, for debugging a mapping
    metadata_mode: str
    consumed: frozenset[str]


def _compile(spec: MappingSpec) -> _Compiled:
    writer = _Writer()
    source = writer.function(spec)
    namespace = writer.namespace
    exec(compile(source, f"<mapping {spec.origin}>", "exec"), namespace)  # see above
    return _Compiled(spec, namespace["run"], source, spec.metadata_mode, spec.consumed)


_COMPILED: dict[int, _Compiled] = {}


def _compiled(spec: MappingSpec) -> _Compiled:
    """The compiled form of ``spec``, cached (a run uses one spec for every profile)."""
    found = _COMPILED.get(id(spec))
    if found is None or found.spec is not spec:
        if len(_COMPILED) >= 64:  # specs are few; never let the cache grow without bound
            _COMPILED.clear()
        found = _COMPILED[id(spec)] = _compile(spec)
    return found


_BUILTIN_COMPILED = _compile(_BUILTIN)


def map_profile(
    segment_id: str,
    traits: Mapping[str, Any],
    external_ids: Iterable[Mapping[str, Any]],
    *,
    identifier: str = "user_id",
    metadata_mode: MetadataMode | str | None = None,
    spec: MappingSpec | None = None,
) -> Mapped:
    """Map one profile to a Voucherify customer following docs/mapping.md.

    ``spec`` is a loaded mapping file (None: the built-in rules). ``metadata_mode``, when
    given, overrides the spec's. Fields with no value are omitted (never null or ""), and
    keys come in the documented order. A profile without an identifier yields
    ``customer=None`` and is not mapped further, since it will not be sent.
    """
    compiled = _BUILTIN_COMPILED if spec is None else _compiled(spec)
    mode = metadata_mode or compiled.metadata_mode
    if mode not in METADATA_MODES:
        raise ValueError(f"unknown metadata mode {mode!r}; use one of {METADATA_MODES}")
    source_id = select_source_id(external_ids, identifier)
    if source_id is None:
        return Mapped(segment_id, None, ())

    customer: dict[str, Any] = {"source_id": source_id}
    warnings: list[str] = []
    dropped: list[str] = []
    address: dict[str, Any] = {}
    metadata: dict[str, Any]
    if mode == "metadata":
        raw = traits.get("metadata")
        metadata = strip_nulls(raw) if isinstance(raw, dict) else {}
        if raw is not None and not isinstance(raw, dict):
            dropped.append("metadata")
    elif mode == "all":
        consumed = compiled.consumed
        metadata = {
            key: strip_nulls(value)
            for key, value in traits.items()
            if value is not None
            and key not in consumed
            and (not isinstance(value, float) or math.isfinite(value))
        }
    else:
        metadata = {}
    refused = compiled.run(traits, segment_id, customer, address, metadata, warnings, dropped)
    if refused is not None:
        return Mapped(segment_id, None, tuple(warnings), refused, source_id, tuple(dropped))
    if address:
        customer["address"] = address
    if metadata:
        customer["metadata"] = metadata
    return Mapped(
        segment_id,
        customer,
        tuple(warnings) if warnings else (),
        None,
        source_id,
        tuple(dropped) if dropped else (),
    )
