"""Tests of migrator.voucherify: bulk upserts, async actions and Voucherify's errors."""

from __future__ import annotations

import json
import logging
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aioresponses import aioresponses
from yarl import URL

from migrator.config import Settings
from migrator.exceptions import AccountError, ApiError, RequestRejected, RetryableError
from migrator.voucherify import VoucherifyClient

APP_ID = "app-id-1234"
SECRET_KEY = "vf-SECRET-key-9a8b7c"
SEGMENT_TOKEN = "seg-SECRET-token-1f2e3d"
BASE = "https://vouch.test"
BULK = f"{BASE}/v1/customers/bulk/async"
ACTIONS = f"{BASE}/v1/async-actions"

SETTINGS = Settings(
    segment_access_token=SEGMENT_TOKEN,
    segment_space_id="spa_1",
    voucherify_application_id=APP_ID,
    voucherify_secret_key=SECRET_KEY,
    voucherify_api_url=BASE,
    voucherify_rate_limit=1_000_000.0,
    max_attempts=3,
)

CUSTOMERS = json.dumps(
    [{"source_id": "42", "name": "Zoë", "metadata": {"plan": "pro"}}], ensure_ascii=False
).encode()

pytestmark = pytest.mark.usefixtures("no_wait")


def requests_to(mock: aioresponses, method: str, url: str) -> list[Any]:
    return mock.requests.get((method, URL(url)), [])


# -- bulk upsert -------------------------------------------------------------------------


@pytest.mark.parametrize("status", [202, 201, 200])
async def test_bulk_upsert_posts_the_bytes_and_returns_the_action_id(
    mock: aioresponses, status: int
) -> None:
    mock.post(BULK, status=status, payload={"async_action_id": "aa_0a1b2c"})
    async with VoucherifyClient(SETTINGS) as client:
        assert await client.bulk_upsert(CUSTOMERS) == "aa_0a1b2c"
    (call,) = requests_to(mock, "POST", BULK)
    assert call.kwargs["data"] == CUSTOMERS
    assert call.kwargs["headers"]["Content-Type"] == "application/json"
    assert call.kwargs["headers"]["X-App-Id"] == APP_ID


@pytest.mark.parametrize(
    "bad",
    [
        {"status": 202, "payload": {}},
        {"status": 202, "payload": {"async_action_id": 17}},
        {"status": 202, "body": "accepted"},
        {"status": 503},
        {"status": 429, "headers": {"X-Rate-Limit-Type": "bulk_api_calls", "Retry-After": "1"}},
    ],
    ids=["no-id", "id-not-a-string", "not-json", "503", "429-bulk"],
)
async def test_bulk_upsert_retries_what_is_retryable(
    mock: aioresponses, bad: dict[str, Any]
) -> None:
    mock.post(BULK, **bad)
    mock.post(BULK, status=202, payload={"async_action_id": "aa_2"})
    async with VoucherifyClient(SETTINGS) as client:
        assert await client.bulk_upsert(CUSTOMERS) == "aa_2"
    calls = requests_to(mock, "POST", BULK)
    assert [c.kwargs["data"] for c in calls] == [CUSTOMERS, CUSTOMERS]


VOUCHERIFY_ERRORS = [
    ("400", 400, {}, RequestRejected, 1),
    ("413", 413, {}, RequestRejected, 1),
    ("401", 401, {}, AccountError, 1),
    ("402", 402, {}, AccountError, 1),
    ("403", 403, {}, AccountError, 1),
    ("429-cycle", 429, {"X-Rate-Limit-Type": "api_calls_cycle"}, AccountError, 1),
    ("429-minute", 429, {"X-Rate-Limit-Type": "api_calls"}, RetryableError, 3),
    ("500", 500, {}, RetryableError, 3),
]


