"""The HTTP layer both API clients share: one pooled session, one limiter, one retry policy.

Each request is paced by the API's limiter, classified (retryable / account / rejected),
and retried by a single tenacity policy that honours `Retry-After` and
`X-Rate-Limit-Retry`. Callers pass a `parse` function that turns the JSON body into what
they need; a body that does not parse is a malformed response and is retried like a 5xx.
One log line per request, with the request id, never the auth headers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import aiohttp
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from migrator.exceptions import AccountError, ApiError, RequestRejected, RetryableError

log = logging.getLogger("migrator.http")

T = TypeVar("T")

#: Pace at this share of the configured limit: jitter between the moment a request leaves
#: and the moment the server counts it must not push a window over the limit.
HEADROOM = 0.97
#: ...but keep no more of a long window in reserve than this much jitter needs: 3% of
#: Voucherify's one-minute window is 1.8 s, far beyond any jitter, and with one poll per
#: write it would cost ~6% of the writes.
MAX_JITTER_SECONDS = 0.25

ACCOUNT_HINTS: dict[int, str] = {
    401: "the credentials were refused",
    402: "the plan's limit is exceeded (payment required)",
    403: "access is forbidden for these credentials",
}


class MalformedResponse(Exception):
    """Raised by a `parse` function when a 2xx body lacks what the API documents."""


class Limiter:
    """A leaky bucket: `capacity` requests at once, refilled at `rate` per second.

    Why not aiolimiter: it is strictly first-come first-served, and a poll that frees a
    batch slot must not queue behind the writes it holds back. With aiolimiter the
    Voucherify benchmark at 100 requests/min used 77% of the write budget, with `urgent`
    polls 96% (BENCHMARKS.md). As in aiolimiter, the level counts the moments requests
    really leave, so a stalled event loop never releases more than `capacity` at once;
    every waiter that fits is released in one timer callback.
    """

    def __init__(self, capacity: float, rate: float) -> None:
        self.capacity = capacity
        self.rate = rate
        self._level = 0.0
        self._checked = 0.0
        self._urgent: deque[asyncio.Future[None]] = deque()
        self._normal: deque[asyncio.Future[None]] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _leak(self, now: float) -> None:
        self._level = max(0.0, self._level - (now - self._checked) * self.rate)
        self._checked = now

    async def acquire(self, urgent: bool = False) -> None:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # first use, or reused on a new loop: start afresh
            self._loop, self._timer = loop, None
            self._urgent.clear()
            self._normal.clear()
        if not self._urgent and not self._normal:
            self._leak(loop.time())
            if self._level + 1 <= self.capacity:
                self._level += 1
                return
        waiter: asyncio.Future[None] = loop.create_future()
        (self._urgent if urgent else self._normal).append(waiter)
        self._schedule(loop)
        await waiter  # a waiter cancelled after its release wastes its slot: safe side

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is None and (self._urgent or self._normal):
            self._leak(loop.time())
            delay = max(0.0, (self._level + 1 - self.capacity) / self.rate)
            self._timer = loop.call_at(self._checked + delay, self._release, loop)

    def _release(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        self._leak(loop.time())
        for waiters in (self._urgent, self._normal):
            while waiters and self._level + 1 <= self.capacity:
                waiter = waiters.popleft()
                if not waiter.done():  # skip the cancelled
                    waiter.set_result(None)
                    self._level += 1
        self._schedule(loop)


def make_limiter(requests: float, per_seconds: float) -> Limiter:
    """A leaky bucket that never lets more than `requests` through in any window.

    The bucket is small (2% of a second's requests) so a stalled event loop can catch up a
    little without a burst that would overflow a strict sliding window. It lets through at
    most `capacity + rate * t` in any `t` seconds. The rate is `HEADROOM` of the limit, or,
    on long windows where that reserve is more than jitter needs, as much as keeps
    `capacity + rate * (window + MAX_JITTER_SECONDS)` within the limit.
    """
    capacity = max(1.0, requests / per_seconds * 0.02)
    rate = max(
        requests * HEADROOM / per_seconds,
        (requests - capacity) / (per_seconds + MAX_JITTER_SECONDS),
    )
    return Limiter(capacity, rate)


def _retry_after(headers: Mapping[str, str], *, throttled: bool) -> float | None:
    """Seconds to wait as the server asked: `Retry-After`, or for a 429 `X-Rate-Limit-Retry`.

    Voucherify sends `X-Rate-Limit-Retry` on every response, so it means "wait" only on a 429.
    """
    value = headers.get("Retry-After")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
    value = headers.get("X-Rate-Limit-Retry") if throttled else None
    if value:
        try:
            return max(0.0, float(value) - time.time())
        except ValueError:
            pass
    return None


def _wait(state: RetryCallState) -> float:
    """Exponential backoff with jitter, or the server's own figure when it gave one."""
    backoff = wait_random_exponential(multiplier=0.5, max=30)(state)
    exc = state.outcome.exception() if state.outcome else None
    if isinstance(exc, ApiError) and exc.retry_after is not None:
        return min(exc.retry_after, 120.0) + random.uniform(0, 0.25)
    return backoff


def _debug_shown(logger: logging.Logger) -> bool:
    """True when a DEBUG record of `logger` would reach a handler that emits it.

    `isEnabledFor` alone is not enough: the CLI sets the logger to DEBUG for the optional
    log file, so without one every request would build a record that no handler keeps.
    """
    if not logger.isEnabledFor(logging.DEBUG):
        return False
    current: logging.Logger | None = logger
    while current is not None:
        if any(handler.level <= logging.DEBUG for handler in current.handlers):
            return True
        if not current.propagate:
            return False
        current = current.parent
    return False


class ApiClient:
    """An `async with` HTTP client for one API: session, limiter, retries, logging."""

    def __init__(
        self,
        name: str,
        base_url: str,
        *,
        headers: Mapping[str, str] | None = None,
        limiter: Limiter | None = None,
        timeout: float = 30.0,
        max_attempts: int = 8,
        connections: int = 100,
        error_message: Callable[[Any], tuple[str | None, str | None]] | None = None,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self._headers = dict(headers or {})
        self._limiter = limiter
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._max_attempts = max_attempts
        self._connections = connections
        self._error_message = error_message or (lambda body: (None, None))
        self._session: aiohttp.ClientSession | None = None
        self._log_requests = False
        self.requests = 0
        self.retries = 0
        self.throttled = 0

    async def __aenter__(self) -> ApiClient:
        # Logging is set up before a client opens: decide once, not on every request.
        self._log_requests = _debug_shown(log)
        connector = aiohttp.TCPConnector(limit=self._connections, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers=self._headers,
            timeout=self._timeout,
            json_serialize=json.dumps,
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        path: str,
        parse: Callable[[Any], T],
        *,
        params: Mapping[str, str | int] | None = None,
        data: bytes | None = None,
        expect: tuple[int, ...] = (200,),
        urgent: bool = False,
    ) -> T:
        """Send one logical request, retried per the policy; returns `parse(body)`.

        `urgent` requests pass the others waiting in the limiter (polls, list pages).
        """
        # The first attempt runs outside tenacity: building and driving an AsyncRetrying
        # per request was the largest avoidable CPU cost, and most requests never fail.
        try:
            return await self._once(method, path, parse, params, data, expect, urgent)
        except RetryableError as exc:
            failed = [exc]
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(RetryableError),
            wait=_wait,
            stop=stop_after_attempt(self._max_attempts),
            reraise=True,
            before_sleep=self._before_sleep,
        )
        async for attempt in retrying:
            with attempt:
                if failed:
                    raise failed.pop()  # attempt 1, already made: the policy counts it
                return await self._once(method, path, parse, params, data, expect, urgent)
        raise AssertionError("unreachable")  # pragma: no cover

    def _before_sleep(self, state: RetryCallState) -> None:
        self.retries += 1
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        log.warning("%s; retry %d in %.1fs", exc, state.attempt_number, wait)

    async def _once(
        self,
        method: str,
        path: str,
        parse: Callable[[Any], T],
        params: Mapping[str, str | int] | None,
        data: bytes | None,
        expect: tuple[int, ...],
        urgent: bool = False,
    ) -> T:
        assert self._session is not None, "use the client as `async with`"
        if self._limiter is not None:
            await self._limiter.acquire(urgent)
        self.requests += 1
        started = time.monotonic()
        headers = {"Content-Type": "application/json"} if data is not None else None
        try:
            async with self._session.request(
                method, self.base_url + path, params=params, data=data, headers=headers
            ) as response:
                raw = await response.read()
                request_id = response.headers.get("Request-Id") or response.headers.get(
                    "X-Request-Id"
                )
                if self._log_requests:
                    log.debug(
                        "%s %s %s %d %.0fms request_id=%s",
                        self.name,
                        method,
                        path,
                        response.status,
                        (time.monotonic() - started) * 1000,
                        request_id,
                    )
                return self._classify(
                    response.status, response.headers, raw, request_id, parse, expect
                )
        except TimeoutError:
            raise RetryableError(self.name, f"{method} {path} timed out") from None
        except aiohttp.ClientError as exc:
            # The exception text can hold the URL but never headers; keep only its type.
            raise RetryableError(
                self.name, f"{method} {path} failed: {type(exc).__name__}"
            ) from None

    def _classify(
        self,
        status: int,
        headers: Mapping[str, str],
        raw: bytes,
        request_id: str | None,
        parse: Callable[[Any], T],
        expect: tuple[int, ...],
    ) -> T:
        body: Any = None
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            if status in expect:
                raise RetryableError(
                    self.name,
                    "malformed response: body is not JSON",
                    status=status,
                    request_id=request_id,
                ) from None
        if status in expect:
            try:
                return parse(body)
            except (MalformedResponse, KeyError, TypeError, ValueError, AttributeError) as exc:
                raise RetryableError(
                    self.name, f"malformed response: {exc}", status=status, request_id=request_id
                ) from None
        code, message = self._error_message(body)
        if not request_id and isinstance(body, dict) and isinstance(body.get("request_id"), str):
            request_id = body["request_id"] or None  # Voucherify puts it in the error body
        text = message or f"unexpected HTTP {status}"
        kwargs: dict[str, Any] = {"status": status, "code": code, "request_id": request_id}
        if status == 429:
            self.throttled += 1
            if headers.get("X-Rate-Limit-Type") == "api_calls_cycle":
                raise AccountError(
                    self.name, "the plan's API calls for this billing cycle are used up", **kwargs
                )
            raise RetryableError(
                self.name,
                "rate limited",
                retry_after=_retry_after(headers, throttled=True),
                **kwargs,
            )
        if status >= 500:
            raise RetryableError(
                self.name, text, retry_after=_retry_after(headers, throttled=False), **kwargs
            )
        if status in ACCOUNT_HINTS:
            raise AccountError(self.name, f"{ACCOUNT_HINTS[status]}: {text}", **kwargs)
        raise RequestRejected(self.name, text, **kwargs)
