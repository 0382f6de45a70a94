"""The sandbox is a measuring instrument: these tests check it is faithful to the contracts
(docs/contracts.md) and that its oracle follows docs/mapping.md."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import math
import re
import time
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import jsonschema
import pytest

from migrator_sandbox import (
    ProfileGenerator,
    Sandbox,
    SandboxServer,
    SandboxSettings,
    ThreadedSandbox,
    expected_customer,
    sandbox_env,
    verify,
)
from migrator_sandbox.oracle import (
    CONSUMED_KEYS,
    birthdate_of,
    chosen_identity,
    differences,
    resolve_owners,
    source_id_of,
    stored_view,
    string_value,
)
from migrator_sandbox.settings import build_parser, parse_args

SCHEMA = json.loads((Path(__file__).parent / "voucherify-customers-bulk.schema.json").read_text())
BASE = "/v1/spaces/spa_sandbox/collections/users/profiles"
STANDARD_KEYS = CONSUMED_KEYS | {"metadata"}


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def schema_for(definition: str) -> dict[str, Any]:
    return {"$defs": SCHEMA["$defs"], "$ref": f"#/$defs/{definition}"}


class Client:
    """Thin helpers over one session, with both APIs' credentials."""

    def __init__(self, server: SandboxServer, session: aiohttp.ClientSession) -> None:
        self.server, self.session = server, session
        self.url = server.url
        settings = server.settings
        self.segment_auth = basic(settings.segment_token, "")
        self.vf_headers = {"X-App-Id": settings.app_id, "X-App-Token": settings.secret_key}

    async def seg(self, path: str, **params: Any) -> tuple[int, Any, Any]:
        url = self.url + BASE + path
        async with self.session.get(url, params=params, headers=self.segment_auth) as resp:
            return resp.status, await resp.json(), resp.headers

    async def vf(self, method: str, path: str, body: Any = None, **params: Any):
        kwargs: dict[str, Any] = {"headers": self.vf_headers, "params": params}
        if body is not None:
            kwargs["json"] = body
        async with self.session.request(method, self.url + path, **kwargs) as resp:
            return resp.status, await resp.json(), resp.headers

    async def all_pages(self, path: str, key: str, **params: Any) -> list[Any]:
        pages, token = [], None
        while True:
            query = dict(params, **({"next": token} if token else {}))
            status, body, _ = await self.seg(path, **query)
            assert status == 200, body
            page = body[key]
            pages.extend(page.items() if isinstance(page, dict) else page)
            if not body["cursor"]["has_more"]:
                assert body["cursor"]["next"] == ""
                return pages
            token = body["cursor"]["next"]

    async def send(self, customers: list[dict[str, Any]]) -> str:
        status, body, _ = await self.vf("POST", "/v1/customers/bulk/async", customers)
        assert status == 202, body
        jsonschema.validate(body, schema_for("AsyncActions"))
        return body["async_action_id"]

    async def action(self, action_id: str) -> dict[str, Any]:
        status, body, _ = await self.vf("GET", f"/v1/async-actions/{action_id}")
        assert status == 200, body
        return body


@contextlib.asynccontextmanager
async def sandbox(**overrides: Any) -> AsyncIterator[Client]:
    values: dict[str, Any] = {"profiles": 200, "async_delay": 0.05, "segment_rate": 0}
    settings = SandboxSettings(**(values | overrides))
    async with SandboxServer(settings) as server, aiohttp.ClientSession() as session:
        yield Client(server, session)


def first_profile(generator: ProfileGenerator, predicate) -> Any:
    return next(p for p in generator if predicate(p))


# -- generator ------------------------------------------------------------------------------


def test_generator_is_deterministic_and_lazy() -> None:
    settings = SandboxSettings(profiles=1_000_000, seed=7)
    one, two = ProfileGenerator(settings), ProfileGenerator(settings)
    for i in (0, 1, 999_999, 123_456):
        assert one.build(i) == two.build(i)
    assert one.profile(5) is one.profile(5)  # cached
    other = ProfileGenerator(SandboxSettings(profiles=10, seed=8))
    assert other.build(0).segment_id != one.build(0).segment_id
    assert other.build(0).traits != one.build(0).traits


def test_generator_variety() -> None:
    generator = ProfileGenerator(SandboxSettings(profiles=2000))
    profiles = list(generator)
    ids = [p.segment_id for p in profiles]
    assert len(set(ids)) == 2000
    assert all(re.fullmatch(r"use_[0-9A-Za-z]{27}", sid) for sid in ids)
    user_ids = [e["id"] for p in profiles for e in p.external_ids if e["type"] == "user_id"]
    assert len(user_ids) == len(set(user_ids))  # unique across profiles

    long_tail = [p for p in profiles if p.long_tail]
    assert 0.03 < len(long_tail) / 2000 < 0.08
    for p in long_tail:
        assert 201 <= len(p.traits) <= 300
        assert len([e for e in p.external_ids if e["type"] == "anonymous_id"]) > 100
        positions = [n for n, e in enumerate(p.external_ids) if e["type"] == "user_id"]
        assert all(n >= 100 for n in positions)  # never on the first page
    no_user = sum(p.truth.user_id is None for p in profiles)
    assert 0.05 < no_user / 2000 < 0.11
    assert any(sum(e["type"] == "user_id" for e in p.external_ids) == 2 for p in profiles)

    for p in profiles:  # standard traits come after every custom one
        order = [key in STANDARD_KEYS for key in p.traits]
        assert order == sorted(order), p.index
        for entry in p.external_ids:
            assert set(entry) == {"type", "id", "source_id", "collection", "created_at", "encoding"}
            assert entry["collection"] == "users" and entry["encoding"] == "none"
            assert entry["created_at"].endswith("Z")

    traits = [p.traits for p in profiles]
    names = " ".join(str(t.get(k)) for t in traits for k in ("name", "firstName", "first_name"))
    for text in ("Zoë", "Łukasz", "李", "José"):
        assert text in names
    assert any(ord(c) > 0x1F000 for c in names)  # an emoji
    assert any(isinstance(t.get("phone"), int) for t in traits)
    assert any(isinstance(t.get("phone"), str) and t["phone"].startswith("+") for t in traits)
    assert any("birthday" in t for t in traits)
    assert any(t.get("birthdate") in ("1990-02-30", "17/05/1990", "not a date") for t in traits)
    assert any(isinstance(t.get("address"), dict) for t in traits)
    assert any("street" in t and "address" not in t for t in traits)
    assert any(isinstance(t.get("postal_code") or t.get("postalCode"), int) for t in traits)
    assert any(isinstance(t.get("metadata"), dict) for t in traits)
    assert any("Größe" in t for t in traits)
    assert any(e["type"] == "email" for p in profiles for e in p.external_ids)
    assert any(e["type"] == "ga_client_id" for p in profiles for e in p.external_ids)


