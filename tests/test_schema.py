"""Tests of migrator/schema.py against "The metadata schema" in docs/mapping.md.

A coercion table per type pins the lossless conversions down; the policies, required keys,
allow_defined_only and deleted definitions are tested on whole customers; property tests
show that fitting never raises, is idempotent, and never puts a value in a reason.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from migrator.schema import (
    METADATA_TYPES,
    SCHEMA_POLICIES,
    Coercion,
    KeyEvent,
    MetadataSchema,
    PropertyDefinition,
    SchemaOutcome,
    SchemaReport,
    apply_schema,
    coerce,
)
from migrator.values import MAX_EXACT_INT
from tests.test_mapping import JSON_VALUES, PROPERTY_SETTINGS

REFUSED = object()


def definition(kind: str, **body: Any) -> PropertyDefinition:
    return PropertyDefinition.from_body("k", {"type": kind, **body})


def schema(properties: dict[str, dict[str, Any]], **body: Any) -> MetadataSchema:
    return MetadataSchema.from_body({"properties": properties, **body})


# -- reading the schema -----------------------------------------------------------------------


def test_no_schema() -> None:
    empty = MetadataSchema.from_body(None)
    assert empty == MetadataSchema()
    assert not empty.checks_anything
    outcome = apply_schema({"a": "1"}, empty, creating=True)
    assert outcome == SchemaOutcome({"a": "1"}, None, ())
    assert apply_schema({"a": 1}, None, creating=True).metadata == {"a": 1}
    assert MetadataSchema.from_body({"properties": {}}).checks_anything is False
    assert MetadataSchema.from_body({"allow_defined_only": True}).checks_anything is True


def test_schema_body() -> None:
    body = {
        "id": "ms_1",
        "related_object": "customer",
        "allow_defined_only": True,
        "properties": {
            "age": {"type": "number", "optional": False, "gte": 0, "lt": "150", "array": False},
            "tags": {"type": "string", "array": True, "maxLength": 10, "eq": ["a", "b"]},
            "gone": {"type": "number", "deleted": True, "optional": False},
            "odd": {"type": "hologram", "lt": 3, "minLength": "x", "eq": "not a list"},
        },
    }
    parsed = MetadataSchema.from_body(body)
    assert parsed.allow_defined_only is True
    assert set(parsed.properties) == {"age", "tags", "odd"}
    assert parsed.deleted == {"gone"}
    assert parsed.required == ("age",)
    age = parsed.properties["age"]
    assert (age.type, age.optional, age.gte, age.lt, age.array) == ("number", False, 0, 150, False)
    tags = parsed.properties["tags"]
    assert tags.array and tags.optional and tags.max_length == 10
    assert tags.eq == {("s", "a"), ("s", "b")}
    odd = parsed.properties["odd"]
    assert (odd.lt, odd.min_length, odd.eq) == (None, None, frozenset())


@pytest.mark.parametrize(
    "body",
    ["text", [1], {"properties": ["a"]}, {"properties": {"a": "number"}}],
)
def test_malformed_schema_bodies(body: Any) -> None:
    with pytest.raises(ValueError, match="metadata schema"):
        MetadataSchema.from_body(body)


# -- one value: the coercion table ---------------------------------------------------------------

COERCIONS = [
    # string
    ("string", "abc", "abc", False),
    ("string", "", "", False),
    ("string", 5, "5", True),
    ("string", 5.0, "5", True),
    ("string", -0.25, "-0.25", True),
    ("string", 10**30, "1" + "0" * 30, True),
    ("string", True, REFUSED, "value is not a string"),
    ("string", math.nan, REFUSED, "value is not a string"),
    ("string", {"a": 1}, REFUSED, "value is not a string"),
    # number
    ("number", 34, 34, False),
    ("number", 2.5, 2.5, False),
    ("number", "34", 34, True),
    ("number", "-34.0", -34, True),
    ("number", "+7", 7, True),
    ("number", "34.5", 34.5, True),
    ("number", "0.1", 0.1, True),
    ("number", ".5", 0.5, True),
    ("number", "1e3", 1000, True),
    ("number", "1E-2", 0.01, True),
    ("number", "1e20", 1e20, True),
    ("number", str(MAX_EXACT_INT), MAX_EXACT_INT, True),
    ("number", str(MAX_EXACT_INT + 1), REFUSED, "value has too many digits to be an exact number"),
    ("number", "0.10000000000000000001", REFUSED, "value has too many digits"),
    ("number", "1e999", REFUSED, "value has too many digits"),
    ("number", "1e-999", REFUSED, "value has too many digits"),
    ("number", "34abc", REFUSED, "value is not a number"),
    ("number", "", REFUSED, "value is not a number"),
    ("number", " 34", REFUSED, "value is not a number"),
    ("number", "١٢", REFUSED, "value is not a number"),
    ("number", "nan", REFUSED, "value is not a number"),
    ("number", "0x10", REFUSED, "value is not a number"),
    ("number", math.nan, REFUSED, "value is not a number"),
    ("number", math.inf, REFUSED, "value is not a number"),
    ("number", True, REFUSED, "value is not a number"),
    ("number", [1], REFUSED, "a list where one value is expected"),
    # boolean
    ("boolean", True, True, False),
    ("boolean", False, False, False),
    ("boolean", "true", True, True),
    ("boolean", "FALSE", False, True),
    ("boolean", "True", True, True),
    ("boolean", 1, REFUSED, "value is not a boolean"),
    ("boolean", 0, REFUSED, "value is not a boolean"),
    ("boolean", "yes", REFUSED, "value is not a boolean"),
    ("boolean", " true", REFUSED, "value is not a boolean"),
    # date
    ("date", "1990-05-17", "1990-05-17", False),
    ("date", "1990-05-17T23:59:59-05:00", "1990-05-17", True),
    ("date", "1990-05-17 10:20", "1990-05-17", True),
    ("date", "1990-02-30", REFUSED, "value is not an ISO 8601 date"),
    ("date", "17/05/1990", REFUSED, "value is not an ISO 8601 date"),
    ("date", 19900517, REFUSED, "value is not an ISO 8601 date"),
    # datetime
    ("datetime", "2024-01-02T03:04:05Z", "2024-01-02T03:04:05Z", False),
    ("datetime", "2024-01-02T03:04:05+02:00", "2024-01-02T03:04:05+02:00", False),
    ("datetime", "2024-01-02T03:04:05", "2024-01-02T03:04:05Z", True),
    ("datetime", "2024-01-02 03:04", "2024-01-02T03:04:00Z", True),
    ("datetime", "2024-01-02T03:04:05.123456789-0130", "2024-01-02T03:04:05.123456789-01:30", True),
    ("datetime", "2024-01-02T03:04:05+00:00", "2024-01-02T03:04:05+00:00", False),
    ("datetime", "2024-01-02", "2024-01-02T00:00:00Z", True),
    ("datetime", "2024-01-02T24:00:00Z", REFUSED, "value is not an ISO 8601 date-time"),
    ("datetime", "2024-01-02T03:04:05+24:00", REFUSED, "value is not an ISO 8601 date-time"),
    ("datetime", 1704164645, REFUSED, "value is not an ISO 8601 date-time"),
    # object
    ("object", {"a": [1]}, {"a": [1]}, False),
    ("object", {}, {}, False),
    ("object", '{"a": 1}', REFUSED, "value is not an object"),
    # geopoint
    ("geopoint", {"lat": 52.2, "long": 21.0}, {"lat": 52.2, "long": 21.0}, False),
    ("geopoint", {"latitude": -90, "longitude": 180}, {"latitude": -90, "longitude": 180}, False),
    ("geopoint", {"lat": 91, "lng": 0}, REFUSED, "value is not a geopoint"),
    ("geopoint", {"lat": "52.2", "lon": 21}, REFUSED, "value is not a geopoint"),
    ("geopoint", {"lat": True, "lon": 21}, REFUSED, "value is not a geopoint"),
    ("geopoint", {"lat": math.nan, "lon": 21}, REFUSED, "value is not a geopoint"),
    ("geopoint", "52.2,21.0", REFUSED, "value is not a geopoint"),
    # image_url
    ("image_url", "https://cdn.example.org/a.png", "https://cdn.example.org/a.png", False),
    ("image_url", "HTTP://example.org/a?b=c", "HTTP://example.org/a?b=c", False),
    ("image_url", "ftp://example.org/a.png", REFUSED, "value is not an http(s) URL"),
    ("image_url", "https:///a.png", REFUSED, "value is not an http(s) URL"),
    ("image_url", "https://example.org/a b.png", REFUSED, "value is not an http(s) URL"),
    ("image_url", "https://[::1", REFUSED, "value is not an http(s) URL"),
    ("image_url", "/a.png", REFUSED, "value is not an http(s) URL"),
    # every type
    ("string", None, REFUSED, "value is null"),
    ("hologram", {"any": "thing"}, {"any": "thing"}, False),
]


@pytest.mark.parametrize(("kind", "value", "expected", "detail"), COERCIONS)
def test_coercion_table(kind: str, value: Any, expected: Any, detail: Any) -> None:
    result = coerce(value, definition(kind))
    if expected is REFUSED:
        assert not result.ok
        assert result.rule is not None and result.rule.startswith(detail)
        assert result.reason == f"metadata key 'k': {result.rule}"
        return
    assert result.ok and result.reason is None
    assert result.value == expected and type(result.value) is type(expected)
    assert result.coerced is detail


def test_every_documented_type_is_in_the_table() -> None:
    assert {row[0] for row in COERCIONS} >= set(METADATA_TYPES)


@pytest.mark.parametrize(
    ("value", "expected", "coerced"),
    [
        (["1", 2], [1, 2], True),
        ([1, 2], [1, 2], False),
        ([], [], False),
        ("3", [3], True),
        (3, [3], True),
    ],
)
def test_arrays(value: Any, expected: Any, coerced: bool) -> None:
    result = coerce(value, definition("number", array=True))
    assert result == Coercion("k", expected, coerced)


def test_array_items_must_all_fit() -> None:
    assert coerce([1, "x"], definition("number", array=True)).rule == "an item is not a number"
    assert coerce([1, None], definition("number", array=True)).rule == "an item is null"
    result = coerce(["ab", "abcd"], definition("string", array=True, maxLength=3))
    assert result.rule == "an item is longer than maxLength = 3"


def test_coercion_does_not_mutate() -> None:
    value = ["1", {"a": None}]
    before = copy.deepcopy(value)
    coerce(value, definition("number", array=True))
    coerce(value, definition("object", array=True))
    assert value == before


# -- constraints -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "value", "rule"),
    [
        ({"type": "number", "eq": [1, 2]}, "1", None),
        ({"type": "number", "eq": [1, 2]}, 2.0, None),
        ({"type": "number", "eq": ["1", 2]}, 1, None),  # schema values convert too
        ({"type": "number", "eq": [1, 2]}, 3, "value is not one of the allowed values (eq)"),
        ({"type": "number", "ne": [0]}, 0.0, "value is one of the forbidden values (ne)"),
        ({"type": "number", "ne": [0]}, 1, None),
        ({"type": "boolean", "eq": ["true"]}, False, "value is not one of the allowed values"),
        ({"type": "boolean", "eq": [1]}, True, None),  # 1 is no boolean: eq is unreadable
        ({"type": "boolean", "eq": ["true"]}, "TRUE", None),
        ({"type": "string", "eq": ["gold", "silver"]}, "gold", None),
        ({"type": "string", "eq": ["gold", "silver"]}, "Gold", "value is not one of the"),
        ({"type": "string", "eq": [1]}, 1, None),
        ({"type": "date", "eq": ["2024-01-02"]}, "2024-01-02T10:00:00Z", None),
        ({"type": "datetime", "eq": ["2024-01-02T10:00:00Z"]}, "2024-01-02T12:00:00+02:00", None),
        ({"type": "number", "lt": 10}, 9.99, None),
        ({"type": "number", "lt": 10}, "10", "value is not less than lt = 10"),
        ({"type": "number", "lte": 10}, 10, None),
        ({"type": "number", "lte": 10.5}, 11, "value is greater than lte = 10.5"),
        ({"type": "number", "gt": 0}, 0, "value is not greater than gt = 0"),
        ({"type": "number", "gte": 0}, 0, None),
        ({"type": "number", "gte": 0}, -1, "value is less than gte = 0"),
        ({"type": "number", "gte": "zero"}, -1, None),  # unreadable: not checked here
        ({"type": "date", "lt": "2000-01-01"}, "1999-12-31", None),
        (
            {"type": "date", "lt": "2000-01-01"},
            "2000-01-01",
            "value is not less than lt = 2000-01-01",
        ),
        ({"type": "datetime", "gte": "2024-01-01T00:00:00Z"}, "2024-01-01T01:00:00+01:00", None),
        (
            {"type": "datetime", "gt": "2024-01-01T00:00:00Z"},
            "2024-01-01T01:00:00+01:00",
            "value is not greater than gt = 2024-01-01T00:00:00+00:00",
        ),
        ({"type": "string", "minLength": 2}, "a", "value is shorter than minLength = 2"),
        ({"type": "string", "maxLength": 2}, "abc", "value is longer than maxLength = 2"),
        ({"type": "string", "maxLength": 2}, 100, "value is longer than maxLength = 2"),
        ({"type": "string", "exactLength": 2}, "ab", None),
        # Two UTF-16 units, as JavaScript counts.
        ({"type": "string", "exactLength": 2}, "🙂", None),
        ({"type": "string", "exactLength": 1}, "🙂", "value is not exactLength = 1 long"),
        ({"type": "string", "maxLength": 1.0}, "é", None),
        ({"type": "number", "maxLength": 1}, 100, None),  # lengths are for strings
    ],
)
def test_constraints(body: dict[str, Any], value: Any, rule: str | None) -> None:
    result = coerce(value, PropertyDefinition.from_body("k", body))
    if rule is None:
        assert result.ok, result.rule
    else:
        assert result.rule is not None and result.rule.startswith(rule)


# -- whole customers: policies, required keys, undefined keys --------------------------------------

SCHEMA = schema(
    {
        "age": {"type": "number"},
        "tier": {"type": "string", "eq": ["gold", "silver"]},
        "vip": {"type": "boolean", "optional": False},
        "gone": {"type": "number", "deleted": True},
    }
)


def test_drop_value_policy() -> None:
    metadata = {"age": "34", "tier": "bronze", "vip": True, "extra": {"x": 1}, "gone": "x"}
    before = copy.deepcopy(metadata)
    outcome = apply_schema(metadata, SCHEMA, creating=False)
    assert metadata == before
    assert outcome.refused is None
    assert outcome.metadata == {"age": 34, "vip": True, "extra": {"x": 1}, "gone": "x"}
    assert outcome.events == (
        KeyEvent("age", "coerced"),
        KeyEvent("tier", "dropped", "value is not one of the allowed values (eq)"),
        KeyEvent("vip", "filled"),
    )


def test_drop_customer_policy() -> None:
    outcome = apply_schema(
        {"age": "old", "tier": "bronze", "vip": True}, SCHEMA, "drop_customer", creating=False
    )
    assert outcome.metadata is None
    assert outcome.refused == (
        "metadata does not fit the schema: metadata key 'age': value is not a number; "
        "metadata key 'tier': value is not one of the allowed values (eq)"
    )
    assert [e.status for e in outcome.events] == ["refused", "refused"]
    fine = apply_schema({"age": 1, "vip": "true"}, SCHEMA, "drop_customer", creating=True)
    assert fine.metadata == {"age": 1, "vip": True} and fine.refused is None


def test_send_policy() -> None:
    outcome = apply_schema({"age": "old", "tier": "gold", "vip": 1}, SCHEMA, "send", creating=False)
    assert outcome.metadata == {"age": "old", "tier": "gold", "vip": 1}
    assert [(e.key, e.status) for e in outcome.events] == [
        ("age", "sent"),
        ("tier", "filled"),
        ("vip", "sent"),
    ]


@pytest.mark.parametrize("policy", SCHEMA_POLICIES)
def test_required_key_missing_on_create_refuses_whatever_the_policy(policy: Any) -> None:
    outcome = apply_schema({"age": 1}, SCHEMA, policy, creating=True)
    assert outcome.metadata is None
    assert outcome.refused == (
        "metadata does not fit the schema: metadata key 'vip': "
        "required when a customer is created (optional: false)"
    )
    assert outcome.events == (
        KeyEvent("vip", "missing", "required when a customer is created (optional: false)"),
    )
    # An update may leave it out: the customer already has it.
    assert apply_schema({"age": 1}, SCHEMA, policy, creating=False).metadata == {"age": 1}
    assert apply_schema({}, SCHEMA, policy, creating=True).refused is not None


def test_dropping_a_required_value_on_create_refuses() -> None:
    outcome = apply_schema({"vip": "maybe"}, SCHEMA, creating=True)
    assert outcome.refused == (
        "metadata does not fit the schema: metadata key 'vip': value is not a boolean; "
        "required when a customer is created (optional: false)"
    )
    assert apply_schema({"vip": "maybe"}, SCHEMA, creating=False).metadata == {}


def test_deleted_definitions_are_ignored() -> None:
    strict = schema({"gone": {"type": "number", "deleted": True, "optional": False}})
    assert apply_schema({"gone": "text"}, strict, creating=True).metadata == {"gone": "text"}
    only = schema({"gone": {"type": "number", "deleted": True}}, allow_defined_only=True)
    outcome = apply_schema({"gone": 1}, only, creating=False)
    assert outcome.metadata == {}
    assert outcome.events[0].status == "undefined"


def test_allow_defined_only_drops_undefined_keys_not_the_customer() -> None:
    strict = schema({"age": {"type": "number"}}, allow_defined_only=True)
    outcome = apply_schema({"age": "3", "x": 1, "y": None}, strict, "drop_customer", creating=True)
    assert outcome.refused is None
    assert outcome.metadata == {"age": 3}
    assert sorted((e.key, e.status) for e in outcome.events) == [
        ("age", "coerced"),
        ("x", "undefined"),
        ("y", "undefined"),
    ]


def test_unknown_policy() -> None:
    with pytest.raises(ValueError, match="schema policy"):
        apply_schema({}, SCHEMA, "ignore", creating=True)  # type: ignore[arg-type]


def test_report() -> None:
    report = SchemaReport()
    strict = schema(
        {"age": {"type": "number"}, "vip": {"type": "boolean", "optional": False}},
        allow_defined_only=True,
    )
    report.add(apply_schema({"age": "1", "vip": True, "x": 1}, strict, creating=True))
    report.add(apply_schema({"age": 2, "vip": True}, strict, creating=True))
    report.add(apply_schema({"age": "x", "vip": True}, strict, creating=True))
    report.add(apply_schema({"age": 2}, strict, creating=True))
    assert (report.customers, report.refused_customers) == (4, 1)
    age, vip, x = report.keys["age"], report.keys["vip"], report.keys["x"]
    assert (age.filled, age.coerced, age.dropped, age.problems) == (1, 1, 1, 1)
    assert (vip.filled, vip.missing) == (3, 1)
    assert x.undefined == 1
    assert report.warnings() == [
        "metadata key 'age': 1 dropped: value is not a number (1)",
        "metadata key 'vip': 1 missing (required): "
        "required when a customer is created (optional: false) (1)",
        "metadata key 'x': 1 undefined, dropped: "
        "not defined in the schema, which allows defined keys only (1)",
    ]


# -- properties ----------------------------------------------------------------------------------

MARK = "§"  # in every generated text value; no key, rule or limit holds it
_MARKED = st.recursive(
    st.text(max_size=6).map(lambda t: MARK + t)
    | st.sampled_from([MARK + "2024-01-02", MARK + "12", MARK + "true", MARK + "https://x.io"])
    | st.none()
    | st.booleans()
    | st.integers()
    | st.floats(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=6,
)
# Values that fit some type: texts that convert, without the mark.
_FITTING = st.sampled_from(
    ["12", "-3.5", "true", "FALSE", "2024-01-02", "2024-01-02 03:04+0100", "https://x.io/a"]
)
_LIMIT = st.none() | st.integers(-5, 5) | st.sampled_from(["2024-01-01", "x", 1.5])
DEFINITIONS = st.builds(
    lambda kind, array, eq, lt, gte, max_length: PropertyDefinition.from_body(
        "key",
        {
            "type": kind,
            "array": array,
            "eq": eq,
            "lt": lt,
            "gte": gte,
            "maxLength": max_length,
        },
    ),
    st.sampled_from([*METADATA_TYPES, "unknown"]),
    st.booleans(),
    st.none() | st.lists(JSON_VALUES, max_size=3),
    _LIMIT,
    _LIMIT,
    st.none() | st.integers(0, 4),
)


@PROPERTY_SETTINGS
@given(value=_MARKED | JSON_VALUES | _FITTING, definition=DEFINITIONS)
def test_property_coerce_is_total_idempotent_and_never_leaks(
    value: Any, definition: PropertyDefinition
) -> None:
    result = coerce(value, definition)
    if not result.ok:
        assert result.reason is not None and MARK not in result.reason
        assert result.reason.startswith("metadata key 'key': ")
        return
    again = coerce(result.value, definition)
    assert again.ok and again.value == result.value and not again.coerced
    if not result.coerced:
        assert result.value is value or result.value == value


@PROPERTY_SETTINGS
@given(
    metadata=st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), _MARKED | _FITTING),
    policy=st.sampled_from(SCHEMA_POLICIES),
    creating=st.booleans(),
    defined_only=st.booleans(),
)
def test_property_apply_schema(
    metadata: dict[str, Any], policy: Any, creating: bool, defined_only: bool
) -> None:
    strict = schema(
        {
            "a": {"type": "number", "optional": False},
            "b": {"type": "datetime", "array": True},
            "c": {"type": "string", "maxLength": 3, "deleted": True},
        },
        allow_defined_only=defined_only,
    )
    before = copy.deepcopy(metadata)
    outcome = apply_schema(metadata, strict, policy, creating=creating)
    assert metadata == before
    if outcome.refused is not None:
        assert outcome.metadata is None
        assert MARK not in outcome.refused
        assert {e.status for e in outcome.events} <= {"refused", "missing"}
        return
    assert outcome.metadata is not None
    assert set(outcome.metadata) <= set(metadata)
    for event in outcome.events:
        assert event.rule is None or MARK not in event.rule
    if policy != "send":  # what is sent fits: applying the schema again changes nothing
        again = apply_schema(outcome.metadata, strict, policy, creating=creating)
        assert again.metadata == outcome.metadata
        assert {e.status for e in again.events} <= {"filled"}