@pytest.mark.parametrize(
    ("status", "headers", "error", "attempts"),
    [c[1:] for c in VOUCHERIFY_ERRORS],
    ids=[c[0] for c in VOUCHERIFY_ERRORS],
)
async def test_bulk_upsert_errors(
    mock: aioresponses,
    status: int,
    headers: dict[str, str],
    error: type[ApiError],
    attempts: int,
) -> None:
    body = {
        "code": status,
        "key": "some_key",
        "message": "Something went wrong",
        "details": "More about it",
        "request_id": "v-0b1c2d3e",
    }
    mock.post(BULK, repeat=True, status=status, headers=headers, payload=body)
    async with VoucherifyClient(SETTINGS) as client:
        with pytest.raises(error) as info:
            await client.bulk_upsert(CUSTOMERS)
    assert type(info.value) is error
    assert info.value.api == "voucherify"
    assert info.value.status == status
    assert info.value.code == "some_key"
    assert len(requests_to(mock, "POST", BULK)) == attempts


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"message": "Invalid payload", "details": "source_id is required"}, "Invalid payload: "),
        ({"message": "Invalid payload"}, "Invalid payload"),
        ({"details": "only details"}, "only details"),
        ({}, "unexpected HTTP 400"),
    ],
    ids=["message-and-details", "message", "details", "empty"],
)
async def test_rejection_message_from_the_body(
    mock: aioresponses, body: dict[str, Any], message: str
) -> None:
    mock.post(BULK, status=400, payload=body)
    async with VoucherifyClient(SETTINGS) as client:
        with pytest.raises(RequestRejected) as info:
            await client.bulk_upsert(CUSTOMERS)
    assert str(info.value).startswith(f"voucherify at {SETTINGS.voucherify_api_url[8:]}: {message}")


@pytest.mark.parametrize(
    ("headers", "body_id", "expected"),
    [
        ({"Request-Id": "v-header"}, None, "v-header"),
        ({}, "v-from-body", "v-from-body"),
        ({"X-Request-Id": "v-header"}, "v-from-body", "v-header"),
    ],
    ids=["header", "body", "header-wins"],
)
async def test_request_id_carried_in_the_error(
    mock: aioresponses, headers: dict[str, str], body_id: str | None, expected: str
) -> None:
    body = {"code": 400, "key": "bad", "message": "Bad", "request_id": body_id}
    mock.post(BULK, status=400, headers=headers, payload=body)
    async with VoucherifyClient(SETTINGS) as client:
        with pytest.raises(RequestRejected) as info:
            await client.bulk_upsert(CUSTOMERS)
    assert info.value.request_id == expected
    assert f"request id {expected}" in str(info.value)


# -- async actions -----------------------------------------------------------------------

DONE = {
    "id": "aa_1",
    "type": "CUSTOMERS_IMPORT",
    "status": "DONE",
    "result": {
        "done_count": 2,
        "failed_count": 1,
        "errors": [
            {"source_id": "43", "key": "invalid", "message": "bad email", "details": "x"},
        ],
        "reports": [],
        "reports_available_till": "2030-01-01T00:00:00Z",
    },
}


@pytest.mark.parametrize(
    "action",
    [
        DONE,
        {"id": "aa_1", "status": "DONE", "result": {"done_count": 1, "failed_count": 0}},
        {"id": "aa_1", "status": "FAILED"},
        {"id": "aa_1", "status": "IN_PROGRESS"},
        {"id": "aa_1", "status": "ENQUEUED", "result": None},
    ],
    ids=["done-with-errors", "done-no-errors-key", "failed", "in-progress", "enqueued"],
)
async def test_async_action_is_returned_as_sent(mock: aioresponses, action: dict[str, Any]) -> None:
    mock.get(f"{ACTIONS}/aa_1", payload=action)
    async with VoucherifyClient(SETTINGS) as client:
        assert await client.async_action("aa_1") == action


