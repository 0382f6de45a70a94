"""The HTTP layer both API clients share: one pooled session, one limiter, one retry policy.

Each request is paced by the API's limiter, classified (retryable / account / rejected),
and retried by a single tenacity policy that honours `Retry-After` and
`X-Rate-Limit-Retry`. Callers pass a `parse` function that turns the JSON body into what
they need; a body that does not parse is a malformed response and is retried like a 5xx.
One log line per request, with the request id, never the auth headers.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import Any, Protocol, Self, TypeVar
from urllib.parse import urlsplit

import aiohttp
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from migrator.exceptions import AccountError, ApiError, RequestRejected, RetryableError
from migrator.limiter import Limiter

log = logging.getLogger("migrator.http")

T = TypeVar("T")

ACCOUNT_HINTS: dict[int, str] = {
    401: "the credentials were refused",
    402: "the plan's limit is exceeded (payment required)",
    403: "access is forbidden for these credentials",
}


class MalformedResponse(Exception):
    """Raised by a `parse` function when a 2xx body lacks what the API documents."""


class RetryTally(Protocol):
    """Where a run counts its retries (its `Counts`), for the summary and the report."""

    retries: int


#: The tally of the run going on in this context (the runner sets it; tasks inherit it).
RUN_RETRIES: ContextVar[RetryTally | None] = ContextVar("migrator_run_retries", default=None)
#: Set on a retry's log record, so that the console can summarise retries.
RETRY_RECORD = "migrator_retry"


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
        parts = urlsplit(self.base_url)
        self.host = parts.netloc.rpartition("@")[2] or None  # named in every error
        self._base_path = parts.path
        self._headers = dict(headers or {})
        self._limiter = limiter
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._max_attempts = max_attempts
        self._connections = connections
        self._error_message = error_message or (lambda body: (None, None))
        self._session: aiohttp.ClientSession | None = None
        self._log_requests = False
        self.last_headers: Mapping[str, str] = {}
        self.requests = 0
        self.retries = 0
        self.throttled = 0

    async def __aenter__(self) -> Self:
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

    def pace(self, limiter: Limiter) -> None:
        """Pace the next requests with `limiter` (a limit learned from the API itself)."""
        self._limiter = limiter

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
        tally = RUN_RETRIES.get()
        if tally is not None:
            tally.retries += 1
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        # Info, not warning: a retry that then succeeds is routine. The console summarises
        # them (at most one line a minute) unless -v; the log file keeps each.
        log.info(
            "%s; retry %d in %.1fs",
            exc,
            state.attempt_number,
            wait,
            extra={RETRY_RECORD: str(exc)},
        )

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
                self.last_headers = response.headers
                request_id = response.headers.get("Request-Id") or response.headers.get(
                    "X-Request-Id"
                )
                if not request_id and response.status not in expect:
                    request_id = _body_request_id(raw)  # Voucherify puts it in error bodies
                if self._log_requests:
                    log.debug(
                        "%s %s %s %d %.0fms%s",
                        self.name,
                        method,
                        response.url.with_user(None),
                        response.status,
                        (time.monotonic() - started) * 1000,
                        f" request_id={request_id}" if request_id else "",
                    )
                return self._classify(
                    response.status, response.headers, raw, request_id, parse, expect
                )
        except TimeoutError:
            raise RetryableError(
                self.name, f"{method} {self._base_path + path} timed out", host=self.host
            ) from None
        except aiohttp.ClientError as exc:
            # The exception text can hold the URL but never headers; keep only its type.
            raise RetryableError(
                self.name,
                f"{method} {self._base_path + path} failed: {type(exc).__name__}",
                host=self.host,
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
        """Decode, then either parse an expected answer or raise the error its status means."""
        if status in expect:
            return self._parse(status, raw, request_id, parse)
        body = _json_or_none(raw)
        code, message = self._error_message(body)
        if status == 429:
            self.throttled += 1
        error_class, text, retry_after = _error_for(status, headers, message)
        raise error_class(
            self.name,
            text,
            status=status,
            code=code,
            request_id=request_id,
            retry_after=retry_after,
            host=self.host,
        )

    def _parse(
        self, status: int, raw: bytes, request_id: str | None, parse: Callable[[Any], T]
    ) -> T:
        """An expected status whose body is not what the API documents is retried like a 5xx."""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            raise RetryableError(
                self.name,
                "malformed response: body is not JSON",
                status=status,
                request_id=request_id,
                host=self.host,
            ) from None
        try:
            return parse(body)
        except (MalformedResponse, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise RetryableError(
                self.name,
                f"malformed response: {exc}",
                status=status,
                request_id=request_id,
                host=self.host,
            ) from None


def _body_request_id(raw: bytes) -> str | None:
    body = _json_or_none(raw)
    if isinstance(body, dict) and isinstance(body.get("request_id"), str):
        return body["request_id"] or None
    return None


def _json_or_none(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def _error_for(
    status: int, headers: Mapping[str, str], message: str | None
) -> tuple[type[ApiError], str, float | None]:
    """The error class a failed status means, its text, and the wait the server asked for."""
    text = message or f"unexpected HTTP {status}"
    if status == 429:
        if headers.get("X-Rate-Limit-Type") == "api_calls_cycle":
            return AccountError, "the plan's API calls for this billing cycle are used up", None
        return RetryableError, "rate limited", _retry_after(headers, throttled=True)
    if status >= 500:
        return RetryableError, text, _retry_after(headers, throttled=False)
    if status in ACCOUNT_HINTS:
        return AccountError, f"{ACCOUNT_HINTS[status]}: {text}", None
    return RequestRejected, text, None