def test_oracle_agrees_with_generator_truth() -> None:
    for p in ProfileGenerator(SandboxSettings(profiles=2000, seed=3)):
        customer = expected_customer(p.segment_id, p.traits, p.external_ids)
        truth = p.truth
        if truth.user_id is None:
            assert customer is None
            continue
        assert customer is not None
        actual = {k: customer.get(k) for k in ("name", "email", "phone", "description")}
        intended = {
            "name": truth.name,
            "email": truth.email,
            "phone": truth.phone,
            "description": truth.description,
        }
        assert actual == intended, p.index
        assert customer["source_id"] == truth.user_id, p.index
        assert customer.get("birthdate") == truth.birthdate, p.index
        assert customer.get("address") == truth.address, p.index
        assert None not in customer.values()


def test_oracle_rules() -> None:
    assert [string_value(v) for v in ("x", " ", 5, 5.0, 3.14, math.nan, True, None, [])] == [
        "x", None, "5", "5", "3.14", None, None, None, None,
    ]  # fmt: skip
    assert string_value(" a ") == " a "
    for written, date in [
        ("1990-05-17", "1990-05-17"),
        ("1990-05-17T10:20:30.123+02:00", "1990-05-17"),
        ("1990-05-17 10:20", "1990-05-17"),
        ("1990-05-17T23:59:59-0500", "1990-05-17"),
        ("1990-02-30", None),
        ("1990-13-01", None),
        ("17/05/1990", None),
        ("1990-05-17T25:00", None),
        ("1990-05-17Z", None),
        (19900517, None),
    ]:
        assert birthdate_of({"birthdate": written}) == date, written
    assert birthdate_of({"birthdate": None, "birthday": "2000-01-02"}) == "2000-01-02"
    assert birthdate_of({"birthdate": "", "birthday": "2000-01-02"}) is None

    def ext(value: str, created: str) -> dict[str, str]:
        return {"type": "user_id", "id": value, "created_at": created}

    ids = [ext("b", "2020-01-01T00:00:00.500Z"), ext("a", "2020-01-01T00:00:00Z")]
    assert source_id_of(ids, "user_id") == "a"  # instants, not strings
    ids = [ext("z", "2020-01-01T00:00:00Z"), ext("y", "2020-01-01T01:00:00+01:00")]
    assert source_id_of(ids, "user_id") == "y"  # same instant: smallest id
    assert source_id_of([ext("q", "garbage"), ext("r", "2030-01-01T00:00:00Z")], "user_id") == "r"

    traits = {
        "plan": "pro",
        "gone": None,
        "firstName": "Zoë",
        "last_name": "Müller",
        "address": {"street": None, "postalCode": 94103},
        "street": "1 Market St",
        "metadata": {"a": None, "b": [1, None], "c": {}},
    }
    customer = expected_customer("use_x", traits, [ext("42", "2020-01-01T00:00:00Z")])
    assert customer == {
        "source_id": "42",
        "name": "Zoë Müller",
        "address": {"line_1": "1 Market St", "postal_code": "94103"},
        "metadata": {"b": [1], "c": {}},
    }
    assert list(customer) == ["source_id", "name", "address", "metadata"]
    everything = expected_customer("use_x", traits, [ext("42", "")], metadata_mode="all")
    assert everything is not None
    assert everything["metadata"] == {"plan": "pro", "metadata": {"b": [1], "c": {}}}
    bare = expected_customer("use_x", traits, [ext("42", "")], metadata_mode="none")
    assert bare is not None and "metadata" not in bare
    assert expected_customer("use_x", traits, [ext(" ", "")]) is None


# -- Segment Profile API --------------------------------------------------------------------


async def test_list_pagination_covers_every_profile_once() -> None:
    async with sandbox(profiles=250) as client:
        expected = client.server.sandbox.segment_ids()
        for limit in (100, 7):
            pages = await client.all_pages("", "data", limit=limit)
            assert [item["segment_id"] for item in pages] == expected
        status, body, headers = await client.seg("")
        assert status == 200 and len(body["data"]) == 10 and body["cursor"]["limit"] == 10
        assert headers["Request-Id"]


async def test_traits_and_external_ids_pagination() -> None:
    async with sandbox(profiles=400) as client:
        box = client.server.sandbox
        tail = first_profile(box.generator, lambda p: p.long_tail and p.truth.user_id)
        path = f"/segment_id:{tail.segment_id}"
        for limit in (200, 13, None):
            params = {"limit": limit} if limit else {}
            traits = await client.all_pages(path + "/traits", "traits", **params)
            assert dict(traits) == tail.traits and len(traits) == len(tail.traits)
            assert [key for key, _ in traits] == list(tail.traits)
        for limit in (100, 25, None):
            params = {"limit": limit} if limit else {}
            entries = await client.all_pages(path + "/external_ids", "data", **params)
            assert entries == tail.external_ids
        first_page = (await client.seg(path + "/external_ids", limit=100))[1]["data"]
        assert not any(e["type"] == "user_id" for e in first_page)
        first_traits = (await client.seg(path + "/traits", limit=200))[1]["traits"]
        assert not STANDARD_KEYS & set(first_traits)

        status, body, _ = await client.seg(path + "/traits", include="plan,email,nope")
        assert status == 200
        assert set(body["traits"]) == {"plan", "email"} & set(tail.traits)
        status, body, _ = await client.seg(path + "/external_ids", include="user_id")
        assert {e["type"] for e in body["data"]} == {"user_id"}
        key = next(iter(tail.traits))
        status, body, _ = await client.seg(path + "/traits", include=key, verbose="true")
        assert set(body["traits"][key]) == {"value", "source_id", "updated_at"}
        assert body["traits"][key]["value"] == tail.traits[key]
        status, body, _ = await client.seg(path + "/traits", **{"class": "audience"})
        assert set(body["traits"]) <= {"high_value_users", "churn_risk_audience"}
        status, body, _ = await client.seg(path + "/metadata")
        assert set(body["metadata"]) >= {"created_at", "updated_at", "first_message_id"}


