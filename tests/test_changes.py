"""Tests of migrator.changes: what is sent again, and what is cleared (issue 11)."""

from __future__ import annotations

import copy
import math
import re
from typing import Any

import pytest

from migrator.changes import diff, fingerprints

BASE_CUSTOMER: dict[str, Any] = {
    "source_id": "u1",
    "name": "Ada",
    "email": "a@x.io",
    "address": {"city": "London", "country": "GB"},
    "metadata": {"tier": "gold", "tags": ["a"]},
}


def test_fingerprints_shape() -> None:
    prints = fingerprints(BASE_CUSTOMER)
    assert list(prints) == ["name", "email", "address", "metadata"]
    # Scalars get one hash; address and metadata one per key, so one key can be cleared.
    assert list(prints["address"]) == ["city", "country"]
    assert list(prints["metadata"]) == ["tier", "tags"]
    hashes = [prints["name"], prints["email"], *prints["address"].values()]
    hashes += prints["metadata"].values()
    assert all(re.fullmatch(r"[0-9a-f]{16}", h) for h in hashes)
    assert len(set(hashes)) == 6
    assert fingerprints(copy.deepcopy(BASE_CUSTOMER)) == prints  # stable


def test_field_fingerprints_ignore_inner_key_order() -> None:
    reordered = {**BASE_CUSTOMER, "address": {"country": "GB", "city": "London"}}
    assert fingerprints(reordered) == fingerprints(BASE_CUSTOMER)


def test_field_fingerprints_survive_odd_values() -> None:
    odd = {"source_id": "u", "metadata": {"big": 10**5000, "s": "\ud800", "n": math.nan}}
    assert all(re.fullmatch(r"[0-9a-f]{16}", h) for h in fingerprints(odd)["metadata"].values())
    other = {"source_id": "u", "metadata": {"big": 10**5000 + 1, "s": "\ud800", "n": math.nan}}
    assert fingerprints(odd) != fingerprints(other)


def _changed(**fields: Any) -> dict[str, Any]:
    return {**BASE_CUSTOMER, **fields}


@pytest.mark.parametrize(
    ("customer", "expected"),
    [
        pytest.param(BASE_CUSTOMER, {"source_id": "u1"}, id="unchanged"),
        pytest.param(
            _changed(email="new@x.io"), {"source_id": "u1", "email": "new@x.io"}, id="one-field"
        ),
        pytest.param(
            _changed(address={"city": "Paris", "country": "GB"}),
            {"source_id": "u1", "address": {"city": "Paris", "country": "GB"}},
            id="address-inner-change-sends-whole-address",
        ),
        pytest.param(
            _changed(metadata={"tier": "gold", "tags": ["a", "b"]}),
            {"source_id": "u1", "metadata": {"tier": "gold", "tags": ["a", "b"]}},
            id="metadata-inner-change-sends-whole-metadata",
        ),
        pytest.param(_changed(phone="123"), {"source_id": "u1", "phone": "123"}, id="new-field"),
        pytest.param(
            {k: v for k, v in BASE_CUSTOMER.items() if k != "email"},
            {"source_id": "u1"},
            id="removed-field-not-sent-when-kept",
        ),
        pytest.param(
            _changed(name="Ada L", email=None),
            {"source_id": "u1", "name": "Ada L"},
            id="never-null",
        ),
    ],
)
def test_diff_keeping_removed(customer: dict[str, Any], expected: dict[str, Any]) -> None:
    assert diff(customer, fingerprints(BASE_CUSTOMER), clear_removed=False) == expected


def test_diff_without_history_sends_everything() -> None:
    assert diff(BASE_CUSTOMER, {}) == BASE_CUSTOMER
    assert list(diff(BASE_CUSTOMER, {})) == list(BASE_CUSTOMER)


def test_diff_new_source_id_kept() -> None:
    moved = {**BASE_CUSTOMER, "source_id": "u2"}
    assert diff(moved, fingerprints(BASE_CUSTOMER)) == {"source_id": "u2"}


@pytest.mark.parametrize(
    ("customer", "expected"),
    [
        pytest.param(
            {k: v for k, v in BASE_CUSTOMER.items() if k != "email"},
            {"source_id": "u1", "email": None},
            id="removed-scalar-cleared",
        ),
        pytest.param(
            {**BASE_CUSTOMER, "metadata": {"tier": "gold"}},
            {"source_id": "u1", "metadata": {"tier": "gold", "tags": None}},
            id="removed-metadata-key-cleared-alone",
        ),
        pytest.param(
            {**BASE_CUSTOMER, "address": {"city": "London"}},
            {"source_id": "u1", "address": {"city": "London", "country": None}},
            id="removed-address-part-cleared",
        ),
        pytest.param(
            {k: v for k, v in BASE_CUSTOMER.items() if k != "metadata"},
            {"source_id": "u1", "metadata": {"tier": None, "tags": None}},
            id="whole-metadata-gone-clears-only-our-keys",
        ),
        pytest.param(BASE_CUSTOMER, {"source_id": "u1"}, id="unchanged-sends-nothing"),
    ],
)
def test_diff_clears_what_this_tool_wrote(
    customer: dict[str, Any], expected: dict[str, Any]
) -> None:
    assert diff(customer, fingerprints(BASE_CUSTOMER)) == expected


def test_nulls_only_where_this_tool_wrote_a_value() -> None:
    # A field never written (no fingerprint) is never nulled, whatever the customer lacks.
    assert diff(
        {"source_id": "u1", "name": "Ada"}, {"name": fingerprints(BASE_CUSTOMER)["name"]}
    ) == {"source_id": "u1"}


def test_send_all_sends_every_field_and_still_clears() -> None:
    customer = {**BASE_CUSTOMER, "metadata": {"tier": "gold"}}
    assert diff(customer, fingerprints(BASE_CUSTOMER), send_all=True) == {
        **customer,
        "metadata": {"tier": "gold", "tags": None},
    }
    assert diff(BASE_CUSTOMER, {}, send_all=True) == BASE_CUSTOMER


def test_state_files_from_before_per_key_hashes_are_still_read() -> None:
    from migrator.changes import digest

    legacy = {
        "name": digest("Ada"),
        "email": digest("a@x.io"),
        "address": digest(BASE_CUSTOMER["address"]),
        "metadata": digest(BASE_CUSTOMER["metadata"]),
    }
    assert diff(BASE_CUSTOMER, legacy) == {"source_id": "u1"}
    changed = {**BASE_CUSTOMER, "metadata": {"tier": "gold"}}
    # The old hash cannot say which keys were written: the object is sent, nothing nulled.
    assert diff(changed, legacy) == {"source_id": "u1", "metadata": {"tier": "gold"}}
    gone = {k: v for k, v in BASE_CUSTOMER.items() if k != "metadata"}
    assert diff(gone, legacy) == {"source_id": "u1"}
