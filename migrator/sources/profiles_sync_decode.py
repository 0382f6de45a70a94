"""What the Profiles Sync views return, made into profiles: the decoding rule for trait
values (docs/profiles-sync.md), the latest row of a trait, the first identifier.

Two shapes come in: rows (every warehouse: a row per trait, a row per identifier) and,
on Postgres 16 and later, JSON the database built with the same rules
(`profiles_sync_sql.traits_json_of`, `page_body_json`). Either way, a profile with a
trait name in several rows is read again in order (`apply_in_order`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

from migrator.sources.base import Profile

BOOLEANS = {"true": True, "false": False}
#: A profile's first identifier: its value and when it was received (ISO text or None).
First = tuple[str, str | None]


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


#: JSON as RFC 8259 has it: `NaN` and `Infinity` are not JSON, as Postgres, which decodes
#: the values itself on the fast path, says too.
_JSON = json.JSONDecoder(parse_constant=_not_json)


def page_json(data: bytes | str) -> Any:
    """A page's ids or body (`profiles_sync_sql.page_body_json`, `[long, ...]`), as sent.

    orjson reads it in half the time of Python's decoder (~18 against ~37 ms for a page
    of 2,000 profiles, measured), but reads an integer past 64 bits as a float. The
    database says first whether any value holds 19 digits in a row (`[true, ...`); then,
    or if orjson refuses the text (a lone surrogate escape, 1e400), Python's decoder
    reads it, exactly as before.
    """
    if data[:5] not in (b"[true", "[true"):
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
    return _JSON.decode(data.decode() if isinstance(data, bytes) else data)


def decode(value: str | None) -> Any:
    """A trait value as stored in `user_traits.value`, decoded per the rule."""
    if value is None:
        return None
    if value[:1] in ("{", "[") and value[-1:] in ("}", "]"):
        try:
            return _JSON.decode(value)
        except ValueError:
            return value
    return BOOLEANS.get(value, value)


def traits_from_json(page: Iterable[Sequence[Any]], by_id: dict[str, Any]) -> list[str]:
    """Fill `by_id` from `[id, texts, decoded, rows]` (the text values and the values the
    database decoded, either null when there are none); returns the ids to read again in
    order: more rows than keys means a name in several rows, of which the database kept
    any."""
    again = []
    for segment_id, texts, decoded, rows in page:
        traits = texts if texts is not None else {}
        if decoded is not None:
            traits.update(decoded)  # a fresh object from the parser: nobody else holds it
        if len(traits) < rows:
            again.append(segment_id)
        elif None in traits.values():  # a trait set to null: it has no value
            by_id[segment_id] = {k: v for k, v in traits.items() if v is not None}
        else:
            by_id[segment_id] = traits
    return again


def traits_from_rows(rows: Iterable[Sequence[Any]], by_id: dict[str, Any]) -> list[str]:
    """Fill `by_id` from `(id, name, value)` rows in no order; returns the ids with a name
    in several rows, to read again in order."""
    raw: dict[str, dict[str, str | None]] = {i: {} for i in by_id}
    seen_twice: set[str] = set()
    for segment_id, name, value in rows:
        stored = raw[segment_id]
        if name in stored:
            seen_twice.add(segment_id)
        stored[name] = value
    for segment_id, stored in raw.items():
        if segment_id not in seen_twice:
            by_id[segment_id] = {
                name: decoded
                for name, value in stored.items()
                if (decoded := decode(value)) is not None
            }
    return sorted(seen_twice)


def apply_in_order(by_id: dict[str, dict[str, Any]], rows: Iterable[Sequence[Any]]) -> None:
    """`(id, name, value)` rows oldest first: the latest row of a trait wins; a null one
    removes it."""
    fresh: dict[str, dict[str, Any]] = {}
    for segment_id, name, value in rows:
        traits = fresh.setdefault(segment_id, {})
        decoded = decode(value)
        if decoded is None:
            traits.pop(name, None)
        else:
            traits[name] = decoded
    by_id.update(fresh)


def first_identifiers(rows: Iterable[Sequence[Any]]) -> dict[str, First]:
    """From `(id, value, seq, received_at)` rows: each profile's earliest identifier by
    `received_at` (unknown last), then `seq`, then value."""
    first: dict[str, tuple[Any, ...]] = {}
    for segment_id, value, seq, received_at in rows:
        if value is None:
            continue
        key = (received_at is None, received_at, seq if seq is not None else 0, value)
        if segment_id not in first or key < first[segment_id]:
            first[segment_id] = key
    return {
        segment_id: (key[3], None if key[1] is None else key[1].isoformat())
        for segment_id, key in first.items()
    }


def profiles(
    ids: Iterable[str],
    by_id: Mapping[str, Mapping[str, Any]],
    first: Mapping[str, Sequence[Any]],
    identifier: str,
) -> tuple[Profile, ...]:
    """The page's profiles in `ids` order, external ids in the Profile API's shape;
    `first` is `{id: [value, received_at]}`, or `[value, received_at, seen]` when the
    database computed the owner's key (`profiles_sync_sql.seen_key`)."""
    found = []
    for segment_id in ids:
        chosen = first.get(segment_id)
        if chosen is None:
            found.append(Profile(segment_id, by_id[segment_id], []))
            continue
        external = [{"type": identifier, "id": chosen[0], "created_at": chosen[1]}]
        seen = chosen[2] if len(chosen) > 2 else None  # computed by the database
        found.append(Profile(segment_id, by_id[segment_id], external, seen))
    return tuple(found)
