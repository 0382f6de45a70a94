"""Hand-written check of one bulk item against the official request schema.

The package must not read the schema file at run time, and the real API deviates from the
schema in one way that matters: ``null`` is accepted for scalar fields and ``address``, and
it overwrites the stored value. This check reproduces that behaviour.
"""

from __future__ import annotations

import calendar
import re
from typing import Any

STRING_FIELDS = ("name", "description", "email", "phone")
DATE_FIELDS = ("birthdate", "birthday")
KNOWN_FIELDS = ("source_id", *STRING_FIELDS, *DATE_FIELDS, "address", "metadata")
ADDRESS_FIELDS = ("city", "state", "line_1", "line_2", "country", "postal_code")
_DATE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")


def is_date(value: str) -> bool:
    """JSON Schema ``format: date``: a real calendar day written YYYY-MM-DD."""
    match = _DATE.fullmatch(value)
    if not match:
        return False
    year, month, day = (int(part) for part in match.groups())
    return year >= 1 and 1 <= month <= 12 and 1 <= day <= calendar.monthrange(year, month)[1]


def customer_problem(item: Any) -> str | None:
    """Why Voucherify would reject this item, or None when it is acceptable."""
    if not isinstance(item, dict):
        return "customer must be an object"
    source_id = item.get("source_id")
    if not isinstance(source_id, str) or not source_id:
        return "source_id is required and must be a non-empty string"
    for key in STRING_FIELDS:
        if key in item and item[key] is not None and not isinstance(item[key], str):
            return f"{key} must be a string"
    for key in DATE_FIELDS:
        value = item.get(key)
        if value is not None and not (isinstance(value, str) and is_date(value)):
            return f"{key} must be a date in the format YYYY-MM-DD"
    address = item.get("address")
    if address is not None:
        if not isinstance(address, dict):
            return "address must be an object"
        for key, value in address.items():
            if value is not None and not isinstance(value, str):
                return f"address.{key} must be a string"
    if "metadata" in item and not isinstance(item["metadata"], dict):
        return "metadata must be an object"
    return None


def item_source_id(item: Any) -> str:
    """The source_id to name in an error; "" when the item has none usable."""
    if isinstance(item, dict) and isinstance(item.get("source_id"), str):
        return item["source_id"]
    return ""


def undefined_metadata_keys(item: dict[str, Any], schema: dict[str, dict]) -> list[str]:
    metadata = item.get("metadata")
    if not isinstance(metadata, dict):
        return []
    return [key for key in metadata if key not in schema]
