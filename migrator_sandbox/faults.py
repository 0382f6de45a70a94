"""How the sandbox makes life hard for a client: the APIs' strict rate limits, and fault
injection (the ways production networks and APIs misbehave, at chosen rates)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import random
import time
from collections import defaultdict, deque

from aiohttp import web

from migrator_sandbox.settings import SandboxSettings


class SlidingWindow:
    """At most ``limit`` accepted calls in any window of ``window`` seconds (0 = no limit).

    Strict, as the real APIs enforce it, unlike a token bucket's bursts. Rejected calls are
    not recorded, so a client hammering a full window does not push its own recovery further
    away.
    """

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._accepted: deque[float] = deque()

    def _trim(self, now: float) -> None:
        horizon = now - self.window
        accepted = self._accepted
        while accepted and accepted[0] <= horizon:
            accepted.popleft()

    def try_acquire(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        self._trim(now)
        if self.limit and len(self._accepted) >= self.limit:
            return False
        self._accepted.append(now)
        return True

    def used(self, now: float | None = None) -> int:
        self._trim(time.monotonic() if now is None else now)
        return len(self._accepted)

    def retry_after(self, now: float | None = None) -> float:
        """Seconds until the oldest accepted call leaves the window (0 if a slot is free)."""
        now = time.monotonic() if now is None else now
        self._trim(now)
        if not self.limit or len(self._accepted) < self.limit:
            return 0.0
        return max(0.0, self._accepted[0] + self.window - now)

    def reset_epoch(self, now: float | None = None) -> int:
        """Epoch second at which the oldest call in the window expires (now if empty)."""
        now = time.monotonic() if now is None else now
        self._trim(now)
        wall = time.time()
        if not self._accepted:
            return math.ceil(wall)
        return math.ceil(wall + self._accepted[0] + self.window - now)

    def clear(self) -> None:
        self._accepted.clear()


# Top-level keys a client cannot do without; "missing its main fields" drops them.
MAIN_KEYS = frozenset(
    {
        "data", "traits", "cursor", "metadata", "async_action_id", "status", "result",
        "async_actions", "has_more", "properties", "source_id", "id",
    }
)  # fmt: skip
_HTML = b"<html><body><h1>502 Bad Gateway</h1></body></html>"


class FaultInjector:
    """Seeded decisions, so a run with the same seed and request order fails the same way."""

    def __init__(self, settings: SandboxSettings) -> None:
        self.settings = settings
        self.rng = random.Random(f"{settings.seed}:faults")
        self._table = [
            ("429_burst", settings.fault_429_burst),
            ("5xx", settings.fault_5xx),
            ("hang", settings.fault_hang),
            ("reset", settings.fault_reset),
            ("malformed", settings.fault_malformed),
        ]
        self._any = any(share for _, share in self._table)
        self._attempts: defaultdict[str, int] = defaultdict(int)

    def roll(self) -> str | None:
        """The fault for one request, or None (one roll: the shares are exclusive)."""
        if not self._any:
            return None
        roll, acc = self.rng.random(), 0.0
        for kind, share in self._table:
            acc += share
            if roll < acc:
                return kind
        return None

    def server_error_status(self) -> int:
        return self.rng.choice((500, 502, 503))

    def after_accept(self) -> bool:
        """Half of the 5xx on a bulk POST strike after the batch was enqueued."""
        return self.rng.random() < 0.5

    def action_fails(self) -> bool:
        share = self.settings.fault_action_failed
        return share > 0 and self.rng.random() < share

    def customer_fails(self, source_id: str) -> bool:
        """Per source_id and seed; unless sticky, each re-send gets a fresh draw."""
        share = self.settings.fault_customer_error
        if share <= 0:
            return False
        attempt = 0
        if not self.settings.fault_customer_error_sticky:
            attempt = self._attempts[source_id]
            self._attempts[source_id] += 1
        key = f"{self.settings.seed}:{source_id}:{attempt}".encode()
        draw = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest()) / 2**64
        return draw < share

    def malform(self, response: web.Response) -> web.Response:
        """A 2xx whose body is cut short, not JSON at all, or JSON without its main fields."""
        body = response.body if isinstance(response.body, bytes) else b""
        variant = self.rng.randrange(3)
        if variant == 0 and len(body) > 1:
            return web.Response(
                status=response.status, body=body[: len(body) // 2], content_type="application/json"
            )
        if variant == 1:
            try:
                data = json.loads(body)
            except ValueError:
                data = None
            if isinstance(data, dict):
                kept = {k: v for k, v in data.items() if k not in MAIN_KEYS}
                text = json.dumps(kept if len(kept) < len(data) else {})
                return web.json_response(text=text, status=response.status)
        return web.Response(status=response.status, body=_HTML, content_type="text/html")


def drop_connection(request: web.Request) -> web.Response:
    """Close the TCP connection without an answer; the client sees a disconnect.

    The returned response is never written (the transport is gone); aiohttp discards it.
    """
    transport = request.transport
    if transport is not None:
        transport.abort()
    return web.Response(status=500)


async def hang(request: web.Request, stopping: asyncio.Event, cap: float) -> None:
    """Hold the request unanswered until the client gives up, the cap, or shutdown.

    aiohttp does not cancel handlers on disconnect by default, so poll the transport.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + cap
    while loop.time() < deadline and not stopping.is_set():
        transport = request.transport
        if transport is None or transport.is_closing():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), timeout=0.05)
