"""Tests of migrator.mapping against every rule of docs/mapping.md.

Table-driven tests pin each rule down; property tests throw arbitrary JSON at the mapping
to show it never raises and always yields a customer the official Voucherify schema
accepts.
"""

from __future__ import annotations

import copy
import math
import re
from datetime import date, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from migrator.changes import diff, fingerprints
from migrator.mapping import (
    CONSUMED_TRAITS,
    METADATA_MODES,
    STANDARD_TRAITS,
    Mapped,
    map_profile,
    normalize_birthdate,
    select_source_id,
    string_value,
    strip_nulls,
)
from tests.helpers import VALIDATOR

SEG = "seg_1"
EXT = [
    {
        "type": "user_id",
        "id": "use_123",
        "source_id": "src",
        "collection": "users",
        "created_at": "2023-01-01T00:00:00.000Z",
        "encoding": "none",
    }
]
ABSENT = object()  # "the field is omitted"
FIELD_ORDER = (
    "source_id",
    "name",
    "email",
    "phone",
    "description",
    "birthdate",
    "address",
    "metadata",
)
ADDRESS_KEYS = {"line_1", "line_2", "city", "state", "postal_code", "country"}
BIRTHDATE_WARNING = f"birthdate dropped for {SEG}: not an ISO 8601 date"


def assert_valid_customer(customer: dict[str, Any]) -> None:
    """The customer is a valid bulk item (items of the top-level array schema)."""
    VALIDATOR.validate([customer])
    assert set(customer) <= set(FIELD_ORDER)


def mapped(traits: dict[str, Any], **kwargs: Any) -> Mapped:
    result = map_profile(SEG, traits, EXT, **kwargs)
    if result.customer is not None:
        assert_valid_customer(result.customer)
    return result


def customer_of(traits: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    customer = mapped(traits, **kwargs).customer
    assert customer is not None
    return customer


def field_of(traits: dict[str, Any], field: str, **kwargs: Any) -> Any:
    return customer_of(traits, **kwargs).get(field, ABSENT)


def ext(id_: Any, created_at: Any = "2023-01-01T00:00:00Z", type_: str = "user_id") -> dict:
    return {"type": type_, "id": id_, "created_at": created_at, "collection": "users"}


# --------------------------------------------------------------------------- values


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("abc", "abc", id="str"),
        pytest.param("  padded  ", "  padded  ", id="str-not-stripped"),
        pytest.param("ünï©ødé 🙂", "ünï©ødé 🙂", id="str-unicode"),
        pytest.param("", None, id="empty"),
        pytest.param("   ", None, id="blank-spaces"),
        pytest.param("\t\n\r", None, id="blank-controls"),
        pytest.param("\u00a0\u2003", None, id="blank-unicode-spaces"),
        pytest.param(0, "0", id="int-zero"),
        pytest.param(42, "42", id="int"),
        pytest.param(-7, "-7", id="int-negative"),
        pytest.param(10**30, "1" + "0" * 30, id="int-big"),
        pytest.param(5.0, "5", id="float-integral"),
        pytest.param(-3.0, "-3", id="float-integral-negative"),
        pytest.param(-0.0, "0", id="float-negative-zero"),
        pytest.param(1e20, "100000000000000000000", id="float-integral-large"),
        pytest.param(3.14, "3.14", id="float"),
        pytest.param(-0.5, "-0.5", id="float-negative"),
        pytest.param(1e-07, "1e-07", id="float-repr-exponent"),
        pytest.param(math.nan, None, id="nan"),
        pytest.param(math.inf, None, id="inf"),
        pytest.param(-math.inf, None, id="-inf"),
        pytest.param(True, None, id="true"),
        pytest.param(False, None, id="false"),
        pytest.param({}, None, id="dict-empty"),
        pytest.param({"a": "b"}, None, id="dict"),
        pytest.param([], None, id="list-empty"),
        pytest.param(["a"], None, id="list"),
        pytest.param(None, None, id="none"),
    ],
)
def test_string_value(value: Any, expected: str | None) -> None:
    assert string_value(value) == expected


def test_string_value_int_beyond_str_digit_limit() -> None:
    # str() refuses ints over 4300 digits; the mapping must still give the decimal text.
    assert string_value(10**5000) == "1" + "0" * 5000
    assert string_value(-(10**5000)) == "-1" + "0" * 5000


# --------------------------------------------------------------------------- name


