"""The double's customer metadata validation, as Voucherify documents it ("Metadata
validation modes"; ../shared/contracts README, "Customer metadata validation").

Written apart from the migrator's own `migrator/schema.py` and `coercion.py` on purpose:
the sandbox judges what the migrator sends, so it must not share the migrator's idea of
what fits. It is strict where Voucherify is strict: a defined key takes only its own JSON
type (`"34"` is not a number, `"true"` is not a boolean), a date is `YYYY-MM-DD`, a
date-time carries its zone, an `array` key takes a list and nothing else.

Problems name the key and the rule, never the value.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import urlsplit

#: A typed schema with the constraints a real project would set, for `--typed-schema`, the
#: demo and the tests. The generator's `loose_metadata` traits are meant to fit it only
#: after lossless conversion.
TYPED_SCHEMA: dict[str, dict[str, Any]] = {
    "loyalty_tier": {"type": "string", "eq": ["bronze", "silver", "gold", "złoty"]},
    "points": {"type": "number", "gte": 0, "lt": 100000},
    "opt_in": {"type": "boolean"},
    "signup_date": {"type": "date", "gte": "2000-01-01"},
    "last_seen_at": {"type": "datetime"},
    "interests": {"type": "string", "array": True, "minLength": 1, "maxLength": 40},
    "store_id": {"type": "string", "exactLength": 4},
    "retired_key": {"type": "number", "deleted": True},
}

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})")


def live_definitions(schema: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The definitions Voucherify applies: deleted ones are ignored."""
    return {key: spec for key, spec in schema.items() if not spec.get("deleted")}


def metadata_problems(
    metadata: Any,
    schema: dict[str, dict[str, Any]],
    *,
    creating: bool,
    allow_defined_only: bool,
) -> list[str]:
    """Why Voucherify would reject this customer's metadata (empty: it would not)."""
    definitions = live_definitions(schema)
    given = metadata if isinstance(metadata, dict) else {}
    problems = []
    for key, value in given.items():
        spec = definitions.get(key)
        if spec is None:
            if allow_defined_only:
                problems.append(f"{key}: not defined in the schema")
            continue
        if value is None:  # sets the key to null
            continue
        problem = _value_problem(value, spec)
        if problem is not None:
            problems.append(f"{key}: {problem}")
    if creating:
        for key, spec in definitions.items():
            if spec.get("optional") is False and given.get(key) is None:
                problems.append(f"{key}: required (optional: false) on a new customer")
    return problems


def _value_problem(value: Any, spec: dict[str, Any]) -> str | None:
    if spec.get("array"):
        if not isinstance(value, list):
            return "expected an array"
        for item in value:
            problem = _scalar_problem(item, spec)
            if problem is not None:
                return f"an item: {problem}"
        return None
    if isinstance(value, list):
        return "expected a single value, not an array"
    return _scalar_problem(value, spec)


def _scalar_problem(value: Any, spec: dict[str, Any]) -> str | None:
    kind = str(spec.get("type", "string"))
    if not _is_type(value, kind):
        return f"expected {kind}"
    return _constraint_problem(value, kind, spec)


def _is_type(value: Any, kind: str) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "number":
        return _number(value)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "date":
        return isinstance(value, str) and _date(value) is not None
    if kind == "datetime":
        return isinstance(value, str) and _instant(value) is not None
    if kind == "object":
        return isinstance(value, dict)
    if kind == "geopoint":
        return isinstance(value, dict) and _geopoint(value)
    if kind == "image_url":
        return isinstance(value, str) and _url(value)
    return True  # a type this double does not know: accepted


