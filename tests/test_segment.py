"""Tests of migrator.segment: cursor pagination of profiles, traits and external ids."""

from __future__ import annotations

import base64
import logging
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aioresponses import aioresponses
from yarl import URL

from migrator.config import Settings
from migrator.exceptions import (
    AccountError,
    ApiError,
    InvalidPosition,
    RequestRejected,
    RetryableError,
)
from migrator.segment import EXTERNAL_IDS_PAGE, ProfilePage, SegmentClient
from migrator.sources.profile_api import ProfileApiSource

TOKEN = "seg-SECRET-token-5e6f7a"
VOUCHERIFY_KEY = "vf-SECRET-key-0c1d2e"
BASE = "https://profiles.test"
PROFILES = f"{BASE}/v1/spaces/spa_1/collections/users/profiles"

SETTINGS = Settings(
    segment_access_token=TOKEN,
    segment_space_id="spa_1",
    voucherify_application_id="app-1",
    voucherify_secret_key=VOUCHERIFY_KEY,
    segment_api_url=BASE,
    segment_request_limit=3,
    segment_traits_limit=7,
    segment_rate_limit=100_000.0,
    max_attempts=3,
)

pytestmark = pytest.mark.usefixtures("no_wait")


def url(path: str = "", **params: str | int) -> str:
    return str(URL(PROFILES + path).with_query(params))


def cursor(nxt: str | None) -> dict[str, Any]:
    return {"url": "/whatever", "has_more": nxt is not None, "next": nxt, "limit": 3}


def page(key: str, items: Any, nxt: str | None = None) -> dict[str, Any]:
    return {key: items, "cursor": cursor(nxt)}


def calls(mock: aioresponses) -> list[URL]:
    return [key[1] for key, requests in mock.requests.items() for _ in requests]


# -- traits ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("include", "query"),
    [(None, {}), (["email", "name", "plan"], {"include": "email,name,plan"})],
    ids=["all-traits", "include"],
)
async def test_traits_follow_the_cursor_and_merge_pages_in_order(
    mock: aioresponses, include: list[str] | None, query: dict[str, str]
) -> None:
    path = "/segment_id:use_1/traits"
    mock.get(url(path, limit=7, **query), payload=page("traits", {"email": "a@b.c", "x": 1}, "c2"))
    mock.get(url(path, limit=7, next="c2", **query), payload=page("traits", {"name": "A"}, "c3"))
    mock.get(url(path, limit=7, next="c3", **query), payload=page("traits", {"plan": "pro"}))
    async with SegmentClient(SETTINGS) as client:
        traits = await client.traits("use_1", include)
    assert list(traits.items()) == [("email", "a@b.c"), ("x", 1), ("name", "A"), ("plan", "pro")]
    assert [c.query.get("next") for c in calls(mock)] == [None, "c2", "c3"]
    assert client.requests == 3 and client.retries == 0


@pytest.mark.parametrize("limit", [1, 200])
async def test_traits_page_size_is_segment_traits_limit(mock: aioresponses, limit: int) -> None:
    path = "/segment_id:use_1/traits"
    mock.get(url(path, limit=limit), payload=page("traits", {"a": 1}))
    async with SegmentClient(replace(SETTINGS, segment_traits_limit=limit)) as client:
        assert await client.traits("use_1") == {"a": 1}


@pytest.mark.parametrize(
    "last_cursor",
    [
        {"has_more": False, "next": "must-not-be-followed"},
        {"has_more": True, "next": None},
        {"has_more": True, "next": ""},
        None,
        {},
    ],
    ids=["has-more-false", "next-null", "next-empty", "cursor-null", "cursor-empty"],
)
async def test_pagination_stops_at_the_last_page(
    mock: aioresponses, last_cursor: dict[str, Any] | None
) -> None:
    path = "/segment_id:use_1/traits"
    mock.get(url(path, limit=7), payload=page("traits", {"a": 1}, "c2"))
    mock.get(url(path, limit=7, next="c2"), payload={"traits": {"b": 2}, "cursor": last_cursor})
    async with SegmentClient(SETTINGS) as client:
        assert await client.traits("use_1") == {"a": 1, "b": 2}
    assert len(calls(mock)) == 2


async def test_later_page_overrides_a_repeated_trait(mock: aioresponses) -> None:
    path = "/segment_id:use_1/traits"
    mock.get(url(path, limit=7), payload=page("traits", {"a": 1, "b": 1}, "c2"))
    mock.get(url(path, limit=7, next="c2"), payload=page("traits", {"a": 2}))
    async with SegmentClient(SETTINGS) as client:
        assert await client.traits("use_1") == {"a": 2, "b": 1}


# -- external ids ------------------------------------------------------------------------