@pytest.mark.parametrize(
    ("traits", "expected"),
    [
        pytest.param({"name": "Ada Lovelace"}, "Ada Lovelace", id="name"),
        pytest.param({"firstName": "Ada", "lastName": "Lovelace"}, "Ada Lovelace", id="camel"),
        pytest.param({"first_name": "Ada", "last_name": "Lovelace"}, "Ada Lovelace", id="snake"),
        pytest.param(
            {"firstName": "Ada", "first_name": "X", "lastName": "Lovelace", "last_name": "Y"},
            "Ada Lovelace",
            id="camel-beats-snake",
        ),
        pytest.param(
            {"firstName": "", "first_name": "Ada", "lastName": None, "last_name": "Lovelace"},
            "Ada Lovelace",
            id="blank-camel-falls-back-to-snake",
        ),
        pytest.param({"firstName": "Ada", "last_name": "Lovelace"}, "Ada Lovelace", id="mixed"),
        pytest.param({"firstName": "Ada"}, "Ada", id="only-first"),
        pytest.param({"last_name": "Lovelace"}, "Lovelace", id="only-last"),
        pytest.param({"firstName": "Ada", "lastName": "  "}, "Ada", id="blank-last"),
        pytest.param({"firstName": "Ada ", "lastName": "Lovelace"}, "Ada  Lovelace", id="as-is"),
        pytest.param(
            {"name": "Countess", "firstName": "Ada", "lastName": "Lovelace"},
            "Countess",
            id="name-wins-over-parts",
        ),
        pytest.param(
            {"name": " ", "firstName": "Ada", "lastName": "Lovelace"},
            "Ada Lovelace",
            id="blank-name-uses-parts",
        ),
        pytest.param({"name": 42}, "42", id="numeric-name"),
        pytest.param({"firstName": 1, "lastName": 2.5}, "1 2.5", id="numeric-parts"),
        pytest.param({"name": True, "firstName": ["Ada"]}, ABSENT, id="no-string-values"),
        pytest.param({}, ABSENT, id="absent"),
    ],
)
def test_name(traits: dict[str, Any], expected: Any) -> None:
    assert field_of(traits, "name") == expected


# --------------------------------------------------------------------------- email/phone/desc


@pytest.mark.parametrize("field", ["email", "phone", "description"])
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("x@example.com", "x@example.com", id="str"),
        pytest.param(14155550100, "14155550100", id="int"),
        pytest.param(12.5, "12.5", id="float"),
        pytest.param(7.0, "7", id="integral-float"),
        pytest.param("", ABSENT, id="empty"),
        pytest.param(" ", ABSENT, id="blank"),
        pytest.param(None, ABSENT, id="null"),
        pytest.param(False, ABSENT, id="bool"),
        pytest.param(math.nan, ABSENT, id="nan"),
        pytest.param({"v": 1}, ABSENT, id="dict"),
        pytest.param(["a"], ABSENT, id="list"),
    ],
)
def test_simple_string_fields(field: str, value: Any, expected: Any) -> None:
    assert field_of({field: value}, field) == expected


def test_simple_fields_absent() -> None:
    assert customer_of({}) == {"source_id": "use_123"}


# --------------------------------------------------------------------------- birthdate

VALID_BIRTHDATES = [
    pytest.param("1990-05-17", "1990-05-17", id="date"),
    pytest.param("1990-05-17T10:30", "1990-05-17", id="T-hh-mm"),
    pytest.param("1990-05-17T10:30:15", "1990-05-17", id="T-hh-mm-ss"),
    pytest.param("1990-05-17T10:30:15.123", "1990-05-17", id="fraction"),
    pytest.param("1990-05-17T10:30:15.123456789", "1990-05-17", id="long-fraction"),
    pytest.param("1990-05-17 10:30:15", "1990-05-17", id="space-separator"),
    pytest.param("1990-05-17T23:30:00Z", "1990-05-17", id="zone-Z-no-shift"),
    pytest.param("1990-05-17T00:30+02:00", "1990-05-17", id="zone-colon-no-shift"),
    pytest.param("1990-05-17T23:30:00.5-0200", "1990-05-17", id="zone-no-colon"),
    pytest.param("1990-05-17T10:30Z", "1990-05-17", id="hh-mm-with-zone"),
    pytest.param("2024-02-29", "2024-02-29", id="leap-day"),
    pytest.param("2000-02-29", "2000-02-29", id="leap-century"),
    pytest.param("0001-01-01", "0001-01-01", id="min-year"),
    pytest.param("9999-12-31T23:59:59", "9999-12-31", id="max-year"),
]

