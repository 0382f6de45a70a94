"""Strict sliding-window limiter: what the real APIs enforce, unlike a token bucket's bursts."""

from __future__ import annotations

import math
import time
from collections import deque


class SlidingWindow:
    """At most ``limit`` accepted calls in any window of ``window`` seconds (0 = no limit).

    Rejected calls are not recorded, so a client hammering a full window does not push
    its own recovery further away.
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
