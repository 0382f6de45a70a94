"""Async client of the Voucherify API: bulk customer upserts and their async actions.

A bulk request that was accepted is not a written customer: only its async action, once
DONE, says which customers were written and which failed. Polling spends the same quota as
writes, so the pipeline lists many actions with one call and fetches only finished ones.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from migrator.config import Settings
from migrator.exceptions import RequestRejected
from migrator.http import ApiClient, MalformedResponse
from migrator.limiter import make_limiter

#: Documented limits of one `POST /v1/customers/bulk/async`.
MAX_ITEMS = 100
MAX_BYTES = 10 * 1024 * 1024

FINAL_STATUSES = frozenset({"DONE", "FAILED"})
#: Requests one batch costs: the bulk POST and about one poll.
CALLS_PER_BATCH = 2.0
#: A rate window that resets further away than this is an hour, not a minute.
HOURLY_RESET_SECONDS = 90.0

log = logging.getLogger("migrator")


def _voucherify_error(body: Any) -> tuple[str | None, str | None]:
    if isinstance(body, dict):
        key = body.get("key")
        message = body.get("message")
        details = body.get("details")
        text = f"{message}: {details}" if message and details else message or details
        return (str(key) if key else None), (str(text) if text else None)
    return None, None


def _action_id(body: Any) -> str:
    action_id = body.get("async_action_id") if isinstance(body, dict) else None
    if not isinstance(action_id, str):
        raise MalformedResponse("'async_action_id' missing from the body")
    return action_id


def _action(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict) or not isinstance(body.get("status"), str):
        raise MalformedResponse("'status' missing from the async action")
    if body["status"] == "DONE":
        result = body.get("result")
        if not isinstance(result, dict) or not isinstance(result.get("errors", []), list):
            raise MalformedResponse("'result.errors' missing from a DONE async action")
    return body


def _actions(body: Any) -> list[dict[str, Any]]:
    if not isinstance(body, dict) or not isinstance(body.get("async_actions"), list):
        raise MalformedResponse("'async_actions' missing from the body")
    return [
        a for a in body["async_actions"] if isinstance(a, dict) and isinstance(a.get("id"), str)
    ]


def _schema(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict) or not isinstance(body.get("properties", {}), dict):
        raise MalformedResponse("'properties' missing from the metadata schema")
    return body


class VoucherifyClient(ApiClient):
    """One Voucherify project, paced under its requests per minute."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(
            "voucherify",
            settings.voucherify_api_url,
            headers={
                "X-App-Id": settings.voucherify_application_id,
                "X-App-Token": settings.voucherify_secret_key,
            },
            limiter=make_limiter(settings.voucherify_rate_limit, 60.0),
            timeout=settings.request_timeout,
            max_attempts=settings.max_attempts,
            connections=16,
            error_message=_voucherify_error,
        )
        self.requests_per_minute = settings.voucherify_rate_limit

    def customers_per_second(self) -> float:
        """What the budget can write at best: 100 customers per bulk call, and ~1 more call
        per batch to learn its outcome (measured: BENCHMARKS.md, voucherify scenario)."""
        return self.requests_per_minute / 60.0 * MAX_ITEMS / CALLS_PER_BATCH

    def adopt_announced_limit(self) -> None:
        """Pace at the limit Voucherify announces when it is below the configured one.

        `X-Rate-Limit-Limit` does not say its period: per minute on paid plans, per hour on
        a Sandbox project. The reset time in `X-Rate-Limit-Retry`, read right after a call,
        tells which: a window that resets more than ~90 s away is an hour.
        """
        announced = announced_per_minute(self.last_headers, time.time())
        if announced is None or announced >= self.requests_per_minute:
            return
        log.warning(
            "Voucherify announces a limit of %s requests/minute, below VOUCHERIFY_RATE_LIMIT=%g; "
            "pacing at Voucherify's",
            f"{announced:g}",
            self.requests_per_minute,
        )
        self.requests_per_minute = announced
        self.pace(make_limiter(announced, 60.0))

    async def bulk_upsert(self, body: bytes) -> str:
        """Queue a JSON array of customers (already serialised); returns the action id."""
        return await self.request(
            "POST", "/v1/customers/bulk/async", _action_id, data=body, expect=(200, 201, 202)
        )

    # Polls are urgent: each one that finds an action final frees a slot for the next batch,
    # so queueing them behind the batches they hold back would only leave the quota idle.
    async def async_action(self, action_id: str) -> dict[str, Any]:
        return await self.request("GET", f"/v1/async-actions/{action_id}", _action, urgent=True)

    async def recent_async_actions(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest async actions (status only, no result): one call for many actions."""
        return await self.request(
            "GET", "/v1/async-actions", _actions, params={"limit": limit}, urgent=True
        )

    async def customer_metadata_schema(self) -> dict[str, Any] | None:
        """The project's customer metadata schema; None when the project defines none."""
        try:
            return await self.request("GET", "/v1/metadata-schemas/customer", _schema)
        except RequestRejected:
            return None


def announced_per_minute(headers: Mapping[str, str], now: float) -> float | None:
    try:
        limit = float(headers.get("X-Rate-Limit-Limit") or "")
    except ValueError:
        return None
    if not limit > 0:
        return None
    try:
        reset_in = float(headers.get("X-Rate-Limit-Retry") or "") - now
    except ValueError:
        reset_in = 0.0
    return limit / 60.0 if reset_in > HOURLY_RESET_SECONDS else limit