INVALID_BIRTHDATES = [
    pytest.param("1990-02-30", id="feb-30"),
    pytest.param("2023-02-29", id="feb-29-non-leap"),
    pytest.param("1900-02-29", id="feb-29-1900"),
    pytest.param("1990-13-01", id="month-13"),
    pytest.param("1990-00-10", id="month-0"),
    pytest.param("1990-05-00", id="day-0"),
    pytest.param("1990-04-31", id="april-31"),
    pytest.param("0000-01-01", id="year-0"),
    pytest.param("17/05/1990", id="dd-mm-yyyy"),
    pytest.param("19900517", id="basic-format"),
    pytest.param("1990-5-17", id="one-digit-month"),
    pytest.param("90-05-17", id="two-digit-year"),
    pytest.param("+1990-05-17", id="signed-year"),
    pytest.param(" 1990-05-17", id="leading-space"),
    pytest.param("1990-05-17 ", id="trailing-space"),
    pytest.param("1990-05-17\n", id="trailing-newline"),
    pytest.param("1990-05-17T25:00", id="hour-25"),
    pytest.param("1990-05-17T24:00", id="hour-24"),
    pytest.param("1990-05-17T10:60", id="minute-60"),
    pytest.param("1990-05-17T10:30:60", id="second-60"),
    pytest.param("1990-05-17T10", id="hour-only"),
    pytest.param("1990-05-17T", id="empty-time"),
    pytest.param("1990-05-17T10:30:15.", id="empty-fraction"),
    pytest.param("1990-05-17T10:30:15,5", id="comma-fraction"),
    pytest.param("1990-05-17T10:30+2:00", id="one-digit-zone"),
    pytest.param("1990-05-17T10:30+02", id="zone-hours-only"),
    pytest.param("1990-05-17T10:30+24:00", id="zone-hour-24"),
    pytest.param("1990-05-17T10:30z", id="lowercase-z"),
    pytest.param("1990-05-17t10:30", id="lowercase-t"),
    pytest.param("1990-05-17Z", id="zone-without-time"),
    pytest.param("1990-05-17T10:30 UTC", id="zone-name"),
    pytest.param("١٩٩٠-٠٥-١٧", id="non-ascii-digits"),
    pytest.param("May 17, 1990", id="words"),
    pytest.param("", id="empty"),
    pytest.param("   ", id="blank"),
    pytest.param(19900517, id="int"),
    pytest.param(642902400.0, id="float"),
    pytest.param(True, id="bool"),
    pytest.param({"y": 1990}, id="dict"),
    pytest.param(["1990-05-17"], id="list"),
]


@pytest.mark.parametrize(("value", "expected"), VALID_BIRTHDATES)
def test_birthdate_valid(value: str, expected: str) -> None:
    assert normalize_birthdate(value) == expected
    result = mapped({"birthdate": value})
    assert result.customer is not None
    assert result.customer["birthdate"] == expected
    assert result.warnings == ()


@pytest.mark.parametrize("value", INVALID_BIRTHDATES)
def test_birthdate_invalid_dropped_with_warning(value: Any) -> None:
    assert normalize_birthdate(value) is None
    result = mapped({"birthdate": value})
    assert result.customer is not None
    assert "birthdate" not in result.customer
    assert result.warnings == (BIRTHDATE_WARNING,)


def test_birthdate_warning_never_holds_the_value() -> None:
    result = map_profile("use_secret", {"birthdate": "31/12/1975 secret"}, EXT)
    assert result.warnings == ("birthdate dropped for use_secret: not an ISO 8601 date",)
    assert "1975" not in result.warnings[0]


@pytest.mark.parametrize(
    ("traits", "expected", "warnings"),
    [
        pytest.param({"birthday": "1990-05-17"}, "1990-05-17", (), id="birthday-fallback"),
        pytest.param(
            {"birthdate": None, "birthday": "1990-05-17T08:00Z"},
            "1990-05-17",
            (),
            id="null-birthdate-uses-birthday",
        ),
        pytest.param(
            {"birthdate": "1980-01-02", "birthday": "1990-05-17"},
            "1980-01-02",
            (),
            id="birthdate-wins",
        ),
        pytest.param(
            {"birthdate": "17/05/1990", "birthday": "1990-05-17"},
            ABSENT,
            (BIRTHDATE_WARNING,),
            id="invalid-birthdate-does-not-fall-back",
        ),
        pytest.param(
            {"birthdate": "", "birthday": "1990-05-17"},
            ABSENT,
            (BIRTHDATE_WARNING,),
            id="empty-birthdate-is-present",
        ),
        pytest.param(
            {"birthday": "1990-02-30"}, ABSENT, (BIRTHDATE_WARNING,), id="invalid-birthday"
        ),
        pytest.param({"birthdate": None, "birthday": None}, ABSENT, (), id="both-null"),
        pytest.param({}, ABSENT, (), id="both-absent"),
    ],
)
def test_birthdate_sources(traits: dict[str, Any], expected: Any, warnings: tuple) -> None:
    result = mapped(traits)
    assert result.customer is not None
    assert result.customer.get("birthdate", ABSENT) == expected
    assert result.warnings == warnings


