"""Tests of the mapping file (migrator/mapping_file.py) and of map_profile running it.

The built-in rules are a mapping file: loading ``builtin_mapping_toml()`` must give exactly
the customers and warnings of the migrator without a file (and of the sandbox's oracle).
The rest pins down each part of the format of docs/mapping.md, and each error message.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from migrator.exceptions import ConfigError
from migrator.mapping import (
    CONSUMED_TRAITS,
    METADATA_MODES,
    STANDARD_TRAITS,
    Mapped,
    map_profile,
)
from migrator.mapping_file import (
    CUSTOMER_FIELDS,
    MappingSpec,
    builtin_mapping_toml,
    builtin_spec,
    load_mapping,
    parse_mapping,
)
from tests.helpers import VALIDATOR
from tests.test_mapping import EXTERNAL_IDS, PROPERTY_SETTINGS, TRAITS

SEG = "seg_1"
EXT = [{"type": "user_id", "id": "u1", "created_at": "2023-01-01T00:00:00Z"}]
DOCS = Path(__file__).parent.parent / "docs" / "mapping.md"


def spec_of(text: str) -> MappingSpec:
    return parse_mapping(text, origin="test.toml")


def run(text: str | MappingSpec, traits: dict[str, Any], **kwargs: Any) -> Mapped:
    spec = spec_of(text) if isinstance(text, str) else text
    return map_profile(SEG, traits, EXT, spec=spec, **kwargs)


def customer(text: str | MappingSpec, traits: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    result = run(text, traits, **kwargs)
    assert result.customer is not None, result.refused
    VALIDATOR.validate([result.customer])
    return result.customer


def meta(entry: str, traits: dict[str, Any]) -> Mapped:
    """Map with one metadata entry ``k = <entry>`` and no other rule."""
    return run(f'metadata_mode = "none"\n[metadata]\nk = {entry}\n', traits)


# -- the built-in rules as a file --------------------------------------------------------------


@pytest.mark.parametrize("mode", METADATA_MODES)
@pytest.mark.parametrize("identifier", ["user_id", "anonymous_id", "email"])
def test_builtin_file_round_trip_on_generated_profiles(mode: str, identifier: str) -> None:
    """The file `mapping init` writes maps 1,500 generated profiles exactly like no file,
    and like the sandbox's independent oracle."""
    from migrator_sandbox.oracle import expected_customer
    from migrator_sandbox.settings import SandboxSettings
    from migrator_sandbox.state import Sandbox

    spec = parse_mapping(builtin_mapping_toml(mode), origin="mapping.toml")
    assert spec.metadata_mode == mode
    sandbox = Sandbox(SandboxSettings(profiles=1500, seed=7, long_tail=0.1))
    differences = []
    warned = 0
    for segment_id in sandbox.segment_ids():
        traits, external_ids = sandbox.profile(segment_id)
        builtin = map_profile(
            segment_id, traits, external_ids, identifier=identifier, metadata_mode=mode
        )
        from_file = map_profile(segment_id, traits, external_ids, identifier=identifier, spec=spec)
        oracle = expected_customer(segment_id, traits, external_ids, identifier, mode)
        warned += bool(builtin.warnings)
        if from_file != builtin or from_file.customer != oracle:
            differences.append(segment_id)
    assert differences == []
    assert warned > 0  # the generator makes bad birthdates: warnings were compared too


def test_builtin_file_from_disk(tmp_path: Path) -> None:
    path = tmp_path / "mapping.toml"
    path.write_text(builtin_mapping_toml("all"), encoding="utf-8")
    spec = load_mapping(path)
    assert spec.origin == str(path)
    traits = {"firstName": "Ada", "birthday": "1815-12-10", "plan": "pro", "city": "London"}
    assert run(spec, traits) == map_profile(SEG, traits, EXT, metadata_mode="all")


