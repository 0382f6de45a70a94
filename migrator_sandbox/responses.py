"""JSON responses and the two APIs' error bodies."""

from __future__ import annotations

import json
from contextvars import ContextVar
from typing import Any

from aiohttp import web

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