# --------------------------------------------------------------------------- address


@pytest.mark.parametrize(
    ("traits", "expected"),
    [
        pytest.param(
            {
                "address": {
                    "street": "1 Main St",
                    "line_2": "Flat 2",
                    "city": "London",
                    "state": "LDN",
                    "postalCode": "N1 9GU",
                    "country": "GB",
                }
            },
            {
                "line_1": "1 Main St",
                "line_2": "Flat 2",
                "city": "London",
                "state": "LDN",
                "postal_code": "N1 9GU",
                "country": "GB",
            },
            id="nested",
        ),
        pytest.param(
            {
                "street": "1 Main St",
                "line_2": "Flat 2",
                "city": "London",
                "state": "LDN",
                "postal_code": "N1 9GU",
                "country": "GB",
            },
            {
                "line_1": "1 Main St",
                "line_2": "Flat 2",
                "city": "London",
                "state": "LDN",
                "postal_code": "N1 9GU",
                "country": "GB",
            },
            id="flat",
        ),
        pytest.param(
            {"address": {"street": "Street", "line_1": "Line1"}},
            {"line_1": "Street"},
            id="street-beats-line_1",
        ),
        pytest.param(
            {"address": {"street": "", "line_1": "Line1"}},
            {"line_1": "Line1"},
            id="blank-street-uses-line_1",
        ),
        pytest.param({"line_1": "Line1"}, {"line_1": "Line1"}, id="flat-line_1"),
        pytest.param(
            {"postalCode": "111", "postal_code": "222"},
            {"postal_code": "111"},
            id="postalCode-beats-postal_code",
        ),
        pytest.param(
            {"address": {"postal_code": "222"}}, {"postal_code": "222"}, id="nested-postal_code"
        ),
        pytest.param(
            {"address": {"city": "Nested"}, "city": "Flat", "country": "PL"},
            {"city": "Nested", "country": "PL"},
            id="nested-beats-flat-per-key",
        ),
        pytest.param(
            {"address": {"line_1": "Nested line"}, "street": "Flat street"},
            {"line_1": "Nested line"},
            id="nested-line_1-beats-flat-street",
        ),
        pytest.param(
            {"address": {"city": None, "state": " "}, "city": "Flat", "state": "S"},
            {"city": "Flat", "state": "S"},
            id="nested-without-value-falls-back-to-flat",
        ),
        pytest.param(
            {"address": {"postalCode": 12345, "line_2": 7.0}, "street": 10},
            {"line_1": "10", "line_2": "7", "postal_code": "12345"},
            id="numbers",
        ),
        pytest.param({"city": "Paris"}, {"city": "Paris"}, id="partial"),
        pytest.param(
            {"address": "1 Main St, London", "city": "London"},
            {"city": "London"},
            id="address-string-uses-flat",
        ),
        pytest.param(
            {"address": ["x"], "country": "GB"}, {"country": "GB"}, id="address-list-uses-flat"
        ),
        pytest.param(
            {"address": {"zip": "1", "line1": "x", "city": True}}, ABSENT, id="no-known-keys"
        ),
        pytest.param({"address": {}}, ABSENT, id="empty-dict"),
        pytest.param({"address": None, "city": ""}, ABSENT, id="no-values"),
        pytest.param({}, ABSENT, id="absent"),
    ],
)
def test_address(traits: dict[str, Any], expected: Any) -> None:
    assert field_of(traits, "address") == expected


def test_address_key_order() -> None:
    traits = {"country": "GB", "postalCode": "1", "state": "S", "city": "C", "line_2": "2"}
    traits["street"] = "1"
    address = field_of(traits, "address")
    assert list(address) == ["line_1", "line_2", "city", "state", "postal_code", "country"]


# --------------------------------------------------------------------------- source_id