@PROPERTY_SETTINGS
@given(traits=TRAITS, external_ids=EXTERNAL_IDS, mode=st.sampled_from(METADATA_MODES))
def test_property_builtin_file_equals_builtin(
    traits: dict[str, Any], external_ids: list[Any], mode: str
) -> None:
    spec = builtin_spec(mode)
    assert map_profile("s", traits, external_ids, spec=spec) == map_profile(
        "s",
        traits,
        external_ids,
        metadata_mode=mode,  # type: ignore[arg-type]
    )


def test_builtin_spec_reads_the_standard_traits() -> None:
    spec = builtin_spec()
    assert spec.consumed == CONSUMED_TRAITS
    assert spec.traits_to_fetch() == STANDARD_TRAITS
    assert spec.traits_to_fetch("none") == STANDARD_TRAITS[:-1]  # no `metadata` trait
    assert spec.traits_to_fetch("all") is None
    assert [e.target for e in spec.fields] == list(CUSTOMER_FIELDS)
    assert spec.metadata == ()


def test_builtin_mapping_toml_modes() -> None:
    for mode in METADATA_MODES:
        assert f'metadata_mode = "{mode}"' in builtin_mapping_toml(mode)
    assert builtin_mapping_toml() == builtin_mapping_toml("metadata")
    with pytest.raises(ValueError, match="metadata mode"):
        builtin_mapping_toml("everything")


def test_metadata_mode_argument_overrides_the_file() -> None:
    spec = spec_of('metadata_mode = "none"')
    traits = {"metadata": {"a": 1}, "b": 2}
    assert "metadata" not in customer(spec, traits)
    assert customer(spec, traits, metadata_mode="metadata")["metadata"] == {"a": 1}
    assert customer(spec, traits, metadata_mode="all")["metadata"] == {"metadata": {"a": 1}, "b": 2}
    with pytest.raises(ValueError, match="metadata mode"):
        run(spec, traits, metadata_mode="everything")


# -- transformations ------------------------------------------------------------------------------

ABSENT = object()


@pytest.mark.parametrize(
    ("entry", "value", "expected"),
    [
        # no transformation (metadata): the value as is, nulls stripped
        ('"t"', {"a": None, "b": [1, None]}, {"b": [1]}),
        ('"t"', False, False),
        ('"t"', "", ""),
        ('"t"', float("nan"), ABSENT),
        # text: a value without a string value has no value (no warning)
        ('{ from = "t", as = "string" }', 5, "5"),
        ('{ from = "t", as = "string" }', 2.50, "2.5"),
        ('{ from = "t", as = "string" }', "  ", ABSENT),
        ('{ from = "t", as = "string" }', True, ABSENT),
        ('{ from = "t", as = "lower" }', "Ada@Example.ORG", "ada@example.org"),
        ('{ from = "t", as = "lower" }', 7, "7"),
        ('{ from = "t", as = "trim" }', "  padded \t", "padded"),
        ('{ from = "t", as = "trim" }', " \n ", ABSENT),
        # typed: converts, or is dropped with a warning
        ('{ from = "t", as = "number" }', "34", 34),
        ('{ from = "t", as = "number" }', "-34.5", -34.5),
        ('{ from = "t", as = "number" }', "1e3", 1000),
        ('{ from = "t", as = "number" }', 2.5, 2.5),
        ('{ from = "t", as = "number" }', "34abc", "not a number"),
        ('{ from = "t", as = "number" }', "", "not a number"),
        ('{ from = "t", as = "number" }', True, "not a number"),
        ('{ from = "t", as = "integer" }', "34", 34),
        ('{ from = "t", as = "integer" }', 34.0, 34),
        ('{ from = "t", as = "integer" }', "3.5", "not an integer"),
        ('{ from = "t", as = "boolean" }', "TRUE", True),
        ('{ from = "t", as = "boolean" }', "false", False),
        ('{ from = "t", as = "boolean" }', False, False),
        ('{ from = "t", as = "boolean" }', 1, "not a boolean"),
        ('{ from = "t", as = "boolean" }', "yes", "not a boolean"),
        ('{ from = "t", as = "date" }', "1990-05-17T23:30:00-05:00", "1990-05-17"),
        ('{ from = "t", as = "date" }', "17/05/1990", "not an ISO 8601 date"),
        ('{ from = "t", as = "datetime" }', "2024-01-02 03:04", "2024-01-02T03:04:00Z"),
        (
            '{ from = "t", as = "datetime" }',
            "2024-01-02T03:04:05.1234567+0200",
            "2024-01-02T03:04:05.1234567+02:00",
        ),
        ('{ from = "t", as = "datetime" }', "2024-01-02", "2024-01-02T00:00:00Z"),
        ('{ from = "t", as = "datetime" }', "2024-02-30T00:00Z", "not an ISO 8601 date-time"),
        ('{ from = "t", as = "json" }', {"a": [1, None]}, '{"a":[1,null]}'),
        ('{ from = "t", as = "json" }', "x", '"x"'),
        ('{ from = "t", as = "json" }', float("inf"), "cannot be written as JSON"),
    ],
)
def test_transformations(entry: str, value: Any, expected: Any) -> None:
    result = meta(entry, {"t": value})
    assert result.customer is not None
    got = result.customer.get("metadata", {}).get("k", ABSENT)
    if isinstance(expected, str) and expected.startswith(("not ", "cannot ")):
        assert got is ABSENT
        assert result.warnings == (f"metadata.k dropped for {SEG}: {expected}",)
    else:
        assert got == expected and type(got) is type(expected) or got is expected
        assert result.warnings == ()