async def test_profile_ids_are_type_value_and_percent_encoded() -> None:
    async with sandbox(profiles=100) as client:
        box = client.server.sandbox
        emailish = first_profile(box.generator, lambda p: "@" in (p.truth.user_id or ""))
        user_id = quote(emailish.truth.user_id, safe="")
        status, body, _ = await client.seg(f"/user_id:{user_id}/traits", limit=200)
        assert status == 200 and body["traits"] == dict(list(emailish.traits.items())[:200])
        anonymous = next(e["id"] for e in emailish.external_ids if e["type"] == "anonymous_id")
        status, body, _ = await client.seg(f"/anonymous_id:{anonymous}/metadata")
        assert status == 200
        status, body, _ = await client.seg("/user_id:no-such-user/traits")
        assert status == 404 and body["error"]["code"] == "not_found"
        status, body, _ = await client.seg("/use_without_type/traits")
        assert status == 400 and body["error"]["code"] == "validation_error"


async def test_segment_validation_auth_and_not_found() -> None:
    async with sandbox(profiles=20) as client:
        sid = client.server.sandbox.segment_ids()[0]
        for path, params in [
            ("", {"limit": 0}),
            ("", {"limit": 101}),
            ("", {"limit": "ten"}),
            ("", {"next": "garbage!"}),
            (f"/segment_id:{sid}/traits", {"limit": 201}),
            (f"/segment_id:{sid}/external_ids", {"limit": 101}),
            (f"/segment_id:{sid}/traits", {"class": "nonsense"}),
        ]:
            status, body, headers = await client.seg(path, **params)
            assert status == 400 and body["error"]["code"] == "validation_error", (path, params)
            assert headers["Request-Id"]
        url = client.url + BASE
        for auth in (
            None,
            basic("wrong", ""),
            basic("sandbox-segment-token", "x"),
        ):
            async with client.session.get(url, headers=auth) as resp:
                body = await resp.json()
                assert resp.status == 401 and body["error"]["code"] == "authentication_error"
                assert body["error"]["message"] and resp.headers["Request-Id"]
        other = url.replace("spa_sandbox", "spa_other")
        async with client.session.get(other, headers=client.segment_auth) as resp:
            assert resp.status == 404 and (await resp.json())["error"]["code"] == "not_found"
        status, body, _ = await client.seg("/segment_id:use_nope/traits")
        assert status == 404


async def test_segment_rate_limit_is_strict() -> None:
    async with sandbox(profiles=20, segment_rate=5) as client:
        replies = await asyncio.gather(*(client.seg("", limit=1) for _ in range(8)))
        limited = [r for r in replies if r[0] == 429]
        assert len(limited) == 3 and sum(r[0] == 200 for r in replies) == 5
        for _, body, headers in limited:
            assert body["error"]["code"] == "rate_limit_error" and headers["Retry-After"] == "1"
        await asyncio.sleep(1.05)
        status, _, _ = await client.seg("", limit=1)
        assert status == 200
        stats = client.server.sandbox.stats
        assert stats.segment_429 == stats.segment_rate_limited == 3
        assert stats.segment_requests == 9


# -- Voucherify -----------------------------------------------------------------------------


async def test_voucherify_auth_and_bulk_validation() -> None:
    async with sandbox(profiles=5) as client:
        async with client.session.post(client.url + "/v1/customers/bulk/async", json=[]) as resp:
            body = await resp.json()
            assert resp.status == 401 and body["code"] == 401 and body["key"] == "unauthorized"
            assert body["request_id"] and body["message"]
            jsonschema.validate(body, schema_for("Error"))
        too_many = [{"source_id": str(n)} for n in range(101)]
        for payload in (too_many, {"source_id": "x"}, []):
            status, body, _ = await client.vf("POST", "/v1/customers/bulk/async", payload)
            assert status == 400, payload
            jsonschema.validate(body, schema_for("Error"))
        async with client.session.post(
            client.url + "/v1/customers/bulk/async", data=b"[{", headers=client.vf_headers
        ) as resp:
            assert resp.status == 400
        huge = json.dumps([{"source_id": "big", "description": "x" * (10 * 1024 * 1024)}])
        async with client.session.post(
            client.url + "/v1/customers/bulk/async",
            data=io.BytesIO(huge.encode()),
            headers=client.vf_headers | {"Content-Type": "application/json"},
        ) as resp:
            assert resp.status == 413 and (await resp.json())["code"] == 413
        assert client.server.sandbox.stats.async_actions == 0