def external_id(kind: str, value: str) -> dict[str, Any]:
    return {
        "type": kind,
        "id": value,
        "source_id": "src",
        "collection": "users",
        "created_at": "2024-01-01T00:00:00Z",
        "encoding": "none",
    }


@pytest.mark.parametrize(
    ("types", "query"),
    [(None, {}), (("user_id", "email"), {"include": "user_id,email"})],
    ids=["all-types", "include"],
)
async def test_external_ids_follow_the_cursor(
    mock: aioresponses, types: tuple[str, ...] | None, query: dict[str, str]
) -> None:
    path = "/segment_id:use_1/external_ids"
    first = [external_id("anonymous_id", f"anon-{i}") for i in range(3)]
    second = [external_id("anonymous_id", "anon-3"), external_id("user_id", "42"), "junk"]
    limit = EXTERNAL_IDS_PAGE
    mock.get(url(path, limit=limit, **query), payload=page("data", first, "p2"))
    mock.get(url(path, limit=limit, next="p2", **query), payload=page("data", second))
    async with SegmentClient(SETTINGS) as client:
        ids = await client.external_ids("use_1", types)
    assert [(i["type"], i["id"]) for i in ids] == [
        ("anonymous_id", "anon-0"),
        ("anonymous_id", "anon-1"),
        ("anonymous_id", "anon-2"),
        ("anonymous_id", "anon-3"),
        ("user_id", "42"),
    ]


# -- profile pages -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        (
            None,
            [
                ProfilePage(None, ("use_1", "use_2", "use_3"), "c2"),
                ProfilePage("c2", ("use_4", "use_5", "use_6"), "c3"),
                ProfilePage("c3", ("use_7",), None),
            ],
        ),
        (
            "c2",
            [
                ProfilePage("c2", ("use_4", "use_5", "use_6"), "c3"),
                ProfilePage("c3", ("use_7",), None),
            ],
        ),
        ("c3", [ProfilePage("c3", ("use_7",), None)]),
    ],
    ids=["from-the-start", "resume-at-c2", "resume-at-last-page"],
)
async def test_profile_pages(
    mock: aioresponses, start: str | None, expected: list[ProfilePage]
) -> None:
    def items(*ids: str) -> list[dict[str, Any]]:
        return [{"segment_id": i, "metadata": {}} for i in ids]

    mock.get(url(limit=3), payload=page("data", items("use_1", "use_2", "use_3"), "c2"))
    mock.get(url(limit=3, next="c2"), payload=page("data", items("use_4", "use_5", "use_6"), "c3"))
    mock.get(url(limit=3, next="c3"), payload=page("data", items("use_7")))
    async with SegmentClient(SETTINGS) as client:
        pages = [p async for p in client.profile_pages(start)]
    assert pages == expected
    assert len(calls(mock)) == len(expected)


async def test_a_cursor_segment_refuses_is_an_invalid_position(mock: aioresponses) -> None:
    """Issue 14.1: a 400 on the list call means the cursor is refused, not that the run
    should stop resumably at that same cursor (which looped every cron run)."""
    body = {"error": {"code": "validation_error", "message": "invalid cursor"}}
    mock.get(url(limit=3, next="garbage"), status=400, payload=body)
    source = ProfileApiSource(SETTINGS, traits=None)
    async with source:
        with pytest.raises(InvalidPosition) as info:
            [p async for p in source.pages("garbage")]
    assert info.value.position == "garbage"
    assert "Segment refused the cursor" in info.value.reason
    assert "invalid cursor (HTTP 400" in info.value.reason


@pytest.mark.parametrize("position", ["two words", "", "tab\there", "new\nline"])
async def test_what_cannot_be_a_cursor_is_refused_without_a_request(
    mock: aioresponses, position: str
) -> None:
    async with ProfileApiSource(SETTINGS, traits=None) as source:
        with pytest.raises(InvalidPosition):
            [p async for p in source.pages(position)]
    assert calls(mock) == []


async def test_a_400_without_a_cursor_is_not_about_a_position(mock: aioresponses) -> None:
    mock.get(url(limit=3), status=400, payload={"error": {"message": "bad"}})
    async with ProfileApiSource(SETTINGS, traits=None) as source:
        with pytest.raises(RequestRejected):
            [p async for p in source.pages(None)]


async def test_profile_page_skips_items_without_a_segment_id(mock: aioresponses) -> None:
    data = [{"segment_id": "use_1"}, {"segment_id": 7}, {"other": "x"}, "junk", {"segment_id": "b"}]
    mock.get(url(limit=3), payload=page("data", data))
    async with SegmentClient(SETTINGS) as client:
        pages = [p async for p in client.profile_pages()]
    assert pages == [ProfilePage(None, ("use_1", "b"), None)]