@pytest.mark.parametrize(
    ("traits", "expected"),
    [
        ({"a": "A", "b": "B", "c": "C"}, "A-B-C"),
        ({"a": "A", "c": 3}, "A-3"),
        ({"b": " ", "c": "C"}, "C"),
        ({"b2": "B2"}, "B2"),
        ({"x": "X"}, ABSENT),
    ],
)
def test_join(traits: dict[str, Any], expected: Any) -> None:
    result = meta('{ from = ["a", ["b", "b2"], "c"], as = "join", separator = "-" }', traits)
    assert (result.customer or {}).get("metadata", {}).get("k", ABSENT) == expected


def test_join_as_one_source_among_others_and_default_separator() -> None:
    text = '[customer]\nname = ["nick", { join = ["first", "last"] }, "login"]\n'
    assert customer(text, {"nick": "N", "first": "F", "last": "L"})["name"] == "N"
    assert customer(text, {"first": "F", "last": "L", "login": "x"})["name"] == "F L"
    assert customer(text, {"login": "x"})["name"] == "x"
    joined = '[customer]\nname = { from = ["first", "last"], as = "join" }\n'
    assert customer(joined, {"first": "F", "last": "L"})["name"] == "F L"


# -- fallbacks, nested paths, defaults, required ---------------------------------------------------


def test_text_fallback_takes_the_first_string_value() -> None:
    text = '[customer]\nemail = ["email", "contact.email", "mail"]\n'
    assert customer(text, {"email": " ", "contact": {"email": "c@x.io"}})["email"] == "c@x.io"
    assert customer(text, {"email": None, "contact": "no dict", "mail": 5})["email"] == "5"
    assert "email" not in customer(text, {"email": [], "contact": {}})


def test_typed_fallback_stops_at_the_first_non_null_value() -> None:
    text = '[metadata]\nn = { from = ["a", "b"], as = "number" }\n'
    assert customer(text, {"a": None, "b": "2"})["metadata"] == {"n": 2}
    result = run(text, {"a": "x", "b": "2"})  # "x" is there: it is judged, b is not used
    assert result.customer is not None and "metadata" not in result.customer
    assert result.warnings == (f"metadata.n dropped for {SEG}: not a number",)


def test_nested_paths() -> None:
    text = (
        '[customer.address]\ncity = ["address.city", "city"]\n'
        '[metadata]\ndeep = "a.b.c"\ntier = "metadata.tier"\n'
    )
    traits = {"a": {"b": {"c": [1, None]}}, "address": {"city": "Oslo"}, "metadata": {"tier": 1}}
    got = customer(text, traits)
    assert got["address"] == {"city": "Oslo"}
    assert got["metadata"] == {"tier": 1, "deep": [1]}
    for broken in ({"a": {"b": "not a dict"}}, {"a": ["b"]}, {"a": None}, {}):
        assert "deep" not in customer(text, broken).get("metadata", {})
    assert customer(text, {"address": "Main St", "city": "Bergen"})["address"] == {"city": "Bergen"}


