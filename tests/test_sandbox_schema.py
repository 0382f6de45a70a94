"""The sandbox's Voucherify enforces a typed customer metadata schema as Voucherify does,
and a run with loosely typed traits against it lands every customer with typed values.

`metadata_rules` is the double's own validator (written apart from migrator/schema.py and
coercion.py): these tests pin it to the documented rules, then run the real pipeline
against it (issue 12).
"""

from __future__ import annotations

import asyncio
from datetime import date, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from migrator_sandbox.demo import run_demo, run_demo_profiles_sync
from migrator_sandbox.generator import ProfileGenerator
from migrator_sandbox.metadata_rules import (
    TYPED_SCHEMA,
    comparable,
    conform,
    live_definitions,
    metadata_problems,
)
from migrator_sandbox.server import SandboxServer
from migrator_sandbox.settings import SandboxSettings

# -- the rules, key by key ------------------------------------------------------------------


def problems(metadata: dict[str, Any], schema: dict[str, dict[str, Any]], **kw: Any) -> list[str]:
    return metadata_problems(
        metadata,
        schema,
        creating=kw.get("creating", False),
        allow_defined_only=kw.get("allow_defined_only", False),
    )


@pytest.mark.parametrize(
    ("spec", "accepted", "refused"),
    [
        ({"type": "string"}, ["a", "", "ü☕"], [1, True, ["a"], {"a": 1}]),
        ({"type": "number"}, [0, -3, 2.5, 10**12], ["34", True, float("nan"), float("inf"), [1]]),
        ({"type": "boolean"}, [True, False], ["true", 1, 0, "false"]),
        (
            {"type": "date"},
            ["2024-02-29", "1999-12-31"],
            ["2023-02-29", "2024-01-01T00:00:00Z", "20240101", 20240101],
        ),
        (
            {"type": "datetime"},
            ["2024-01-01T10:00:00Z", "2024-01-01T10:00:00.250+02:00", "2024-01-01T10:00Z"],
            ["2024-01-01T10:00:00", "2024-01-01 10:00:00Z", "2024-01-01", 1704103200],
        ),
        ({"type": "object"}, [{}, {"a": [1]}], ["{}", [1]]),
        (
            {"type": "geopoint"},
            [{"lat": 52.2, "long": 21.0}, {"latitude": -90, "longitude": 180}],
            [{"lat": 91, "long": 0}, {"lat": "52", "long": 21}, [52, 21]],
        ),
        (
            {"type": "image_url"},
            ["https://cdn.example.com/a.png", "http://x.io/b"],
            ["ftp://x.io/a", "/a.png", "https://"],
        ),
    ],
    ids=["string", "number", "boolean", "date", "datetime", "object", "geopoint", "image_url"],
)
def test_a_defined_key_takes_its_own_type_only(
    spec: dict[str, Any], accepted: list[Any], refused: list[Any]
) -> None:
    schema = {"k": spec}
    for value in accepted:
        assert problems({"k": value}, schema) == [], value
    for value in refused:
        assert problems({"k": value}, schema), value


def test_null_clears_a_defined_key_and_undefined_keys_pass_unless_defined_only() -> None:
    schema = {"points": {"type": "number"}}
    assert problems({"points": None}, schema) == []
    assert problems({"free": "x", "points": 1}, schema) == []
    refused = problems({"free": "x", "points": 1}, schema, allow_defined_only=True)
    assert refused == ["free: not defined in the schema"]


def test_arrays_take_lists_of_the_type_and_single_keys_refuse_lists() -> None:
    schema = {"tags": {"type": "string", "array": True}, "one": {"type": "string"}}
    assert problems({"tags": ["a", "b"]}, schema) == []
    assert problems({"tags": []}, schema) == []
    assert problems({"tags": "a"}, schema) == ["tags: expected an array"]
    assert problems({"tags": ["a", 1]}, schema) == ["tags: an item: expected string"]
    assert problems({"one": ["a"]}, schema) == ["one: expected a single value, not an array"]


