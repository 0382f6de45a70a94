"""Pacing under an API's published limit, with urgent requests first.

Hand-written rather than aiolimiter, for the reason in `Limiter`'s docstring (measured in
BENCHMARKS.md).
"""

from __future__ import annotations

import asyncio
from collections import deque

#: Pace at this share of the configured limit: jitter between the moment a request leaves
#: and the moment the server counts it must not push a window over the limit.
HEADROOM = 0.97
#: ...but keep no more of a long window in reserve than this much jitter needs: 3% of
#: Voucherify's one-minute window is 1.8 s, far beyond any jitter, and with one poll per
#: write it would cost ~6% of the writes.
MAX_JITTER_SECONDS = 0.25
#: On a long window the bucket holds this many seconds of its rate, so that a release the
#: event loop runs late is caught up, not lost. Each release is timed for the moment the
#: next request fits, and asyncio runs it a little later (epoll's millisecond timeouts,
#: whatever else the loop was doing); with room for one request only, that lateness was
#: lost every time: at 2,000 requests/min (a release every 30 ms), 172 of 1,942 requests'
#: worth in a 64 s warehouse backfill, which sent 1,840/min where the bucket allows 1,991
#: (measured, BENCHMARKS.md Stop 10). The bigger bucket costs its size once per window.
CATCH_UP_SECONDS = 0.1
#: A limiter starts at this share of its rate and reaches the full rate after
#: `RAMP_SECONDS`: the first requests of a run each open a connection, and that delay
#: bunches them with the ones after, more than the headroom absorbs.
START_SHARE = 0.5
RAMP_SECONDS = 1.0


class Limiter:
    """A leaky bucket: `capacity` requests at once, refilled at `rate` per second.

    Why not aiolimiter: it is strictly first-come first-served, and a poll that frees a
    batch slot must not queue behind the writes it holds back. With aiolimiter the
    Voucherify benchmark at 100 requests/min used 77% of the write budget, with `urgent`
    polls 96% (BENCHMARKS.md). As in aiolimiter, the level counts the moments requests
    really leave, so a stalled event loop never releases more than `capacity` at once;
    every waiter that fits is released in one timer callback.

    A run starts without a burst: the bucket starts full, and its rate ramps up from
    `START_SHARE` to all of it over the first `RAMP_SECONDS`, so the first second lets
    through at most `capacity + 0.75 * rate`. Starting empty, at full rate, let `capacity`
    requests out at once when the first page of ids arrived, and the time the first
    requests spent opening connections bunched them with the next ones: a strict
    one-second window at 1,000 requests/s answered ~17 429s in every run's first second.

    With `ramp=False` (a long window, `make_limiter`) the bucket starts empty at its full
    rate: its `capacity` is a sliver of the window, and a ramp only cost a run a quarter
    of a second's requests (8 of 2,000 a minute, 0.8% of the writes when polls take half
    the budget).
    """

    def __init__(self, capacity: float, rate: float, *, ramp: bool = True) -> None:
        self.capacity = capacity
        self.rate = rate
        self._ramp = ramp
        self._level = capacity
        self._checked = 0.0
        self._started = 0.0
        self._ramping = True
        self._urgent: deque[asyncio.Future[None]] = deque()
        self._normal: deque[asyncio.Future[None]] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _leak(self, now: float) -> None:
        if self._ramping:
            leaked = self._ramped(now) - self._ramped(self._checked)
            self._ramping = now - self._started < RAMP_SECONDS
        else:
            leaked = (now - self._checked) * self.rate
        self._level = max(0.0, self._level - leaked)
        self._checked = now

    def _ramped(self, moment: float) -> float:
        """Requests leaked from the start to `moment`: the integral of the ramped rate."""
        s = moment - self._started
        if s >= RAMP_SECONDS:
            return self.rate * (RAMP_SECONDS * (1 + START_SHARE) / 2 + s - RAMP_SECONDS)
        return self.rate * (START_SHARE * s + (1 - START_SHARE) * s * s / (2 * RAMP_SECONDS))

    def _rate_now(self) -> float:
        if not self._ramping:
            return self.rate
        ramp = min(1.0, (self._checked - self._started) / RAMP_SECONDS)
        return self.rate * (START_SHARE + (1 - START_SHARE) * ramp)

    async def acquire(self, urgent: bool = False) -> None:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # first use, or reused on a new loop: start afresh
            self._loop, self._timer = loop, None
            self._urgent.clear()
            self._normal.clear()
            # Full, at the start of its ramp: no burst. Without a ramp, empty.
            self._started = self._checked = loop.time()
            self._level = self.capacity if self._ramp else 0.0
            self._ramping = self._ramp
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
            # The rate only grows: at the current one, the delay errs on the safe side.
            delay = max(0.0, (self._level + 1 - self.capacity) / self._rate_now())
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
    most `capacity + rate * t` in any `t` seconds, and less in the first second (see
    `Limiter`). The rate is `HEADROOM` of the limit, or, on long windows where that reserve
    is more than jitter needs, as much as keeps `capacity + rate * (window +
    MAX_JITTER_SECONDS)` within the limit. On such a window the bucket also holds
    `CATCH_UP_SECONDS` of the rate (see there), starts empty and does not ramp: the ramp
    guards a one-second window, and on a long one even a full bucket stays within it.
    """
    capacity = max(1.0, requests / per_seconds * 0.02)
    headroom = requests * HEADROOM / per_seconds
    catch_up = max(capacity, requests / per_seconds * CATCH_UP_SECONDS)
    windowed = (requests - catch_up) / (per_seconds + MAX_JITTER_SECONDS)
    if windowed >= headroom:  # a long window: the bigger bucket still keeps within it
        return Limiter(catch_up, windowed, ramp=False)
    rate = max(headroom, (requests - capacity) / (per_seconds + MAX_JITTER_SECONDS))
    return Limiter(capacity, rate)