def test_defaults() -> None:
    text = """
[customer]
email = { from = "email", as = "lower", default = "NOBODY@example.org" }
phone = { from = "phone", default = 5 }
birthdate = { from = "born", default = 1990-01-01 }
[metadata]
plan = { from = "plan", default = "free" }
score = { from = "score", as = "number", default = 0 }
tags = { from = "tags", default = ["new"] }
since = { from = "since", default = 2024-05-06T07:08:09Z }
"""
    got = customer(text, {"score": "high", "born": "not a date"})
    assert got["email"] == "nobody@example.org"  # the default is converted too
    assert got["phone"] == "5"
    assert got["birthdate"] == "1990-01-01"
    assert got["metadata"] == {
        "plan": "free",
        "score": 0,
        "tags": ["new"],
        "since": "2024-05-06T07:08:09+00:00",
    }
    spec = spec_of(text)
    first = customer(spec, {})
    first["metadata"]["tags"].append("mutated")
    assert customer(spec, {})["metadata"]["tags"] == ["new"]  # not shared between customers
    assert customer(spec, {"plan": "pro", "email": "A@B.C"})["metadata"]["plan"] == "pro"


def test_required_field_refuses_the_customer() -> None:
    text = '[customer]\nemail = { from = ["email", "mail"], required = true }\nphone = "phone"\n'
    result = run(text, {"phone": "1"})
    assert result.customer is None
    assert result.refused == "email is required by the mapping and has no value"
    assert result.source_id == "u1"
    assert customer(text, {"mail": "m@x.io"})["email"] == "m@x.io"


def test_required_typed_value_that_does_not_convert() -> None:
    text = '[metadata]\nage = { from = "age", as = "integer", required = true }\n'
    result = run(text, {"age": "old", "email": "secret@x.io"})
    assert result.customer is None
    assert result.refused == (
        "metadata.age is required by the mapping and has no value (not an integer)"
    )
    assert result.warnings == (f"metadata.age dropped for {SEG}: not an integer",)
    assert "old" not in result.refused


def test_no_identifier_wins_over_required() -> None:
    spec = spec_of('[customer]\nemail = { from = "email", required = true }\n')
    result = map_profile(SEG, {}, [], spec=spec)
    assert result == Mapped(SEG, None, ())


# -- metadata: the rest and explicit keys ---------------------------------------------------------


def test_explicit_keys_join_the_rest() -> None:
    text = 'metadata_mode = "metadata"\n[metadata]\nplan = { from = "plan", as = "lower" }\n'
    traits = {"metadata": {"plan": "old", "a": 1}, "plan": "PRO"}
    assert customer(text, traits)["metadata"] == {"plan": "pro", "a": 1}
    # No value for the explicit key: the rest's value stays.
    assert customer(text, {"metadata": {"plan": "old"}})["metadata"] == {"plan": "old"}


def test_all_mode_leaves_out_every_trait_an_entry_reads() -> None:
    text = (
        'metadata_mode = "all"\n[customer]\nemail = "contact.email"\n'
        '[metadata]\nplan = "subscription_plan"\n'
    )
    traits = {"contact": {"email": "e@x.io"}, "subscription_plan": "pro", "email": "x", "z": 1}
    got = customer(text, traits)
    assert got["email"] == "e@x.io"
    assert got["metadata"] == {"email": "x", "z": 1, "plan": "pro"}  # file fields only
    spec = spec_of(text)
    assert spec.consumed == {"contact", "subscription_plan"}
    assert spec.traits_to_fetch() is None
    assert spec.traits_to_fetch("metadata") == ("contact", "subscription_plan", "metadata")
    assert spec.traits_to_fetch("none") == ("contact", "subscription_plan")