def test_constraints_eq_ne_ranges_and_lengths() -> None:
    schema = {
        "tier": {"type": "string", "eq": ["gold", "silver"]},
        "code": {"type": "string", "ne": ["none"], "exactLength": 2},
        "n": {"type": "number", "gt": 0, "lte": 10},
        "d": {"type": "date", "gte": "2000-01-01", "lt": "2030-01-01"},
        "t": {"type": "datetime", "gte": "2020-01-01T00:00:00Z"},
        "s": {"type": "string", "minLength": 2, "maxLength": 3},
    }
    good = {"tier": "gold", "code": "ab", "n": 10, "d": "2000-01-01", "s": "abc"}
    good["t"] = "2020-01-01T01:00:00+01:00"  # the same instant as the limit
    assert problems(good, schema) == []
    for key, value in [
        ("tier", "bronze"),
        ("code", "none"),
        ("code", "abc"),
        ("n", 0),
        ("n", 10.5),
        ("d", "1999-12-31"),
        ("d", "2030-01-01"),
        ("t", "2019-12-31T23:59:59Z"),
        ("s", "a"),
        ("s", "abcd"),
    ]:
        assert problems({**good, key: value}, schema) != [], (key, value)
    # Lengths count as JavaScript does: a character past U+FFFF is two.
    assert problems({"s": "😀"}, schema) == []
    assert problems({"s": "a😀"}, schema) == []
    assert problems({"s": "😀😀"}, schema) != []


def test_required_keys_bind_on_create_only_and_deleted_definitions_are_ignored() -> None:
    schema = {
        "member": {"type": "string", "optional": False},
        "old": {"type": "number", "deleted": True},
    }
    assert problems({}, schema, creating=True) == [
        "member: required (optional: false) on a new customer"
    ]
    assert problems({"member": None}, schema, creating=True) != []
    assert problems({"member": "m1"}, schema, creating=True) == []
    assert problems({}, schema, creating=False) == []
    assert problems({"old": "not a number"}, schema) == []
    assert "old" not in live_definitions(schema)


def test_loose_traits_refuse_as_they_are_and_conform_as_the_oracle_expects() -> None:
    gen = ProfileGenerator(SandboxSettings(profiles=400, loose_metadata=True))
    raw = [
        p.traits["metadata"]
        for p in (gen.profile(i) for i in range(400))
        if isinstance(p.traits.get("metadata"), dict)
    ]
    assert len(raw) > 100
    # Sent as Segment holds them, most would be rejected: the run must convert them.
    rejected = [m for m in raw if problems(m, TYPED_SCHEMA)]
    assert len(rejected) > 0.9 * len(raw)
    for metadata in raw:
        expected = conform(metadata, TYPED_SCHEMA)
        typed = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in expected.items()}
        assert problems(typed, TYPED_SCHEMA) == [], metadata
        assert comparable(typed, TYPED_SCHEMA) == expected


# -- the double's Voucherify -----------------------------------------------------------------


async def _bulk(server: SandboxServer, items: list[dict[str, Any]]) -> dict[str, Any]:
    headers = {
        "X-App-Id": server.settings.app_id,
        "X-App-Token": server.settings.secret_key,
        "Content-Type": "application/json",
    }
    async with aiohttp.ClientSession(server.url) as http:
        async with http.post("/v1/customers/bulk/async", json=items, headers=headers) as r:
            assert r.status == 202, await r.text()
            action_id = (await r.json())["async_action_id"]
        await server.sandbox.wait_idle()
        async with http.get(f"/v1/async-actions/{action_id}", headers=headers) as r:
            return dict((await r.json())["result"])