@pytest.mark.parametrize(
    ("external_ids", "identifier", "expected"),
    [
        pytest.param([ext("u1")], "user_id", "u1", id="single"),
        pytest.param([], "user_id", None, id="no-ids"),
        pytest.param([ext("a@x.io", type_="email")], "user_id", None, id="other-type-only"),
        pytest.param(
            [ext("late", "2024-01-01T00:00:00Z"), ext("early", "2020-01-01T00:00:00Z")],
            "user_id",
            "early",
            id="earliest-wins",
        ),
        pytest.param(
            [ext("utc", "2020-01-01T01:30:00Z"), ext("plus2", "2020-01-01T02:00:00+02:00")],
            "user_id",
            "plus2",
            id="compared-as-instants",
        ),
        pytest.param(
            [ext("ms", "2020-01-01T00:00:00.100Z"), ext("s", "2020-01-01T00:00:00Z")],
            "user_id",
            "s",
            id="fraction-counts",
        ),
        pytest.param(
            [
                ext("b", "2020-01-01T00:00:00.0000001Z"),
                ext("a", "2020-01-01T00:00:00.0000002Z"),
            ],
            "user_id",
            "b",
            id="sub-microsecond-counts",
        ),
        pytest.param(
            [ext("b", "2020-01-01T00:00:00.5Z"), ext("a", "2020-01-01T00:00:00.500000000Z")],
            "user_id",
            "a",
            id="equal-fractions-tie",
        ),
        pytest.param(
            [ext("naive", "2020-01-01T00:30:00"), ext("zoned", "2020-01-01T01:00:00+01:00")],
            "user_id",
            "zoned",
            id="naive-is-utc",
        ),
        pytest.param(
            [ext("zeta", "2020-01-01T00:00:00Z"), ext("alpha", "2020-01-01T00:00:00Z")],
            "user_id",
            "alpha",
            id="tie-smallest-id",
        ),
        pytest.param(
            [ext("a", "not a date"), ext("b", "2024-01-01T00:00:00Z")],
            "user_id",
            "b",
            id="unparseable-sorts-last",
        ),
        pytest.param(
            [ext("a", None), ext("b", 1577836800), ext("c", "2030-01-01")],
            "user_id",
            "c",
            id="missing-and-numeric-created_at-sort-last",
        ),
        pytest.param(
            [ext("z", "garbage"), ext("y", None)], "user_id", "y", id="all-unparseable-smallest-id"
        ),
        pytest.param(
            [ext(None, "2000-01-01T00:00:00Z"), ext("later", "2024-01-01T00:00:00Z")],
            "user_id",
            "later",
            id="entry-without-id-value-skipped",
        ),
        pytest.param(
            [ext("", "2000-01-01T00:00:00Z"), ext(" ", "2001-01-01T00:00:00Z")],
            "user_id",
            None,
            id="blank-ids-only",
        ),
        pytest.param([ext(12345)], "user_id", "12345", id="int-id"),
        pytest.param([ext(12.0)], "user_id", "12", id="integral-float-id"),
        pytest.param([ext(True), ext({"id": 1}), ext(math.nan)], "user_id", None, id="bad-ids"),
        pytest.param(
            [ext(10, "2020-01-01T00:00:00Z"), ext(9, "2020-01-01T00:00:00Z")],
            "user_id",
            "10",
            id="numeric-ids-tie-compare-as-strings",
        ),
        pytest.param(
            [ext("u1"), ext("a@x.io", "2000-01-01T00:00:00Z", "email")],
            "email",
            "a@x.io",
            id="email-identifier",
        ),
        pytest.param(
            [ext("u1"), ext("anon-1", type_="anonymous_id")],
            "anonymous_id",
            "anon-1",
            id="anonymous_id-identifier",
        ),
        pytest.param(
            [ext("c-1", type_="crm_id"), ext("u1")], "crm_id", "c-1", id="custom-identifier"
        ),
        pytest.param([ext(" u1 ")], "user_id", " u1 ", id="id-not-stripped"),
        pytest.param([None, "junk", ext("u1")], "user_id", "u1", id="non-mapping-entries"),
    ],
)
def test_select_source_id(external_ids: list[Any], identifier: str, expected: Any) -> None:
    assert select_source_id(external_ids, identifier) == expected
    assert select_source_id(reversed(external_ids), identifier) == expected  # order-free
    result = map_profile(SEG, {"name": "N"}, external_ids, identifier=identifier)
    assert (result.customer or {}).get("source_id") == expected


def test_no_identifier_gives_no_customer() -> None:
    result = map_profile(SEG, {"name": "N", "birthdate": "bad"}, [], identifier="user_id")
    assert result == Mapped(SEG, None, ())


def test_default_identifier_is_user_id() -> None:
    ids = [ext("a@x.io", "2000-01-01T00:00:00Z", "email"), ext("u1")]
    assert map_profile(SEG, {}, ids).customer == {"source_id": "u1"}


# --------------------------------------------------------------------------- metadata

METADATA_TRAITS: dict[str, Any] = {
    "name": "Ada",
    "email": "a@x.io",
    "street": "1 Main",
    "birthday": "1990-01-01",
    "plan": "pro",
    "score": 3.5,
    "gone": None,
    "nested": {"a": None, "b": [1, None, {"c": None}]},
    "metadata": {"tier": "gold", "drop": None},
}