def test_only_the_fields_of_the_file_are_mapped_in_customer_order() -> None:
    text = """
[customer]
address.country = "country"
phone = "phone"
address.city = "city"
name = "name"
"""
    traits = {"name": "N", "email": "e@x.io", "phone": "1", "city": "C", "country": "PL"}
    got = customer(text, traits)
    assert list(got) == ["source_id", "name", "phone", "address"]
    assert list(got["address"]) == ["city", "country"]


def test_quoted_address_keys_and_dotted_keys_are_the_same() -> None:
    quoted = '[customer]\n"address.city" = "town"\n'
    table = '[customer.address]\ncity = "town"\n'
    assert spec_of(quoted).fields == spec_of(table).fields


def test_odd_names_stay_data() -> None:
    """Trait and key names reach the compiled mapping only as string literals."""
    text = """
[metadata]
"k'); raise SystemExit('" = "a'b\\"c"
"\\n\\\\" = { from = "x.y\\\\z", as = "string" }
"""
    got = customer(text, {"a'b\"c": 1, "x": {"y\\z": 2}})
    assert got["metadata"] == {"k'); raise SystemExit('": 1, "\n\\": "2"}


def test_inputs_not_mutated() -> None:
    text = '[metadata]\nm = "m"\nj = { from = "m", as = "json" }\n'
    traits = {"m": {"a": [None, 1]}}
    before = copy.deepcopy(traits)
    got = customer(text, traits)
    assert traits == before
    got["metadata"]["m"]["a"].append(2)
    assert traits == before


def test_spec_is_compiled_once_per_spec_object() -> None:
    from migrator import mapping

    spec = spec_of('[customer]\nemail = "email"\n')
    run(spec, {})
    compiled = mapping._compiled(spec)
    assert mapping._compiled(spec) is compiled
    assert "get('email')" in compiled.source