async def test_async_action_lifecycle_invalid_items_and_null_overwrite() -> None:
    async with sandbox(profiles=5, async_delay=0.3) as client:
        box = client.server.sandbox
        first = {
            "source_id": "c1",
            "name": "Zoë",
            "email": "zoe@example.com",
            "address": {"city": "Kraków", "line_1": "ul. Długa 5"},
            "metadata": {"a": 1, "b": 2},
        }
        invalid = [
            {"name": "no source id"},
            {"source_id": "c2", "birthdate": "1990-02-30"},
            {"source_id": "c3", "phone": 14155550100},
            {"source_id": "c4", "metadata": None},
            "not an object",
        ]
        action_id = await client.send([first, *invalid])
        seen = [(await client.action(action_id))["status"]]
        assert seen == ["ENQUEUED"] and box.customers == {} and box.pending_actions() == 1
        while seen[-1] != "DONE":
            await asyncio.sleep(0.03)
            seen.append((await client.action(action_id))["status"])
        assert list(dict.fromkeys(seen)) == ["ENQUEUED", "IN_PROGRESS", "DONE"]
        action = await client.action(action_id)
        jsonschema.validate(action, schema_for("AsyncActionBase"))
        jsonschema.validate(
            action["result"], schema_for("AsyncActionResultCustomersBulkUpdateResponseBody")
        )
        assert action["type"] == "CUSTOMERS.BULK_UPDATE" and action["object"] == "async_action"
        result = action["result"]
        assert result["done_count"] == 1 and result["failed_count"] == 5
        assert {e["key"] for e in result["errors"]} == {"invalid_customer"}
        assert [e["source_id"] for e in result["errors"]] == ["", "c2", "c3", "c4", ""]
        assert box.customers == {"c1": first}

        update = {"source_id": "c1", "name": None, "address": {"city": "Łódź"}, "metadata": {}}
        later = {"source_id": "c1", "description": "second wins"}
        ids = [await client.send([update]), await client.send([later])]
        assert await box.wait_idle(5)
        assert box.customers["c1"] == {
            "source_id": "c1",
            "name": None,  # null overwrites
            "email": "zoe@example.com",  # absent keys are kept
            "address": {"city": "Łódź"},  # objects replace whole
            "metadata": {},
            "description": "second wins",
        }
        status, customer, _ = await client.vf("GET", "/v1/customers/c1")
        assert status == 200 and customer["email"] == "zoe@example.com"
        assert customer["object"] == "customer"
        status, body, _ = await client.vf("GET", "/v1/customers/nobody")
        assert status == 404 and body["key"] == "not_found"
        status, body, _ = await client.vf("GET", "/v1/async-actions/aa_nope")
        assert status == 404

        status, listing, _ = await client.vf("GET", "/v1/async-actions", limit=2)
        assert status == 200
        jsonschema.validate(listing, schema_for("AsyncActionsListResponseBody"))
        assert [a["id"] for a in listing["async_actions"]] == ids[::-1]
        assert listing["has_more"] is True
        assert all("result" not in a for a in listing["async_actions"])
        end = listing["async_actions"][-1]["created_at"]
        status, older, _ = await client.vf("GET", "/v1/async-actions", end_date=end)
        assert [a["id"] for a in older["async_actions"]] == [action_id]
        assert older["has_more"] is False
        stats = box.stats
        assert stats.bulk_requests == stats.bulk_accepted == stats.async_actions == 3
        assert stats.customers_received == 8 and stats.invalid_items == 5
        assert stats.nulls_received == 2  # "name": null and "metadata": null


async def test_metadata_schema_and_allow_defined_only() -> None:
    schema = {"plan": {"type": "string", "array": False, "optional": True}}
    async with sandbox(profiles=5, metadata_schema=schema, allow_defined_only=True) as client:
        status, body, _ = await client.vf("GET", "/v1/metadata-schemas/customer")
        assert status == 200 and body["allow_defined_only"] is True
        assert body["properties"]["plan"]["type"] == "string"
        jsonschema.validate(body, schema_for("MetadataSchemasGetResponseBody"))
        action_id = await client.send(
            [
                {"source_id": "ok", "metadata": {"plan": "pro"}},
                {"source_id": "no", "metadata": {"x": 1}},
            ]
        )
        assert await client.server.sandbox.wait_idle(5)
        errors = (await client.action(action_id))["result"]["errors"]
        assert [(e["source_id"], e["key"]) for e in errors] == [
            ("no", "metadata_validation_failed")
        ]
        assert set(client.server.sandbox.customers) == {"ok"}


async def test_voucherify_rate_limit_headers_and_429() -> None:
    async with sandbox(profiles=5, voucherify_rate=3) as client:
        remaining = []
        for _ in range(3):
            status, _, headers = await client.vf("GET", "/v1/async-actions")
            assert status == 200 and headers["X-Rate-Limit-Limit"] == "3"
            remaining.append(int(headers["X-Rate-Limit-Remaining"]))
            assert int(headers["X-Rate-Limit-Retry"]) >= int(time.time())
        assert remaining == [2, 1, 0]
        status, body, headers = await client.vf("GET", "/v1/async-actions")
        assert status == 429 and body["code"] == 429 and body["key"] == "too_many_requests"
        assert 55 <= int(headers["Retry-After"]) <= 60
        assert headers["X-Rate-Limit-Type"] == "api_calls"
        assert client.server.sandbox.stats.voucherify_rate_limited == 1


# -- faults ---------------------------------------------------------------------------------


async def test_fault_5xx_on_both_apis_and_lost_bulk_answers() -> None:
    async with sandbox(profiles=5, fault_5xx=1.0) as client:
        status, body, headers = await client.seg("")
        assert status in (500, 502, 503) and body["error"]["code"] and headers["Request-Id"]
        for n in range(12):
            status, body, _ = await client.vf(
                "POST", "/v1/customers/bulk/async", [{"source_id": str(n)}]
            )
            assert status in (500, 502, 503) and body["code"] == status
        box = client.server.sandbox
        lost = box.stats.faults_injected["5xx_after_accept"]
        assert 0 < lost < 12 and box.stats.async_actions == lost  # enqueued despite the 5xx
        assert await box.wait_idle(5) and len(box.customers) == lost
        async with client.session.get(client.url + "/_sandbox/stats") as resp:
            assert resp.status == 200  # admin routes are never faulted


async def test_fault_hang_reset_and_429_burst() -> None:
    async with sandbox(profiles=5, fault_hang=1.0) as client:
        with pytest.raises(asyncio.TimeoutError):
            await client.session.get(
                client.url + BASE,
                headers=client.segment_auth,
                timeout=aiohttp.ClientTimeout(total=0.3),
            )
        assert client.server.sandbox.stats.faults_injected["hang"] == 1
    async with sandbox(profiles=5, fault_reset=1.0) as client:
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await client.seg("")
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await client.vf("GET", "/v1/async-actions")
    async with sandbox(profiles=5, fault_429_burst=1.0, segment_rate=1000) as client:
        status, body, headers = await client.seg("")
        assert status == 429 and headers["Retry-After"] == "1"
        assert body["error"]["code"] == "rate_limit_error"
        status, body, headers = await client.vf("GET", "/v1/async-actions")
        assert (
            status == 429 and headers["Retry-After"] == "1" and body["key"] == "too_many_requests"
        )
        stats = client.server.sandbox.stats
        assert stats.segment_rate_limited == 0 and stats.faults_injected["429_burst"] == 2


