"""Customers into bulk bodies: at most 100 items and 10 MB, a partial batch after a linger.

Bodies are built from each customer's JSON, serialised once when it was mapped; a batch
body is `[` + items joined by `,` + `]`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from migrator.checkpoint import TrackedPage
from migrator.voucherify import MAX_BYTES, MAX_ITEMS

#: A partial batch is sent after this long without reaching 100 customers.
LINGER_SECONDS = 1.0
#: Bytes a body spends around its items: "[" and "]"; and between two items: ",".
ENVELOPE_BYTES = 2
SEPARATOR_BYTES = 1


@dataclass(slots=True)
class Item:
    """One customer on its way: what is sent, and what to remember once written."""

    page: TrackedPage
    segment_id: str
    source_id: str
    payload: dict[str, Any]
    body: bytes
    fingerprints: dict[str, str]


@dataclass(slots=True)
class Batch:
    items: list[Item]
    attempt: int = 1

    def body(self) -> bytes:
        return b"[" + b",".join(item.body for item in self.items) + b"]"


def fits_alone(body: bytes) -> bool:
    """Whether one customer can be sent at all under the body limit."""
    return len(body) + ENVELOPE_BYTES <= MAX_BYTES


class Batcher:
    """Collects items; hands full batches to `send` at once, partial ones after a linger.

    While `saturated()` (every batch slot taken) a lingering partial batch keeps filling:
    it would only queue, and a fuller batch saves requests from the quota that is short.
    """

    def __init__(self, send: Callable[[Batch], None], saturated: Callable[[], bool]) -> None:
        self._send = send
        self._saturated = saturated
        self._items: list[Item] = []
        self._bytes = ENVELOPE_BYTES
        self._linger: asyncio.TimerHandle | None = None

    def add(self, item: Item) -> None:
        if self._items and (
            len(self._items) >= MAX_ITEMS
            or self._bytes + SEPARATOR_BYTES + len(item.body) > MAX_BYTES
        ):
            self.flush()
        self._bytes += len(item.body) + (SEPARATOR_BYTES if self._items else 0)
        self._items.append(item)
        if len(self._items) >= MAX_ITEMS:
            self.flush()
        elif self._linger is None:
            self._linger = asyncio.get_running_loop().call_later(LINGER_SECONDS, self._lingered)

    def _lingered(self) -> None:
        self._linger = None
        if self._saturated():
            self._linger = asyncio.get_running_loop().call_later(LINGER_SECONDS, self._lingered)
        else:
            self.flush()

    def flush(self) -> None:
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        if self._items:
            batch = Batch(self._items)
            self._items, self._bytes = [], ENVELOPE_BYTES
            self._send(batch)

    def close(self) -> None:
        """Stop the linger timer (a run that stops must leave no callback behind)."""
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