# -- malformed bodies and errors ---------------------------------------------------------

MALFORMED: dict[str, dict[str, Any]] = {
    "not-json": {"body": "{{{"},
    "traits-missing": {"payload": {"cursor": cursor(None)}},
    "traits-a-list": {"payload": {"traits": [], "cursor": cursor(None)}},
    "body-a-list": {"payload": [{"traits": {}}]},
    "cursor-a-string": {"payload": {"traits": {"a": 0}, "cursor": "c2"}},
    "cursor-a-list": {"payload": {"traits": {"a": 0}, "cursor": ["c2"]}},
}


@pytest.mark.parametrize("bad", list(MALFORMED.values()), ids=list(MALFORMED))
async def test_malformed_page_is_retried(mock: aioresponses, bad: dict[str, Any]) -> None:
    path = "/segment_id:use_1/traits"
    mock.get(url(path, limit=7), **bad)
    mock.get(url(path, limit=7), payload=page("traits", {"a": 1}))
    async with SegmentClient(SETTINGS) as client:
        assert await client.traits("use_1") == {"a": 1}
    assert client.retries == 1


@pytest.mark.parametrize("bad", list(MALFORMED.values()), ids=list(MALFORMED))
async def test_malformed_page_ends_as_retryable_error(
    mock: aioresponses, bad: dict[str, Any]
) -> None:
    mock.get(url("/segment_id:use_1/traits", limit=7), repeat=True, **bad)
    async with SegmentClient(SETTINGS) as client:
        with pytest.raises(RetryableError, match="malformed response"):
            await client.traits("use_1")
    assert len(calls(mock)) == SETTINGS.max_attempts


@pytest.mark.parametrize(
    ("status", "code", "error", "attempts"),
    [
        (400, "validation_error", RequestRejected, 1),
        (404, "not_found", RequestRejected, 1),
        (401, "authentication_error", AccountError, 1),
        (403, "forbidden", AccountError, 1),
        (429, "rate_limit_error", RetryableError, 3),
        (500, "internal", RetryableError, 3),
    ],
    ids=["400", "404", "401", "403", "429", "500"],
)
async def test_segment_error_body_and_request_id(
    mock: aioresponses, status: int, code: str, error: type[ApiError], attempts: int
) -> None:
    mock.get(
        url("/segment_id:use_1/external_ids", limit=EXTERNAL_IDS_PAGE),
        repeat=True,
        status=status,
        headers={"Request-Id": "seg-req-42"},
        payload={"error": {"code": code, "message": f"message for {status}"}},
    )
    async with SegmentClient(SETTINGS) as client:
        with pytest.raises(error) as info:
            await client.external_ids("use_1")
    assert info.value.api == "segment"
    assert info.value.request_id == "seg-req-42"
    assert "request id seg-req-42" in str(info.value)
    assert info.value.code == code
    assert len(calls(mock)) == attempts


async def test_secrets_never_in_errors_or_logs(
    mock: aioresponses, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    traits = url("/segment_id:use_1/traits", limit=7)
    mock.get(traits, status=503, headers={"Request-Id": "r1"})
    mock.get(traits, exception=aiohttp.ClientConnectionError(f"{BASE} refused"))
    mock.get(traits, status=401, payload={"error": {"code": "authentication_error"}})
    async with SegmentClient(SETTINGS) as client:
        with pytest.raises(AccountError) as info:
            await client.traits("use_1")
    texts = [str(info.value), repr(info.value), *(r.getMessage() for r in caplog.records)]
    assert len(caplog.records) >= 3
    for text in texts:
        assert TOKEN not in text and VOUCHERIFY_KEY not in text


# -- against a real local server ---------------------------------------------------------


async def test_basic_auth_and_percent_encoded_ids_on_the_wire() -> None:
    seen: list[web.Request] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request)
        return web.json_response({"traits": {"phone": "+1"}, "cursor": cursor(None)})

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    async with TestServer(app) as server:
        base = str(server.make_url("")).rstrip("/")
        settings = replace(SETTINGS, segment_api_url=base, segment_space_id="spa/1 x")
        async with SegmentClient(settings) as client:
            assert await client.traits("a+b c") == {"phone": "+1"}
    (request,) = seen
    assert request.raw_path == (
        "/v1/spaces/spa%2F1%20x/collections/users/profiles/segment_id:a%2Bb%20c/traits?limit=7"
    )
    scheme, _, encoded = request.headers["Authorization"].partition(" ")
    assert scheme == "Basic"
    assert base64.b64decode(encoded).decode() == f"{TOKEN}:"
    assert "X-App-Token" not in request.headers and "X-App-Id" not in request.headers