async def test_fault_malformed_bodies() -> None:
    async with sandbox(profiles=5, fault_malformed=1.0) as client:
        broken = 0
        for _ in range(12):
            async with client.session.get(client.url + BASE, headers=client.segment_auth) as resp:
                assert resp.status == 200
                raw = await resp.read()
            try:
                body = json.loads(raw)
            except ValueError:
                broken += 1
                continue
            assert "data" not in body and "cursor" not in body
            broken += 1
        assert broken == 12
        # Errors are not 2xx: never malformed.
        async with client.session.get(client.url + BASE) as resp:
            assert resp.status == 401 and "error" in await resp.json()


async def test_fault_action_failed_and_customer_errors() -> None:
    async with sandbox(profiles=5, fault_action_failed=1.0) as client:
        action_id = await client.send([{"source_id": "a"}])
        assert await client.server.sandbox.wait_idle(5)
        action = await client.action(action_id)
        assert action["status"] == "FAILED" and action["result"]["message"]
        assert client.server.sandbox.customers == {}

    batch = [{"source_id": f"s{n}"} for n in range(60)]
    for sticky in (True, False):
        async with sandbox(
            profiles=5, fault_customer_error=0.5, fault_customer_error_sticky=sticky
        ) as client:
            box = client.server.sandbox
            failed_rounds = []
            pending = batch
            for _ in range(6):
                action_id = await client.send(pending)
                assert await box.wait_idle(5)
                errors = (await client.action(action_id))["result"]["errors"]
                failed = {e["source_id"] for e in errors}
                assert not failed & set(box.customers)
                failed_rounds.append(failed)
                pending = [c for c in batch if c["source_id"] in failed] or pending
            assert 10 < len(failed_rounds[0]) < 50
            if sticky:
                assert all(r == failed_rounds[0] for r in failed_rounds)
            else:
                assert len(box.customers) > len(batch) - len(failed_rounds[0])


# -- oracle verdicts, overlay, lifecycle -----------------------------------------------------


def test_verify_detects_missing_wrong_and_unexpected() -> None:
    box = Sandbox(SandboxSettings(profiles=60))
    expected = {}
    for sid in box.segment_ids():
        customer = expected_customer(sid, *box.profile(sid))
        if customer is not None:
            expected[sid] = customer
            box.customers[customer["source_id"]] = dict(customer)
    result = verify(box)
    assert result.ok and result.correct == result.expected == len(expected)
    assert result.no_identifier == set(box.segment_ids()) - set(expected)

    sids = list(expected)
    gone = expected[sids[0]]["source_id"]
    del box.customers[gone]
    changed = expected[sids[1]]["source_id"]
    box.customers[changed]["name"] = "Someone Else"
    box.customers[changed]["birthdate"] = "2001-01-01"
    box.customers["stray"] = {"source_id": "stray"}
    result = verify(box)
    assert not result.ok
    assert result.missing == [gone]
    assert sorted(result.wrong) == sorted([(changed, "name"), (changed, "birthdate")])
    assert result.unexpected == ["stray"]
    assert result.arrived == result.expected - 1 and result.correct == result.expected - 2

    # A trait changed in Segment: the stored customer is now stale.
    box2 = Sandbox(SandboxSettings(profiles=60))
    for sid in box2.segment_ids():
        customer = expected_customer(sid, *box2.profile(sid))
        if customer is not None:
            box2.customers[customer["source_id"]] = customer
    target = sids[2]
    box2.set_trait(target, "email", "new@example.com")
    box2.delete_trait(target, "metadata")
    traits, _ = box2.profile(target)
    assert traits["email"] == "new@example.com" and "metadata" not in traits
    wrong_fields = {field for _, field in verify(box2).wrong}
    assert "email" in wrong_fields


async def test_round_trip_through_both_apis_verifies() -> None:
    async with sandbox(profiles=150, record_bodies=True, latency_max_ms=2) as client:
        box = client.server.sandbox
        ids = [item["segment_id"] for item in await client.all_pages("", "data", limit=100)]
        customers = []
        for sid in ids:
            traits = dict(await client.all_pages(f"/segment_id:{sid}/traits", "traits", limit=200))
            external = await client.all_pages(f"/segment_id:{sid}/external_ids", "data", limit=100)
            customer = expected_customer(sid, traits, external)
            if customer is not None:
                customers.append(customer)
        for start in range(0, len(customers), 100):
            await client.send(customers[start : start + 100])
        assert await box.wait_idle(5)
        result = verify(box)
        assert result.ok, result.summary()
        for body in box.bodies:
            jsonschema.validate(body, SCHEMA)
        async with client.session.get(client.url + "/_sandbox/verify") as resp:
            assert (await resp.json())["ok"] is True
        async with client.session.get(client.url + "/_sandbox/stats") as resp:
            stats = await resp.json()
        assert stats["customers_written"] == len(customers) and stats["segment_requests"] > 300
        async with client.session.post(client.url + "/_sandbox/reset-stats") as resp:
            assert resp.status == 200
        assert box.stats.segment_requests == 0


def test_threaded_sandbox_env_and_options() -> None:
    settings = SandboxSettings(profiles=10, voucherify_rate=120)
    with ThreadedSandbox(settings) as threaded:
        env = threaded.env()
        assert env == sandbox_env(threaded.url, settings)
        assert env["SEGMENT_API_URL"] == env["VOUCHERIFY_API_URL"] == threaded.url
        assert env["SEGMENT_RATE_LIMIT"] == "100" and env["VOUCHERIFY_RATE_LIMIT"] == "120"
        sid = threaded.sandbox.segment_ids()[0]
        threaded.call(threaded.sandbox.set_trait, sid, "plan", "vip")
        request = urllib.request.Request(
            f"{threaded.url}{BASE}/segment_id:{sid}/traits?include=plan",
            headers={"Authorization": "Basic c2FuZGJveC1zZWdtZW50LXRva2VuOg=="},
        )
        with urllib.request.urlopen(request) as resp:
            assert json.loads(resp.read())["traits"] == {"plan": "vip"}
    assert "VOUCHERIFY_RATE_LIMIT" not in sandbox_env("http://x", SandboxSettings())

    options = parse_args(
        ["--profiles", "50", "--port", "0", "--latency-ms", "5,20", "--fault-5xx", "0.1",
         "--allow-defined-only", "--metadata-schema", '{"plan": {"type": "string"}}']
    )  # fmt: skip
    assert options.port == 0 and options.settings.profiles == 50
    assert (options.settings.latency_min_ms, options.settings.latency_max_ms) == (5, 20)
    assert options.settings.fault_5xx == 0.1 and options.settings.allow_defined_only
    assert options.settings.metadata_schema == {"plan": {"type": "string"}}
    with pytest.raises(ValueError):
        SandboxSettings(fault_5xx=0.7, fault_reset=0.5)


