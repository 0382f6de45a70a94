"""One owner per source_id: which profile a Voucherify customer is built from.

Two Segment profiles can carry the same identifier (a shared `user_id`, a profile not yet
merged). Built from both, the customer would mix their fields and flip on every run. The
owner is the profile that got the identifier first, by the `created_at` of its external
id (compared as instants; unparseable last), ties by segment_id: a rule that gives the
same answer whichever profile is read first, so reruns settle.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from migrator.mapping import _instant_key, string_value

#: Shifts microseconds since 1970 to a positive number for every year from 1 to 9999.
_OFFSET = 10**18


def seen_key(external_ids: Iterable[Mapping[str, Any]], identifier: str, source_id: str) -> str:
    """Text that sorts as the instant this profile got `source_id` (unknown: last).

    A plain loop, once per profile that claims an identifier: the comprehension and `min`
    it replaced cost as much again as parsing the timestamp (3.3 -> 1.9 µs, measured).
    """
    first: tuple[Any, ...] | None = None
    for entry in external_ids:
        if not (type(entry) is dict or isinstance(entry, Mapping)):  # a dict: no ABC check
            continue
        if entry.get("type") != identifier:
            continue
        entry_id = entry.get("id")
        if entry_id != source_id and string_value(entry_id) != source_id:
            continue
        key = _instant_key(entry.get("created_at"))
        if first is None or key < first:
            first = key
    if first is None or first[0] != 0:
        return "1"
    return f"0{first[1] + _OFFSET:020d}.{first[2]}"