def _constraint_problem(value: Any, kind: str, spec: dict[str, Any]) -> str | None:
    order = _order(kind)
    if "eq" in spec and not any(_same(value, allowed, kind) for allowed in spec["eq"]):
        return "not one of the allowed values (eq)"
    if "ne" in spec and any(_same(value, banned, kind) for banned in spec["ne"]):
        return "one of the forbidden values (ne)"
    if order is not None:
        mine = order(value)
        for name, holds in (
            ("lt", lambda a, b: a < b),
            ("lte", lambda a, b: a <= b),
            ("gt", lambda a, b: a > b),
            ("gte", lambda a, b: a >= b),
        ):
            if name in spec and not holds(mine, order(spec[name])):
                return f"breaks {name}"
    if kind == "string":
        length = len(value.encode("utf-16-le")) // 2  # JavaScript's length
        if "minLength" in spec and length < spec["minLength"]:
            return "shorter than minLength"
        if "maxLength" in spec and length > spec["maxLength"]:
            return "longer than maxLength"
        if "exactLength" in spec and length != spec["exactLength"]:
            return "not exactLength long"
    return None


def _order(kind: str) -> Any:
    if kind == "number":
        return float
    if kind == "date":
        return _date
    if kind == "datetime":
        return _instant
    return None


def _same(value: Any, other: Any, kind: str) -> bool:
    if kind == "datetime":
        return _instant(value) == _instant(other)
    if kind == "number":
        return _number(other) and float(value) == float(other)
    return type(value) is type(other) and value == other


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _date(text: Any) -> date | None:
    if not isinstance(text, str) or not _DATE.fullmatch(text):
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def _instant(text: Any) -> datetime | None:
    """An ISO 8601 date-time with its zone; a naive one is not one Voucherify stores."""
    if not isinstance(text, str) or not _DATETIME.fullmatch(text):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def _geopoint(value: dict[str, Any]) -> bool:
    lat = next((value[k] for k in ("lat", "latitude") if k in value), None)
    lon = next((value[k] for k in ("long", "lng", "lon", "longitude") if k in value), None)
    return _number(lat) and _number(lon) and -90 <= lat <= 90 and -180 <= lon <= 180


def _url(text: str) -> bool:
    try:
        parts = urlsplit(text)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and " " not in text


# -- what the oracle expects of loosely typed traits ---------------------------------------


def conform(metadata: dict[str, Any] | None, schema: dict[str, dict[str, Any]]) -> Any:
    """The metadata a lossless conversion to `schema` makes of `metadata`, as the oracle
    expects it to arrive (date-times as aware datetimes: compare with `comparable`).

    Only the loose forms the generator writes are converted; anything else is left as is,
    so a value the migrator should have dropped shows up as a difference.
    """
    definitions = live_definitions(schema)
    if not metadata or not definitions:
        return metadata
    return {
        key: value
        if key not in definitions or value is None
        else _conform_value(value, definitions[key])
        for key, value in metadata.items()
    }


def comparable(metadata: Any, schema: dict[str, dict[str, Any]]) -> Any:
    """Stored metadata with its date-times as aware datetimes, to compare with `conform`."""
    definitions = live_definitions(schema)
    if not isinstance(metadata, dict) or not definitions:
        return metadata
    return {
        key: _instant(value) or value
        if definitions.get(key, {}).get("type") == "datetime" and isinstance(value, str)
        else value
        for key, value in metadata.items()
    }


def _conform_value(value: Any, spec: dict[str, Any]) -> Any:
    if spec.get("array"):
        return [
            _conform_scalar(item, spec) for item in (value if isinstance(value, list) else [value])
        ]
    return _conform_scalar(value, spec)


def _conform_scalar(value: Any, spec: dict[str, Any]) -> Any:
    kind = spec.get("type")
    if kind == "number" and isinstance(value, str) and re.fullmatch(r"-?\d+", value):
        return int(value)
    if kind == "boolean" and value in ("true", "false"):
        return value == "true"
    if kind == "date" and isinstance(value, str):
        return value[:10]
    if kind == "datetime" and isinstance(value, str):
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace(" ", "T"))
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    if kind == "string" and _number(value):
        return str(value)
    return value