def test_stats_counters_are_plain_json() -> None:
    box = Sandbox(SandboxSettings(profiles=1))
    box.stats.faults_injected["5xx"] += 2
    data = json.loads(json.dumps(box.stats_json()))
    assert data["faults_injected"] == {"5xx": 2} and data["pending_actions"] == 0
    assert isinstance(box.stats.segment_endpoints, Counter)


# -- issue 11: shared identifiers, changes between runs, clearing, confirmation -------------


def _chosen_entry(profile: Any) -> dict[str, Any]:
    chosen = source_id_of(profile.external_ids, "user_id")
    return next(e for e in profile.external_ids if e["type"] == "user_id" and e["id"] == chosen)


def test_generator_shared_identifiers_share_and_determinism() -> None:
    settings = SandboxSettings(profiles=2000, seed=5, shared_identifier=0.1)
    one, two = ProfileGenerator(settings), ProfileGenerator(settings)
    assert all(one.build(i) == two.build(i) for i in range(2000))
    plain = ProfileGenerator(SandboxSettings(profiles=2000, seed=5))
    copies = [i for i in range(2000) if one.original_of(i) is not None]
    assert 0.07 < len(copies) / 2000 < 0.13
    assert copies == [i for i in range(2000) if two.original_of(i) is not None]
    other_seed = ProfileGenerator(SandboxSettings(profiles=2000, seed=6, shared_identifier=0.1))
    assert copies != [i for i in range(2000) if other_seed.original_of(i) is not None]

    order = Counter()
    for i in range(2000):
        shared, own = one.build(i), plain.build(i)
        assert shared.traits == own.traits and shared.segment_id == own.segment_id
        original = one.original_of(i)
        if original is None:
            assert shared == own  # originals and unshared profiles are untouched
            continue
        assert original not in copies and one.build(original).truth.user_id is not None
        assert i in one.copies_of()[original] and one.shares_identifier(original)
        entries = [e for e in shared.external_ids if e["type"] == "user_id"]
        anchor = _chosen_entry(one.build(original))
        assert [e["id"] for e in entries] == [anchor["id"]] == [shared.truth.user_id]
        mine, theirs = entries[0]["created_at"], anchor["created_at"]
        at_mine = chosen_identity(entries, "user_id")
        at_theirs = chosen_identity([anchor], "user_id")
        assert at_mine is not None and at_theirs is not None
        as_instants = (at_mine > at_theirs) - (at_mine < at_theirs)
        order[as_instants] += 1
        if as_instants == 0 and mine != theirs:
            order["same instant, other text"] += 1
        if as_instants != 0 and (mine > theirs) != (as_instants > 0):
            order["string order misleads"] += 1
        position = shared.external_ids.index(entries[0])
        assert not shared.long_tail or position >= 100
    assert order[-1] > 20 and order[1] > 20 and order[0] > 10, order
    assert order["same instant, other text"] and order["string order misleads"], order
    # Each copy is one duplicate: the share is the share of non-owners.
    owners, duplicates = resolve_owners((p.segment_id, p.external_ids) for p in one)
    assert len(duplicates) == len(copies)
    assert len(owners) == sum(p.truth.user_id is not None for p in one) - len(copies)


def test_oracle_ownership_rule() -> None:
    def ext(value: str, created: Any) -> dict[str, Any]:
        return {"type": "user_id", "id": value, "created_at": created}

    profiles = [
        ("use_b", [ext("u1", "2020-01-01T00:00:00.500Z")]),
        ("use_a", [ext("u1", "2020-01-01T00:00:01Z")]),
        ("use_c", [ext("u1", "2020-01-01T01:00:00+01:00")]),  # 00:00:00Z: the earliest
        ("use_z", [ext("u2", "2021-05-05T10:00:00Z")]),  # a tie: smallest segment_id
        ("use_y", [ext("u2", "2021-05-05T10:00:00.000Z")]),
        ("use_x", [ext("u2", "2021-05-05T10:00:01Z")]),
        ("use_e", [ext("u3", "garbage")]),  # unparseable sorts last
        ("use_f", [ext("u3", None)]),
        ("use_g", [ext("u3", "2030-01-01T00:00:00Z")]),
        ("use_h", [ext("u3", "")]),
        # use_i's chosen id is u9 (its earliest): it is not in u1's group at all.
        ("use_i", [ext("u1", "2019-01-01T00:00:00Z"), ext("u9", "2018-01-01T00:00:00Z")]),
        ("use_j", [{"type": "anonymous_id", "id": "u1", "created_at": "2000-01-01T00:00:00Z"}]),
    ]
    owners, duplicates = resolve_owners(profiles)
    assert owners == {"u1": "use_c", "u2": "use_y", "u3": "use_g", "u9": "use_i"}
    assert duplicates == [
        ("u1", "use_a", "use_c"),
        ("u1", "use_b", "use_c"),
        ("u2", "use_x", "use_y"),
        ("u2", "use_z", "use_y"),
        ("u3", "use_e", "use_g"),
        ("u3", "use_f", "use_g"),
        ("u3", "use_h", "use_g"),
    ]
    only_unparseable = [("use_q", [ext("u4", "x")]), ("use_p", [ext("u4", "y")])]
    assert resolve_owners(only_unparseable) == ({"u4": "use_p"}, [("u4", "use_q", "use_p")])
    assert resolve_owners(profiles, "anonymous_id") == ({"u1": "use_j"}, [])