# -- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("customer = [", "not valid TOML: .*line 1"),
        ("[customer]\nemail = 'a'\nemail = 'b'\n", "not valid TOML: .*line 3"),
        ("foo = 1", "foo: unknown setting"),
        ('metadata_mode = "everything"', "metadata_mode: must be one of metadata, all, none"),
        ("customer = 5", "customer: must be a table"),
        ("metadata = 5", "metadata: must be a table"),
        ('[customer]\nnickname = "x"', "customer.nickname: unknown customer field"),
        ('[customer]\nsource_id = "x"', "customer.source_id: source_id comes from the external"),
        ('[customer]\naddress = "addr"', "customer.address: the address is filled key by key"),
        ('[customer]\naddress = { from = "a" }', "customer.address: the address is filled"),
        ('[customer.address]\nzip = "x"', "customer.address.zip: unknown customer field"),
        ('[customer]\nmetadata = "m"', "customer.metadata: unknown customer field"),
        (
            '[customer]\n"address.city" = "a"\naddress.city = "b"',
            "customer.address.city: given twice",
        ),
        (
            '[customer]\nemail = { from = "e", as = "upper" }',
            "customer.email: unknown transformation 'upper'",
        ),
        ('[customer]\nemail = { from = "e", as = 5 }', "customer.email: unknown transformation 5"),
        (
            '[customer]\nemail = { from = "e", as = "number" }',
            "customer.email: customer fields are text",
        ),
        (
            '[customer]\nbirthdate = { from = "b", as = "datetime" }',
            "customer.birthdate: birthdate is a date",
        ),
        ("[customer]\nemail = 5", "customer.email: must be a trait, a list of traits or a table"),
        ("[customer]\nemail = [5]", "customer.email: a trait must be a string, not a number"),
        ("[customer]\nemail = [true]", "customer.email: a trait must be a string, not a boolean"),
        ("[customer]\nemail = []", "customer.email: from is empty"),
        ('[customer]\nemail = "a..b"', "customer.email: bad trait path 'a..b'"),
        ('[customer]\nemail = ".a"', "customer.email: bad trait path"),
        ('[customer]\nemail = { as = "lower" }', "customer.email: needs from"),
        ('[customer]\nemail = { from = "e", sep = "x" }', "customer.email: unknown setting 'sep'"),
        (
            '[customer]\nemail = { from = "e", separator = "-" }',
            'separator only goes with as = "join"',
        ),
        (
            '[customer]\nname = { from = ["a"], as = "join", separator = 1 }',
            "customer.name: separator must be a string",
        ),
        (
            '[customer]\nname = { from = [], as = "join" }',
            "customer.name: join needs a list of traits",
        ),
        (
            '[customer]\nname = { from = [[]], as = "join" }',
            "customer.name: a part of a join is an empty list",
        ),
        (
            '[customer]\nname = [{ joint = ["a"] }]',
            "customer.name: unknown setting 'joint' in a join",
        ),
        ('[customer]\nname = [{ separator = "-" }]', "customer.name: a table in from must be"),
        (
            '[customer]\nemail = { from = "e", required = "yes" }',
            "customer.email: required must be true or false",
        ),
        (
            '[customer]\nemail = { from = "e", required = true, default = "x" }',
            "customer.email: has both a default and required",
        ),
        (
            '[customer]\nemail = { from = "e", default = true }',
            "customer.email: default must be a non-blank string",
        ),
        (
            '[customer]\nemail = { from = "e", default = " " }',
            "customer.email: default must be a non-blank string",
        ),
        (
            '[customer]\nbirthdate = { from = "b", default = "soon" }',
            'customer.birthdate: default must be a value that as = "date" accepts',
        ),
        (
            '[metadata]\nn = { from = "n", as = "number", default = "abc" }',
            'metadata.n: default must be a value that as = "number" accepts',
        ),
        (
            '[metadata]\nt = { from = "t", default = 12:30:00 }',
            "metadata.t: default must be a string, number",
        ),
        (
            '[metadata]\nt = { from = "t", default = [1, 12:30:00] }',
            "metadata.t: default must be a string, number",
        ),
        (
            '[metadata]\nt = { from = "t", default = nan }',
            "metadata.t: default must be a finite number",
        ),
        ('[metadata]\na.b = "x"', "metadata.a: unknown setting 'b' .*quote a metadata key"),
        ('[metadata]\n" " = "x"', "metadata. : a metadata key must not be blank"),
    ],
)
def test_config_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_mapping(text, origin="mine.toml")
    line = str(caught.value)
    assert "\n" not in line
    assert line.startswith("mine.toml: ")
    assert re.search(message, line), line


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^.*missing\.toml: cannot read the mapping file"):
        load_mapping(tmp_path / "missing.toml")
    latin = tmp_path / "latin.toml"
    latin.write_bytes('[metadata]\nk = "caf\xe9"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match="latin.toml: the mapping file is not UTF-8 text"):
        load_mapping(latin)


# -- the example of docs/mapping.md -------------------------------------------------------------


def test_the_documented_example() -> None:
    """The example file in docs/mapping.md loads, and maps as the doc says."""
    doc = DOCS.read_text("utf-8")
    example = re.search(r"<!-- example mapping file -->\n```toml\n(.*?)```", doc, re.S)
    assert example is not None
    spec = parse_mapping(example.group(1), origin="mapping.toml")
    traits = {
        "first_name": "Ada",
        "last_name": "Lovelace",
        "email": "Ada@Example.ORG",
        "birthday": "1815-12-10",
        "address": {"city": "London"},
        "country": "GB",
        "plan": "PRO",
        "ltv": "1234.50",
        "preferences": {"newsletter": "true", "channels": ["email"]},
        "createdAt": "2024-03-01 09:30:00",
        "favorite_colors": ["red", None],
        "metadata": {"ignored": True},
    }
    assert customer(spec, traits) == {
        "source_id": "u1",
        "name": "Ada Lovelace",
        "email": "ada@example.org",
        "birthdate": "1815-12-10",
        "address": {"city": "London", "country": "GB"},
        "metadata": {
            "plan": "pro",
            "lifetime_value": 1234.5,
            "newsletter": True,
            "signed_up_at": "2024-03-01T09:30:00Z",
            "favorite_colors": ["red"],
            "preferences": '{"newsletter":"true","channels":["email"]}',
        },
    }
    refused = run(spec, {"name": "No Mail"})
    assert refused.refused == "email is required by the mapping and has no value"