@pytest.mark.parametrize(
    "bad",
    [
        {"id": "aa_1"},
        {"id": "aa_1", "status": 3},
        {"id": "aa_1", "status": "DONE"},
        {"id": "aa_1", "status": "DONE", "result": "ok"},
        {"id": "aa_1", "status": "DONE", "result": {"errors": "none"}},
        ["DONE"],
    ],
    ids=[
        "no-status",
        "status-not-string",
        "done-no-result",
        "result-string",
        "errors-string",
        "list",
    ],
)
async def test_malformed_async_action_is_retried(mock: aioresponses, bad: Any) -> None:
    mock.get(f"{ACTIONS}/aa_1", payload=bad)
    mock.get(f"{ACTIONS}/aa_1", payload=DONE)
    async with VoucherifyClient(SETTINGS) as client:
        assert await client.async_action("aa_1") == DONE
    assert client.retries == 1


async def test_recent_async_actions(mock: aioresponses) -> None:
    actions = [
        {"id": "aa_3", "status": "IN_PROGRESS", "type": "CUSTOMERS_IMPORT"},
        {"id": "aa_2", "status": "DONE", "type": "CUSTOMERS_IMPORT"},
        {"status": "DONE"},
        {"id": 5, "status": "DONE"},
        "junk",
        {"id": "aa_1", "status": "FAILED"},
    ]
    mock.get(f"{ACTIONS}?limit=25", payload={"async_actions": actions, "has_more": True})
    async with VoucherifyClient(SETTINGS) as client:
        listed = await client.recent_async_actions(limit=25)
    assert [(a["id"], a["status"]) for a in listed] == [
        ("aa_3", "IN_PROGRESS"),
        ("aa_2", "DONE"),
        ("aa_1", "FAILED"),
    ]


@pytest.mark.parametrize(
    "bad",
    [{}, {"async_actions": None}, {"async_actions": {"aa_1": {}}}],
    ids=["missing", "null", "object"],
)
async def test_malformed_async_action_list_is_retried(mock: aioresponses, bad: Any) -> None:
    mock.get(f"{ACTIONS}?limit=100", payload=bad)
    mock.get(f"{ACTIONS}?limit=100", payload={"async_actions": [], "has_more": False})
    async with VoucherifyClient(SETTINGS) as client:
        assert await client.recent_async_actions() == []
    assert client.retries == 1


# -- secrets and headers -----------------------------------------------------------------


async def test_secrets_never_in_errors_or_logs(
    mock: aioresponses, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    mock.post(BULK, status=500, headers={"Request-Id": "r1"})
    mock.post(BULK, exception=aiohttp.ServerDisconnectedError())
    mock.post(BULK, status=401, payload={"key": "unauthorized", "message": "Unauthorized"})
    async with VoucherifyClient(SETTINGS) as client:
        with pytest.raises(AccountError) as info:
            await client.bulk_upsert(CUSTOMERS)
    texts = [str(info.value), repr(info.value), *(r.getMessage() for r in caplog.records)]
    assert len(caplog.records) >= 3
    for text in texts:
        assert SECRET_KEY not in text and SEGMENT_TOKEN not in text


async def test_app_headers_on_the_wire() -> None:
    seen: list[tuple[web.Request, bytes]] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append((request, await request.read()))
        if request.method == "POST":
            return web.json_response({"async_action_id": "aa_9"}, status=202)
        return web.json_response({"async_actions": [], "has_more": False})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    async with TestServer(app) as server:
        base = str(server.make_url("")).rstrip("/")
        settings = Settings(**{**SETTINGS.__dict__, "voucherify_api_url": base})
        async with VoucherifyClient(settings) as client:
            assert await client.bulk_upsert(CUSTOMERS) == "aa_9"
            assert await client.recent_async_actions(10) == []
    (post, posted), (get, _) = seen
    for request in (post, get):
        assert request.headers["X-App-Id"] == APP_ID
        assert request.headers["X-App-Token"] == SECRET_KEY
        assert "Authorization" not in request.headers
    assert post.path == "/v1/customers/bulk/async"
    assert post.headers["Content-Type"] == "application/json"
    assert posted == CUSTOMERS
    assert get.path_qs == "/v1/async-actions?limit=10"