def test_the_double_rejects_loose_values_and_missing_required_keys_on_create() -> None:
    schema = {**TYPED_SCHEMA, "member": {"type": "string", "optional": False}}
    settings = SandboxSettings(profiles=0, metadata_schema=schema, async_delay=0.01)

    async def scenario() -> None:
        async with SandboxServer(settings) as server:
            result = await _bulk(
                server,
                [
                    {"source_id": "a", "metadata": {"member": "m", "points": "34"}},
                    {"source_id": "b", "metadata": {"points": 34}},
                    {"source_id": "c", "metadata": {"member": "m", "points": 34}},
                ],
            )
            failed = {e["source_id"]: e["details"] for e in result["errors"]}
            assert set(failed) == {"a", "b"}
            assert "points: expected number" in failed["a"]
            assert "member: required" in failed["b"]
            assert all(e["key"] == "metadata_validation_failed" for e in result["errors"])
            # An existing customer is updated without the required key.
            again = await _bulk(server, [{"source_id": "c", "metadata": {"points": 35}}])
            assert again["errors"] == []
            assert server.sandbox.customers["c"]["metadata"] == {"points": 35}
            assert server.sandbox.stats_json()["metadata_rejections"] == 2

    asyncio.run(scenario())


# -- end to end: loosely typed traits land typed ---------------------------------------------


_TYPES = {
    "string": str,
    "number": (int, float),
    "boolean": bool,
    "date": str,
    "datetime": str,
}


def _assert_typed(customers: dict[str, dict[str, Any]]) -> int:
    """Every defined key of every stored customer holds its schema type; the count checked."""
    checked = 0
    for customer in customers.values():
        for key, value in (customer.get("metadata") or {}).items():
            spec = live_definitions(TYPED_SCHEMA).get(key)
            if spec is None or value is None:
                continue
            items = value if spec.get("array") else [value]
            assert isinstance(value, list) == bool(spec.get("array")), (key, value)
            for item in items:
                assert isinstance(item, _TYPES[spec["type"]]), (key, item)
                assert not (spec["type"] == "number" and isinstance(item, bool))
                if spec["type"] == "date":
                    date.fromisoformat(item)
                if spec["type"] == "datetime":
                    assert datetime.fromisoformat(item.replace("Z", "+00:00")).tzinfo
            checked += 1
    return checked


def test_a_typed_schema_with_loose_traits_lands_every_customer_typed(tmp_path: Path) -> None:
    settings = SandboxSettings(
        profiles=600, typed_schema=True, loose_metadata=True, async_delay=0.01
    )
    result = asyncio.run(run_demo(settings, tmp_path / "out"))
    assert result.ok, result.verification.summary()
    assert result.run.counts.failed == 0
    assert result.schema_rejections == 0  # no customer rejected
    assert result.verification.off_schema == []  # every value arrives with its schema type
    assert result.coerced > 300  # the conversion did the work
    assert result.schema_keys == len(live_definitions(TYPED_SCHEMA))


def test_every_stored_value_has_its_schema_type(tmp_path: Path) -> None:
    """The same run, checked customer by customer with plain isinstance checks."""
    from migrator.config import RunOptions, load_settings
    from migrator.runner import run_migration

    settings = SandboxSettings(
        profiles=300, typed_schema=True, loose_metadata=True, async_delay=0.01
    )

    async def scenario() -> tuple[Any, dict[str, dict[str, Any]], dict[str, Any]]:
        async with SandboxServer(settings) as server:
            result = await run_migration(
                load_settings(server.env()), tmp_path / "out", RunOptions()
            )
            await server.sandbox.wait_idle()
            return result, dict(server.sandbox.customers), server.sandbox.stats_json()

    result, customers, stats = asyncio.run(scenario())
    assert result.exit_code == 0 and result.counts.failed == 0
    assert stats["metadata_rejections"] == 0 and stats["customer_errors"] == 0
    assert _assert_typed(customers) > 500


def test_the_profiles_sync_demo_lands_loose_traits_typed_too(postgres: Any, tmp_path: Path) -> None:
    url, engine = postgres.database()
    engine.dispose()
    settings = SandboxSettings(
        profiles=300, typed_schema=True, loose_metadata=True, async_delay=0.01
    )
    result = asyncio.run(run_demo_profiles_sync(settings, tmp_path / "out", database_url=url))
    assert result.ok, result.verification
    assert result.schema_rejections == 0
    assert result.coerced > 100