@pytest.mark.parametrize(
    ("traits", "mode", "expected"),
    [
        pytest.param(
            METADATA_TRAITS, "metadata", {"tier": "gold"}, id="metadata-dict-nulls-stripped"
        ),
        pytest.param({"metadata": {"a": 1, "b": [1]}}, "metadata", {"a": 1, "b": [1]}, id="kept"),
        pytest.param({"metadata": "x", "plan": "pro"}, "metadata", ABSENT, id="not-a-dict"),
        pytest.param({"metadata": ["a"]}, "metadata", ABSENT, id="list-not-a-dict"),
        pytest.param({"plan": "pro"}, "metadata", ABSENT, id="absent"),
        pytest.param({"metadata": {}}, "metadata", ABSENT, id="empty-omitted"),
        pytest.param({"metadata": {"a": None}}, "metadata", ABSENT, id="all-null-omitted"),
        pytest.param(
            {"metadata": {"a": {"b": None}, "l": [None]}},
            "metadata",
            {"a": {}, "l": []},
            id="emptied-containers-stay",
        ),
        pytest.param(
            METADATA_TRAITS,
            "all",
            {
                "plan": "pro",
                "score": 3.5,
                "nested": {"b": [1, {}]},
                "metadata": {"tier": "gold"},
            },
            id="all-non-consumed-incl-metadata-key",
        ),
        pytest.param(
            {"metadata": "text", "x": 1}, "all", {"metadata": "text", "x": 1}, id="all-as-is"
        ),
        pytest.param({"metadata": None, "x": None}, "all", ABSENT, id="all-only-nulls-omitted"),
        pytest.param(
            {k: "v" for k in CONSUMED_TRAITS}, "all", ABSENT, id="all-only-consumed-omitted"
        ),
        pytest.param(
            {"": "empty key", "ключ": "v", "a.b": {"x": False}},
            "all",
            {"": "empty key", "ключ": "v", "a.b": {"x": False}},
            id="all-odd-keys",
        ),
        pytest.param(METADATA_TRAITS, "none", ABSENT, id="none"),
    ],
)
def test_metadata_modes(traits: dict[str, Any], mode: str, expected: Any) -> None:
    assert field_of(traits, "metadata", metadata_mode=mode) == expected


def test_all_mode_keeps_trait_order() -> None:
    traits = {"z": 1, "email": "e@x.io", "a": 2, "metadata": {}, "m": 3}
    assert list(field_of(traits, "metadata", metadata_mode="all")) == ["z", "a", "metadata", "m"]


def test_unknown_metadata_mode_is_rejected() -> None:
    with pytest.raises(ValueError, match="metadata mode"):
        map_profile(SEG, {}, EXT, metadata_mode="everything")  # type: ignore[arg-type]


def test_consumed_and_standard_traits() -> None:
    assert len(METADATA_MODES) == 3
    assert (
        frozenset(
            {
                "name",
                "firstName",
                "first_name",
                "lastName",
                "last_name",
                "email",
                "phone",
                "description",
                "birthdate",
                "birthday",
                "address",
                "street",
                "line_1",
                "line_2",
                "city",
                "state",
                "postalCode",
                "postal_code",
                "country",
            }
        )
        == CONSUMED_TRAITS
    )
    assert set(STANDARD_TRAITS) == CONSUMED_TRAITS | {"metadata"}
    assert len(STANDARD_TRAITS) == len(set(STANDARD_TRAITS))


def test_standard_traits_are_all_the_mapping_reads() -> None:
    # Keeping only STANDARD_TRAITS must not change the result outside "all" mode.
    traits = {**METADATA_TRAITS, "firstName": "A", "address": {"city": "C"}, "extra": 1}
    subset = {k: v for k, v in traits.items() if k in STANDARD_TRAITS}
    for mode in ("metadata", "none"):
        assert mapped(traits, metadata_mode=mode) == mapped(subset, metadata_mode=mode)


# --------------------------------------------------------------------------- strip_nulls


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param({"a": None, "b": 1}, {"b": 1}, id="dict"),
        pytest.param([None, 1, None], [1], id="list"),
        pytest.param({"a": {"b": None, "c": [None, {"d": None}]}}, {"a": {"c": [{}]}}, id="deep"),
        pytest.param({"a": {}, "b": []}, {"a": {}, "b": []}, id="empty-containers-stay"),
        pytest.param({"a": {"b": None}}, {"a": {}}, id="emptied-dict-stays"),
        pytest.param([[None]], [[]], id="emptied-list-stays"),
        pytest.param({"f": False, "z": 0, "s": ""}, {"f": False, "z": 0, "s": ""}, id="falsy-kept"),
        pytest.param("x", "x", id="scalar"),
        pytest.param(None, None, id="none"),
    ],
)
def test_strip_nulls(value: Any, expected: Any) -> None:
    before = copy.deepcopy(value)
    assert strip_nulls(value) == expected
    assert value == before  # the input is not mutated


