"""What changed since a customer was last written, and what to clear.

The state store keeps, per customer, a short hash of each field it wrote (and of each key
inside `address` and `metadata`), never the data. A rerun sends a field only when its hash
differs, and, unless told to keep them, clears what it wrote earlier and Segment no longer
has: `null` for exactly that field or key. Nothing else is ever `null`: a `null` overwrites
data in Voucherify, so one is sent only where this tool put the value it replaces.

Pure functions, no I/O.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from json.encoder import encode_basestring
from typing import Any

#: Fields whose keys are tracked one by one, so one key can be cleared alone.
OBJECT_FIELDS = frozenset({"address", "metadata"})

#: field -> hash, or for address and metadata key -> hash. State files written before
#: keys were tracked hold one hash for the whole object; they are still read (see `diff`).
Fingerprints = dict[str, Any]


def _json_safe(value: Any) -> Any:
    """Replace ints too long for json.dumps by a tagged hex form (fingerprints only)."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            int.__repr__(value)
        except ValueError:
            return {"\x00bigint": hex(value)}  # hex() has no digit limit
    return value


def digest(value: Any) -> str:
    """A short stable hash of a JSON value; key order inside objects does not matter."""
    if type(value) is str:  # most fields: the same text json.dumps makes, without its setup
        return _hash(encode_basestring(value))
    try:
        text = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    except ValueError:  # an int past the 4300-digit conversion limit
        text = json.dumps(
            _json_safe(value), sort_keys=True, ensure_ascii=False, separators=(",", ":")
        )
    return _hash(text)


def _hash(text: str) -> str:
    # surrogatepass: JSON input may carry lone surrogates ("\ud800"), which utf-8 rejects.
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def fingerprints(customer: Mapping[str, Any]) -> Fingerprints:
    """The hashes to remember once `customer` is written (everything but `source_id`)."""
    result: Fingerprints = {}
    for field, value in customer.items():
        if field == "source_id" or value is None:
            continue
        if field in OBJECT_FIELDS and isinstance(value, dict):
            result[field] = {k: digest(v) for k, v in value.items() if v is not None}
        else:
            result[field] = digest(value)
    return result


def diff(
    customer: Mapping[str, Any],
    previous: Fingerprints,
    *,
    clear_removed: bool = True,
    send_all: bool = False,
    current: Fingerprints | None = None,
) -> dict[str, Any]:
    """`source_id` plus what changed since `previous`; `{"source_id": ...}` alone: unchanged.

    A changed field is sent whole (address and metadata included, so the result is right
    whether Voucherify merges or replaces them); `send_all` sends every field (`--full`).
    With `clear_removed`, a field or key that `previous` has and `customer` lacks is sent
    as `null`. `current`: `fingerprints(customer)`, when the caller has it already.
    """
    new_prints = fingerprints(customer) if current is None else current
    reduced: dict[str, Any] = {"source_id": customer["source_id"]}
    for field, value in customer.items():
        if field == "source_id" or value is None:
            continue
        old = previous.get(field)
        new = new_prints[field]
        if isinstance(new, dict) and isinstance(old, dict):
            removed = [k for k in old if k not in new] if clear_removed else []
            if send_all or removed or any(old.get(k) != h for k, h in new.items()):
                reduced[field] = {**value, **dict.fromkeys(removed)}
        elif (
            send_all
            or isinstance(old, dict)
            or old != (new if isinstance(new, str) else digest(value))
        ):
            reduced[field] = value
    if clear_removed:
        for field, old in previous.items():
            if customer.get(field) is not None:
                continue
            if isinstance(old, dict):
                reduced[field] = dict.fromkeys(old)
            elif field not in OBJECT_FIELDS:
                reduced[field] = None
            # else: a whole-object hash from an older state file cannot say which keys
            # this tool wrote, so none is cleared (the next write records them).
    return reduced


def is_unchanged(payload: Mapping[str, Any]) -> bool:
    return len(payload) == 1