def test_verify_expects_owners_and_lists_duplicates() -> None:
    box = Sandbox(SandboxSettings(profiles=400, shared_identifier=0.15))
    pairs = [(sid, box.profile(sid)[1]) for sid in box.segment_ids()]
    owners, duplicates = resolve_owners(pairs)
    assert duplicates and len(owners) < 400
    for source_id, owner in owners.items():
        customer = expected_customer(owner, *box.profile(owner))
        assert customer is not None and customer["source_id"] == source_id
        box.customers[source_id] = customer
    result = verify(box)
    assert result.ok, result.summary()
    assert result.expected == len(owners) and result.duplicates == duplicates
    assert f"duplicates={len(duplicates)}" in result.summary()
    # The last writer being a non-owner is wrong, whatever the order of the profiles.
    source_id, loser, _ = duplicates[0]
    box.customers[source_id] = expected_customer(loser, *box.profile(loser))
    result = verify(box)
    assert not result.ok and {sid for sid, _ in result.wrong} == {source_id}
    assert result.duplicates == duplicates


async def test_verify_json_lists_every_duplicate() -> None:
    async with sandbox(profiles=300, shared_identifier=0.2) as client:
        box = client.server.sandbox
        async with client.session.get(client.url + "/_sandbox/verify") as resp:
            body = await resp.json()
        expected = verify(box).duplicates
        assert len(expected) > 30
        assert body["duplicates_count"] == len(body["duplicates"]) == len(expected)
        assert [tuple(row) for row in body["duplicates"]] == expected
        assert (
            body["missing_count"]
            == body["expected"]
            == 300 - len(expected) - len(verify(box).no_identifier)
        )


async def test_mutation_over_http_is_served_and_expected() -> None:
    async with sandbox(profiles=200) as client:
        box = client.server.sandbox
        for sid in box.segment_ids():
            customer = expected_customer(sid, *box.profile(sid))
            if customer is not None:
                box.customers[customer["source_id"]] = customer
        assert verify(box).ok
        before = {sid: box.profile(sid)[0] for sid in box.segment_ids()}
        url = client.url + "/_sandbox/mutate"
        async with client.session.post(url, json={"remove": ["phone"], "count": 4}) as resp:
            assert resp.status == 200
            changed = (await resp.json())["changed"]
        assert len(changed) == 4 and box.changed_profiles() == changed
        for sid in changed:
            assert string_value(before[sid].get("phone")) is not None
            traits = dict(await client.all_pages(f"/segment_id:{sid}/traits", "traits"))
            assert "phone" not in traits
            assert {k: v for k, v in before[sid].items() if k != "phone"} == traits
            status, meta, _ = await client.seg(f"/segment_id:{sid}/metadata")
            assert status == 200 and meta["metadata"]["updated_at"] == box.changed_at(sid)
            assert box.changed_at(sid) > box.view(sid)[0].metadata["updated_at"]
        result = verify(box)
        assert sorted(result.wrong) == sorted(
            (expected_customer(sid, *box.profile(sid))["source_id"], "phone") for sid in changed
        )
        # Clearing with null is what the migrator sends: it verifies.
        clears = [
            {"source_id": expected_customer(sid, *box.profile(sid))["source_id"], "phone": None}
            for sid in changed
        ]
        await client.send(clears)
        assert await box.wait_idle(5)
        assert verify(box).ok
        async with client.session.get(client.url + "/_sandbox/changed") as resp:
            assert (await resp.json()) == {"changed": changed, "changed_count": 4}

        # Explicit profiles, nested paths, set; a second pick avoids changed profiles.
        sid = changed[0]
        body = {
            "segment_ids": [sid],
            "remove": ["metadata.loyalty_tier", ["address", "city"], "missing.key"],
            "set": {"metadata.tier": "gold", "email": "new@example.com"},
        }
        async with client.session.post(url, json=body) as resp:
            assert resp.status == 200 and (await resp.json())["changed"] == [sid]
        traits = box.profile(sid)[0]
        assert traits["email"] == "new@example.com" and traits["metadata"]["tier"] == "gold"
        assert "loyalty_tier" not in traits["metadata"]
        assert "city" not in (traits.get("address") or {})
        status, verbose, _ = await client.seg(
            f"/segment_id:{sid}/traits", verbose="true", limit=200
        )
        stamps = {k: v["updated_at"] for k, v in verbose["traits"].items()}
        generated_at = box.view(sid)[0].metadata["updated_at"]
        assert stamps["email"] == stamps["metadata"] == box.changed_at(sid) != generated_at
        assert {stamps[k] for k in stamps if k not in box.overlay_keys(sid)} == {generated_at}
        async with client.session.post(url, json={"remove": ["email"], "count": 50}) as resp:
            again = (await resp.json())["changed"]
        assert len(again) == 50 and not set(again) & set(changed)
        for bad, status in [
            ({"remove": ["phone"]}, 400),
            ({"remove": "phone", "count": 1}, 400),
            ({"count": -1}, 400),
            ({"count": 1, "colour": "red"}, 400),
            ({"count": 1, "metadata_mode": "some"}, 400),
            ({"segment_ids": ["use_nobody"], "remove": ["phone"]}, 404),
            ([1, 2], 400),
        ]:
            async with client.session.post(url, json=bad) as resp:
                assert resp.status == status, bad
                assert "error" in await resp.json()