def _strip_nulls_reference(value: Any) -> Any:
    """The rule as first written, one call per value."""
    if isinstance(value, dict):
        return {k: _strip_nulls_reference(v) for k, v in value.items() if not _null(v)}
    if isinstance(value, list):
        return [_strip_nulls_reference(v) for v in value if not _null(v)]
    return value


def _null(value: Any) -> bool:
    return value is None or (isinstance(value, float) and not math.isfinite(value))


_JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=2), inner),
    max_leaves=20,
)


@settings(max_examples=500)
@given(
    st.one_of(
        st.text(alphabet="0123456789-W٠١ T:Z+", min_size=8, max_size=12),
        st.dates().map(lambda d: d.isoformat()),
        st.dates().map(lambda d: d.isoformat().replace("-", "/")),
    )
)
def test_a_plain_date_is_read_as_the_regex_reads_it(text: str) -> None:
    """`normalize_birthdate` skips the regex for YYYY-MM-DD; it must agree with it."""
    from migrator.values import _iso_match

    assert normalize_birthdate(text) == (None if _iso_match(text) is None else text[:10])


@given(_JSONISH)
def test_strip_nulls_is_the_rule_as_first_written(value: Any) -> None:
    assert repr(strip_nulls(value)) == repr(_strip_nulls_reference(value))


# --------------------------------------------------------------------------- order & purity

FULL_TRAITS: dict[str, Any] = {
    "metadata": {"k": "v"},
    "address": {"city": "C"},
    "birthday": "1990-05-17",
    "description": "d",
    "phone": "p",
    "email": "e",
    "lastName": "L",
    "firstName": "F",
}


def test_key_order() -> None:
    assert list(customer_of(FULL_TRAITS)) == list(FIELD_ORDER)


def test_full_customer() -> None:
    assert customer_of(FULL_TRAITS) == {
        "source_id": "use_123",
        "name": "F L",
        "email": "e",
        "phone": "p",
        "description": "d",
        "birthdate": "1990-05-17",
        "address": {"city": "C"},
        "metadata": {"k": "v"},
    }


def test_inputs_not_mutated_and_output_not_aliased() -> None:
    traits = {"metadata": {"a": [1, None]}, "x": {"y": None}, "address": {"city": "C"}}
    ids = [ext("u1")]
    before = copy.deepcopy((traits, ids))
    customer = customer_of(traits, metadata_mode="all")
    assert (traits, ids) == before
    customer["metadata"]["metadata"]["a"].append(2)
    assert traits["metadata"]["a"] == [1, None]


# --------------------------------------------------------------------------- properties

# Built lazily: hypothesis reprs sampled_from() elements, and repr() refuses > 4300 digits.
_HUGE_INTS = st.builds(
    lambda digits, sign: sign * 10**digits, st.integers(18, 6000), st.sampled_from([1, -1])
)
_LONG_TEXT = st.builds(lambda s, n: s * n, st.text(min_size=1, max_size=4), st.integers(500, 5000))
_ODD_TEXT = st.sampled_from(
    ["", " ", "\u00a0", "\ud800", "null", "1990-02-30", "١٩٩٠-٠٥-١٧", "🙂" * 3, "\x00"]
)
_BIRTHDATE_LIKE = st.from_regex(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?"
    r"(Z|[+-][0-9]{2}:?[0-9]{2})?)?",
    fullmatch=True,
) | st.dates().map(date.isoformat)
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | _HUGE_INTS
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text()
    | _LONG_TEXT
    | _ODD_TEXT
    | _BIRTHDATE_LIKE
)
_KEYS = st.text(max_size=8) | st.sampled_from([*STANDARD_TRAITS, "", "é", "🙂", "a.b", "$x"])
JSON_VALUES = st.recursive(
    _SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_KEYS, children, max_size=4),
    max_leaves=12,
)
# Standard keys with arbitrary values (nested address keys too), plus arbitrary extras.
_ADDRESS_DICTS = st.dictionaries(
    st.sampled_from(["street", "line_1", "line_2", "city", "state", "postalCode", "postal_code"])
    | _KEYS,
    JSON_VALUES,
    max_size=5,
)
TRAITS = st.builds(
    lambda standard, address, extra: {**extra, **standard, **address},
    st.dictionaries(st.sampled_from(STANDARD_TRAITS), JSON_VALUES, max_size=12),
    st.dictionaries(st.just("address"), _ADDRESS_DICTS, max_size=1),
    st.dictionaries(_KEYS, JSON_VALUES, max_size=8),
)
_OFFSETS = st.builds(
    timezone, st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23))
)
_IDENTIFIERS = st.sampled_from(["user_id", "email", "anonymous_id", "crm_id"])
_EXTERNAL_ID = st.fixed_dictionaries(
    {},
    optional={
        "type": _IDENTIFIERS | st.text(max_size=5),
        "id": JSON_VALUES | st.text(min_size=1),
        "created_at": st.datetimes(timezones=st.none() | _OFFSETS).map(datetime.isoformat)
        | JSON_VALUES,
        "source_id": JSON_VALUES,
        "collection": st.just("users"),
        "encoding": st.just("none"),
    },
)
EXTERNAL_IDS = st.lists(
    _EXTERNAL_ID | JSON_VALUES.filter(lambda v: not isinstance(v, dict)), max_size=5
)

