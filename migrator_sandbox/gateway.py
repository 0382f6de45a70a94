"""The edge every API request passes: request ids, stats, limits, latency and faults; and
the JSON responses and error bodies of both APIs, which carry the request id it sets.

Admin routes (``/_sandbox/*``) bypass it entirely, so observing a run never perturbs it.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import secrets
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

from aiohttp import web

from migrator_sandbox.faults import drop_connection, hang
from migrator_sandbox.state import SANDBOX_KEY, Sandbox

ADMIN_PREFIX = "/_sandbox/"
SEGMENT_PREFIX = "/v1/spaces/"
STOPPING_KEY = web.AppKey("stopping", asyncio.Event)
LATENCY_KEY = web.AppKey("latency_rng", random.Random)
UNLIMITED_QUOTA = 1_000_000
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# -- JSON responses and the two APIs' error bodies ------------------------------------------

# Set by the gateway at the start of each request; requests in flight never share a task,
# so this needs no request-storage key.
REQUEST_ID: ContextVar[str] = ContextVar("request_id", default="")


def json_response(data: Any, status: int = 200) -> web.Response:
    # Raw UTF-8 rather than \u escapes: what the real APIs send, and a test of the client.
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
    return web.Response(body=body, status=status, content_type="application/json")


def segment_error(status: int, code: str, message: str) -> web.Response:
    return json_response({"error": {"code": code, "message": message}}, status)


def voucherify_error(status: int, key: str, message: str, details: str = "") -> web.Response:
    body = {
        "code": status,
        "key": key,
        "message": message,
        "details": details or message,
        "request_id": REQUEST_ID.get(),
    }
    return json_response(body, status)


def query_int(request: web.Request, name: str, default: int, low: int, high: int) -> int | None:
    """An integer query parameter within [low, high]; None when malformed or out of range."""
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        return None
    return value if low <= value <= high else None


# -- the gateway ----------------------------------------------------------------------------


@web.middleware
async def gateway(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith(ADMIN_PREFIX):
        return await handler(request)
    sandbox = request.app[SANDBOX_KEY]
    segment = request.path.startswith(SEGMENT_PREFIX)
    route = request.match_info.route.name or "unrouted"
    _count(sandbox, segment, route)
    request_id = secrets.token_hex(16) if segment else "v-" + secrets.token_hex(9)
    REQUEST_ID.set(request_id)
    response = await _answer(request, handler, sandbox, segment, route)
    if segment:
        response.headers["Request-Id"] = request_id
    else:
        rate_limit_headers(response, request)
    return response


def _count(sandbox: Sandbox, segment: bool, route: str) -> None:
    stats, now = sandbox.stats, time.time()
    if segment:
        stats.segment_requests += 1
        stats.segment_endpoints[route] += 1
        if stats.segment_first_request_at is None:
            stats.segment_first_request_at = now
        stats.segment_last_request_at = now
        return
    stats.voucherify_requests += 1
    stats.voucherify_endpoints[route] += 1
    if stats.voucherify_first_request_at is None:
        stats.voucherify_first_request_at = now
    stats.voucherify_last_request_at = now
    if route == "voucherify.bulk":
        stats.bulk_requests += 1
        stats.last_bulk_at = now
        endpoints = stats.voucherify_endpoints
        stats.polls_before_last_bulk = (
            endpoints["voucherify.actions"] + endpoints["voucherify.action"]
        )


async def _answer(
    request: web.Request, handler: Handler, sandbox: Sandbox, segment: bool, route: str
) -> web.StreamResponse:
    settings, stats, faults = sandbox.settings, sandbox.stats, sandbox.faults
    kind = faults.roll()
    if kind == "429_burst":
        stats.faults_injected["429_burst"] += 1
        return _too_many(request, sandbox, segment)
    limiter = sandbox.segment_limiter if segment else sandbox.voucherify_limiter
    if not limiter.try_acquire():
        if segment:
            stats.segment_rate_limited += 1
        else:
            stats.voucherify_rate_limited += 1
        return _too_many(request, sandbox, segment)
    if settings.latency_max_ms > 0:
        low, high = settings.latency_min_ms, settings.latency_max_ms
        await asyncio.sleep(request.app[LATENCY_KEY].uniform(low, high) / 1000)
    if kind in ("hang", "reset"):
        stats.faults_injected[kind] += 1
        if kind == "hang":
            await hang(request, request.app[STOPPING_KEY], settings.hang_cap_s)
        return drop_connection(request)
    if kind == "5xx":
        if route == "voucherify.bulk" and faults.after_accept():
            await _call(handler, request, segment)  # enqueued; its answer is lost
            stats.faults_injected["5xx_after_accept"] += 1
        else:
            stats.faults_injected["5xx"] += 1
        return _server_error(request, faults.server_error_status(), segment)
    response = await _call(handler, request, segment)
    if kind == "malformed" and 200 <= response.status < 300 and isinstance(response, web.Response):
        stats.faults_injected["malformed"] += 1
        return faults.malform(response)
    return response


async def _call(handler: Handler, request: web.Request, segment: bool) -> web.StreamResponse:
    """Run the handler; aiohttp's own errors (404, 405) get the API's error body."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if segment:
            code = "not_found" if exc.status == 404 else "invalid_request_error"
            return segment_error(exc.status, code, exc.reason)
        key = "not_found" if exc.status == 404 else "invalid_request"
        return voucherify_error(exc.status, key, exc.reason)


def _too_many(request: web.Request, sandbox: Sandbox, segment: bool) -> web.Response:
    if segment:
        stats = sandbox.stats
        stats.segment_429 += 1
        first = stats.segment_first_request_at
        if first is not None:
            stats.segment_429_by_second[int(time.time() - first)] += 1
        response = segment_error(429, "rate_limit_error", "Too many requests, retry later")
        response.headers["Retry-After"] = "1"
        return response
    sandbox.stats.voucherify_429 += 1
    response = voucherify_error(
        429, "too_many_requests", "Too many requests", "API calls limit reached"
    )
    retry = max(1, math.ceil(sandbox.voucherify_limiter.retry_after()))
    response.headers["Retry-After"] = str(retry)
    response.headers["X-Rate-Limit-Type"] = "api_calls"
    return response


def _server_error(request: web.Request, status: int, segment: bool) -> web.Response:
    reason = {500: "internal_error", 502: "bad_gateway", 503: "service_unavailable"}[status]
    if segment:
        return segment_error(status, reason, "The server could not answer, retry later")
    return voucherify_error(status, reason, "Server error", "Retry later")


def rate_limit_headers(response: web.StreamResponse, request: web.Request) -> None:
    """Headers every Voucherify answer carries; unlimited reports a nominal large quota."""
    limiter = request.app[SANDBOX_KEY].voucherify_limiter
    now = time.monotonic()
    limit = limiter.limit or UNLIMITED_QUOTA
    response.headers["X-Rate-Limit-Limit"] = str(limit)
    response.headers["X-Rate-Limit-Remaining"] = str(max(0, limit - limiter.used(now)))
    response.headers["X-Rate-Limit-Retry"] = str(limiter.reset_epoch(now))