def test_mutation_python_api_is_deterministic_and_small() -> None:
    knobs = {"profiles": 300, "shared_identifier": 0.1}
    one, two = Sandbox(SandboxSettings(**knobs)), Sandbox(SandboxSettings(**knobs))
    picked = one.mutate(remove=["address.city", "city"], count=6, seed=3)
    assert picked == two.mutate(remove=["address.city", "city"], count=6, seed=3)
    assert picked != Sandbox(SandboxSettings(**knobs)).mutate(
        remove=["address.city", "city"], count=6, seed=4
    )
    for sid in picked:
        index = one.generator.index_of(sid)
        assert index is not None and not one.generator.shares_identifier(index)
        customer = expected_customer(sid, *one.profile(sid))
        assert customer is not None and "city" not in customer.get("address", {})
        assert one.overlay_keys(sid) <= {"address", "city"}
    assert one.changed_profiles() == picked
    untouched = next(s for s in one.segment_ids() if s not in picked)
    assert one.overlay_keys(untouched) == frozenset() and one.changed_at(untouched) is None
    # In "all" mode a custom trait counts; in "metadata" mode it does not.
    assert one.mutate(remove=["plan"], count=3, metadata_mode="all")
    assert one.mutate(remove=["plan"], count=3) == []
    with pytest.raises(ValueError):
        one.mutate(remove=["phone"])
    with pytest.raises(ValueError):
        one.mutate(remove=[""], count=1)
    with pytest.raises(KeyError):
        one.mutate(remove=["phone"], segment_ids=["use_nobody"])
    assert one.mutate(remove=["no_such_trait"], segment_ids=[one.segment_ids()[0]]) == []
    settings = SandboxSettings(profiles=50)
    with ThreadedSandbox(settings) as threaded:
        changed = threaded.mutate(set={"phone": "+48 600 000 000"}, count=2)
        assert len(changed) == 2
        assert all(threaded.sandbox.profile(s)[0]["phone"] == "+48 600 000 000" for s in changed)
        assert threaded.sandbox.stats_json()["profiles_changed"] == 2


async def test_merge_objects_and_nulls_count_as_cleared() -> None:
    first = {
        "source_id": "c1",
        "name": "Zoë",
        "phone": "+48 600 000 000",
        "address": {"city": "Kraków", "line_2": "Apt 4B"},
        "metadata": {"tier": "silver", "old_key": 1},
    }
    clear = {
        "source_id": "c1",
        "phone": None,
        "address": {"city": "X", "line_2": None},
        "metadata": {"tier": "gold", "old_key": None},
    }
    expected = {
        "source_id": "c1",
        "name": "Zoë",
        "address": {"city": "X"},
        "metadata": {"tier": "gold"},
    }
    for merge in (False, True):
        async with sandbox(profiles=5, merge_objects=merge) as client:
            box = client.server.sandbox
            ids = [await client.send([first]), await client.send([clear])]
            assert await box.wait_idle(5)
            for action_id in ids:
                assert (await client.action(action_id))["result"]["failed_count"] == 0
            customer = box.customers["c1"]
            assert customer["phone"] is None  # stored as null, read as cleared
            assert customer["address"] == {"city": "X", "line_2": None}
            assert customer["metadata"] == {"tier": "gold", "old_key": None}
            assert differences(customer, expected) == []
            assert differences(customer, expected | {"phone": "+48"}) == ["phone"]
            # Where the two modes differ: an object that leaves keys out.
            await client.send([{"source_id": "c1", "address": {"state": "NY"}}])
            assert await box.wait_idle(5)
            merged = {"city": "X", "line_2": None, "state": "NY"}
            address = merged if merge else {"state": "NY"}
            assert box.customers["c1"]["address"] == address
            readable = {k: v for k, v in address.items() if v is not None}
            assert differences(box.customers["c1"], expected | {"address": readable}) == []

    # A stored null anywhere the migrator may clear counts as absent, in both modes.
    assert stored_view({"source_id": "a", "phone": None, "metadata": {"k": None}}) == {
        "source_id": "a"
    }
    assert stored_view({"source_id": "a", "address": {}}) == {"source_id": "a", "address": {}}
    nested = {"source_id": "a", "metadata": {"k": {"deep": None}}}
    assert differences(nested, {"source_id": "a", "metadata": {"k": {}}}) == ["metadata"]


async def test_null_metadata_keys_are_accepted_and_metadata_null_is_not() -> None:
    async with sandbox(profiles=5) as client:
        box = client.server.sandbox
        action_id = await client.send(
            [
                {"source_id": "ok", "metadata": {"gone": None}, "address": {"city": None}},
                {"source_id": "ok2", "address": None, "birthdate": None, "email": None},
                {"source_id": "bad", "metadata": None},
            ]
        )
        assert await box.wait_idle(5)
        errors = (await client.action(action_id))["result"]["errors"]
        assert [(e["source_id"], e["key"]) for e in errors] == [("bad", "invalid_customer")]
        assert set(box.customers) == {"ok", "ok2"}


async def test_bulk_item_stats_and_actions_readable_after_done() -> None:
    async with sandbox(profiles=5, async_delay=0.05) as client:
        box = client.server.sandbox
        first = await client.send([{"source_id": "a"}, {"source_id": "b"}, {"source_id": "a"}])
        second = await client.send([{"source_id": "a"}, {"name": "no source id"}])
        status, _, _ = await client.vf("POST", "/v1/customers/bulk/async", [])
        assert status == 400  # rejected requests count no items
        assert await box.wait_idle(5)
        async with client.session.get(client.url + "/_sandbox/stats") as resp:
            stats = await resp.json()
        assert stats["bulk_items"] == 5 and stats["max_items_per_source_id"] == 3
        assert "items_per_source_id" not in stats
        assert box.stats.items_per_source_id == {"a": 3, "b": 1}
        async with client.session.post(client.url + "/_sandbox/reset-stats") as resp:
            assert resp.status == 200
        assert box.stats_json()["bulk_items"] == box.stats_json()["max_items_per_source_id"] == 0
        await asyncio.sleep(0.2)
        for action_id in (first, second):  # long after DONE, and after reset-stats
            assert (await client.action(action_id))["status"] == "DONE"
    async with sandbox(profiles=5, async_delay=0.02, fault_action_failed=1.0) as client:
        action_id = await client.send([{"source_id": "x"}])
        assert await client.server.sandbox.wait_idle(5)
        await asyncio.sleep(0.2)
        assert (await client.action(action_id))["status"] == "FAILED"


def test_cli_knobs_for_issue_11() -> None:
    options = parse_args(["--shared-identifier", "0.25", "--merge-objects"])
    assert options.settings.shared_identifier == 0.25 and options.settings.merge_objects
    defaults = parse_args([]).settings
    assert defaults.shared_identifier == 0.0 and defaults.merge_objects is False
    text = build_parser().format_help()
    assert "duplicate-identifiers.csv" in text and "key by key" in text
    with pytest.raises(ValueError):
        SandboxSettings(shared_identifier=1.5)