PROPERTY_SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def _assert_no_none(value: Any) -> None:
    assert value is not None
    if isinstance(value, dict):
        for item in value.values():
            _assert_no_none(item)
    elif isinstance(value, list):
        for item in value:
            _assert_no_none(item)


@PROPERTY_SETTINGS
@given(
    traits=TRAITS,
    external_ids=EXTERNAL_IDS,
    identifier=_IDENTIFIERS,
    mode=st.sampled_from(METADATA_MODES),
)
def test_property_mapping_is_total_valid_and_deterministic(
    traits: dict[str, Any], external_ids: list[Any], identifier: str, mode: Any
) -> None:
    result = map_profile("seg_x", traits, external_ids, identifier=identifier, metadata_mode=mode)
    # Deterministic: the same (deep-copied) input maps to the same result.
    again = map_profile(
        "seg_x",
        copy.deepcopy(traits),
        copy.deepcopy(external_ids),
        identifier=identifier,
        metadata_mode=mode,
    )
    assert result == again
    assert result.segment_id == "seg_x"
    assert all(w == "birthdate dropped for seg_x: not an ISO 8601 date" for w in result.warnings)
    customer = result.customer
    if customer is None:
        assert select_source_id(external_ids, identifier) is None
        return
    assert customer["source_id"] == select_source_id(external_ids, identifier)
    assert_valid_customer(customer)
    _assert_no_none(customer)
    assert list(customer) == [f for f in FIELD_ORDER if f in customer]
    for field in ("source_id", "name", "email", "phone", "description"):
        if field in customer:
            assert isinstance(customer[field], str) and customer[field].strip()
    if "birthdate" in customer:
        assert re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", customer["birthdate"])
        date.fromisoformat(customer["birthdate"])  # a real calendar date
        assert result.warnings == ()
    if "address" in customer:
        assert customer["address"] and set(customer["address"]) <= ADDRESS_KEYS
        assert all(isinstance(v, str) and v.strip() for v in customer["address"].values())
    if "metadata" in customer:
        assert isinstance(customer["metadata"], dict) and customer["metadata"]
        assert mode != "none"
    # Change tracking round-trips on whatever the mapping produced.
    assert diff(customer, fingerprints(customer)) == {"source_id": customer["source_id"]}
    assert diff(customer, {}) == customer


@PROPERTY_SETTINGS
@given(value=JSON_VALUES)
def test_property_birthdate_is_date_or_warning(value: Any) -> None:
    result = map_profile(SEG, {"birthdate": value}, EXT)
    assert result.customer is not None
    if value is None:
        assert "birthdate" not in result.customer and result.warnings == ()
    elif "birthdate" in result.customer:
        assert result.customer["birthdate"] == value[:10]
        date.fromisoformat(value[:10])
    else:
        assert result.warnings == (BIRTHDATE_WARNING,)


# -- agreement with the sandbox's independent oracle -----------------------------------------


@pytest.mark.parametrize("mode", ["metadata", "all", "none"])
@pytest.mark.parametrize("identifier", ["user_id", "anonymous_id", "email"])
def test_mapping_agrees_with_the_independent_oracle(mode: str, identifier: str) -> None:
    """Two implementations of docs/mapping.md, written apart, agree on generated profiles."""
    from migrator_sandbox.oracle import expected_customer
    from migrator_sandbox.settings import SandboxSettings
    from migrator_sandbox.state import Sandbox

    sandbox = Sandbox(SandboxSettings(profiles=1500, seed=7, long_tail=0.1))
    disagreements = []
    for segment_id in sandbox.segment_ids():
        traits, external_ids = sandbox.profile(segment_id)
        mine = map_profile(
            segment_id, traits, external_ids, identifier=identifier, metadata_mode=mode
        ).customer
        theirs = expected_customer(segment_id, traits, external_ids, identifier, mode)
        if mine != theirs:
            disagreements.append(segment_id)
    assert disagreements == []
