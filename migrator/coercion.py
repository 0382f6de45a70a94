"""One metadata value against its Voucherify definition: converted when that loses
nothing, checked against the definition's constraints (docs/mapping.md, "The metadata
schema"). Reasons name the rule, never the value."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, NamedTuple, TypeGuard
from urllib.parse import urlsplit

from migrator.values import (
    is_number_text,
    parse_instant,
    string_value,
    to_boolean,
    to_date,
    to_datetime,
    to_number,
)

if TYPE_CHECKING:
    from migrator.schema import PropertyDefinition


# -- one value --------------------------------------------------------------------------------


class Coercion(NamedTuple):
    """The fate of one value: ``ok`` with ``value`` (``coerced`` if converted), or not ok
    with a ``rule`` that was broken. ``reason`` names the key and the rule, never the
    value."""

    key: str
    value: Any = None
    coerced: bool = False
    rule: str | None = None

    @property
    def ok(self) -> bool:
        return self.rule is None

    @property
    def reason(self) -> str | None:
        return None if self.rule is None else f"metadata key {self.key!r}: {self.rule}"


def coerce(value: Any, definition: PropertyDefinition) -> Coercion:
    """Fit ``value`` to ``definition``: convert it when that loses nothing, then check the
    constraints. Never raises, whatever the value."""
    key = definition.key
    if definition.array:
        items, coerced = (value, False) if isinstance(value, list) else ([value], True)
        fitted = []
        for item in items:
            result, item_coerced, rule = _fit(item, definition)
            if rule is not None:
                return Coercion(key, rule=f"an item {rule}")
            fitted.append(result)
            coerced = coerced or item_coerced
        return Coercion(key, fitted, coerced)
    if isinstance(value, list):
        return Coercion(key, rule="a list where one value is expected")
    result, coerced, rule = _fit(value, definition)
    if rule is not None:
        return Coercion(key, rule=f"value {rule}")
    return Coercion(key, result, coerced)


def _fit(value: Any, definition: PropertyDefinition) -> tuple[Any, bool, str | None]:
    """(converted, whether converted, None) or (None, False, broken rule) for one scalar.

    Rules read after "value " or "an item ": "is not a number", "is longer than ...".
    """
    if value is None:
        return None, False, "is null"
    convert = _CONVERTERS.get(definition.type)
    if convert is None:  # a type this migrator does not know: Voucherify will judge
        return value, False, None
    converted = convert(value)
    if converted is None:
        if definition.type == "number" and is_number_text(value):
            return None, False, "has too many digits to be an exact number"
        return None, False, _TYPE_RULES[definition.type]
    rule = _constraint_broken(converted, definition)
    if rule is not None:
        return None, False, rule
    return converted, _changed(value, converted), None


def _changed(before: Any, after: Any) -> bool:
    return type(before) is not type(after) or before != after


def _to_string(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return string_value(value)  # nan/inf have no text: None
    return None


def _to_object(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


_LATITUDE_KEYS = ("lat", "latitude")
_LONGITUDE_KEYS = ("long", "lng", "lon", "longitude")


def _to_geopoint(value: Any) -> dict[str, Any] | None:
    """An object with a finite numeric latitude (-90..90) and longitude (-180..180),
    passed on as is: the migrator does not rename keys it cannot be sure of."""
    if not isinstance(value, dict):
        return None
    lat = next((value[k] for k in _LATITUDE_KEYS if k in value), None)
    lon = next((value[k] for k in _LONGITUDE_KEYS if k in value), None)
    if not (_finite_number(lat) and _finite_number(lon)):
        return None
    return value if -90 <= lat <= 90 and -180 <= lon <= 180 else None


def _finite_number(value: Any) -> TypeGuard[int | float]:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and (not isinstance(value, float) or math.isfinite(value))
    )


def _to_image_url(value: Any) -> str | None:
    """An absolute http(s) URL with a host and no whitespace, as is."""
    if not isinstance(value, str) or any(c.isspace() or ord(c) < 32 for c in value):
        return None
    try:
        parts = urlsplit(value)
    except ValueError:  # e.g. an unbalanced "[" in the host
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    return value


_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "string": _to_string,
    "number": to_number,
    "boolean": to_boolean,
    "date": to_date,
    "datetime": to_datetime,
    "object": _to_object,
    "geopoint": _to_geopoint,
    "image_url": _to_image_url,
}
_TYPE_RULES: dict[str, str] = {
    "string": "is not a string",
    "number": "is not a number",
    "boolean": "is not a boolean",
    "date": "is not an ISO 8601 date",
    "datetime": "is not an ISO 8601 date-time",
    "object": "is not an object",
    "geopoint": "is not a geopoint (lat, long)",
    "image_url": "is not an http(s) URL",
}


def _utf16_length(text: str) -> int:
    """Length as Voucherify (JavaScript) counts it: characters past U+FFFF count twice."""
    return len(text) + sum(1 for c in text if ord(c) > 0xFFFF)


def _constraint_broken(value: Any, d: PropertyDefinition) -> str | None:
    if d.eq and _eq_key(d.type, value) not in d.eq:
        return "is not one of the allowed values (eq)"
    if d.ne and _eq_key(d.type, value) in d.ne:
        return "is one of the forbidden values (ne)"
    if d.lt is not None or d.lte is not None or d.gt is not None or d.gte is not None:
        comparable = _comparable(d.type, value)
        if comparable is not None:
            if d.lt is not None and not comparable < d.lt:
                return f"is not less than lt = {_show(d.lt)}"
            if d.lte is not None and not comparable <= d.lte:
                return f"is greater than lte = {_show(d.lte)}"
            if d.gt is not None and not comparable > d.gt:
                return f"is not greater than gt = {_show(d.gt)}"
            if d.gte is not None and not comparable >= d.gte:
                return f"is less than gte = {_show(d.gte)}"
    if isinstance(value, str) and d.type == "string":
        length = _utf16_length(value)
        if d.min_length is not None and length < d.min_length:
            return f"is shorter than minLength = {d.min_length}"
        if d.max_length is not None and length > d.max_length:
            return f"is longer than maxLength = {d.max_length}"
        if d.exact_length is not None and length != d.exact_length:
            return f"is not exactLength = {d.exact_length} long"
    return None


def _show(limit: Any) -> str:
    """A schema limit as the user wrote it (schema data, not customer data)."""
    if isinstance(limit, datetime | date):
        return limit.isoformat()
    return str(limit)


def _comparable(kind: str, value: Any) -> Any:
    """A canonical value as something ``<`` orders, or None if the type has no order."""
    if kind == "number":
        return value
    if kind == "date":
        return date.fromisoformat(value)
    if kind == "datetime":
        return parse_instant(value)
    return None


def parse_limit(kind: str, raw: Any) -> Any:
    """A schema's lt/lte/gt/gte in comparable form, or None if absent or unreadable."""
    if raw is None or kind not in ("number", "date", "datetime"):
        return None
    converted = _CONVERTERS[kind](raw)
    return None if converted is None else _comparable(kind, converted)


def parse_length(raw: Any) -> int | None:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        return None
    if isinstance(raw, float) and not raw.is_integer():
        return None
    return int(raw) if raw >= 0 else None


def _eq_key(kind: str, value: Any) -> Any:
    """A hashable key under which equal values meet: 1 and 1.0 alike, True never with 1,
    date-times as instants. None for a value that equals nothing."""
    if kind == "datetime":
        return ("t", parse_instant(value))
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, int | float):
        return ("n", value)
    if isinstance(value, str):
        return ("s", value)
    try:
        return ("j", json.dumps(value, sort_keys=True, allow_nan=False))
    except (TypeError, ValueError, RecursionError):
        # No JSON text (NaN inside, an int past 4,300 digits): equal to nothing.
        return None


def parse_value_set(kind: str, raw: Any) -> frozenset[Any]:
    """The keys of a schema's eq/ne list, each value first converted as a value would be."""
    if not isinstance(raw, list):
        return frozenset()
    convert = _CONVERTERS.get(kind)
    keys = set()
    for item in raw:
        converted = item if convert is None else convert(item)
        key = None if converted is None else _eq_key(kind, converted)
        if key is not None:
            keys.add(key)
    return frozenset(keys)
