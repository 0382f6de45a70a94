"""Sending batches and settling their async actions.

A bulk request that Voucherify accepted is not a written customer: only its async action,
once DONE, says which customers were written and which failed. Polling spends the same
quota as writes, so one list call tells which watched actions are final and only those
are read. The watcher owns the permits of the batches in flight: when they are all taken,
the pipeline waits (backpressure), so memory stays flat however slow Voucherify is.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from migrator.batching import Batch, Item
from migrator.exceptions import RequestRejected
from migrator.outcome import Counts
from migrator.voucherify import FINAL_STATUSES, VoucherifyClient

log = logging.getLogger("migrator.pipeline")

#: A batch whose async action ends FAILED is sent again this many times in all.
BATCH_ATTEMPTS = 3
#: Batches sent but not yet confirmed; beyond this, reading waits (backpressure).
MAX_OUTSTANDING_BATCHES = 20
#: Share of the Voucherify request budget spent on listing async actions.
POLL_BUDGET_SHARE = 0.1
#: An action not among the newest listed is read directly after this many polls.
MISSES_BEFORE_DIRECT_READ = 2

#: Called once per batch whose fate is known: its action id (None: never accepted), the
#: items, and errors by source_id.
Settle = Callable[[str | None, list[Item], dict[str, str]], None]
#: Called as soon as Voucherify accepted a batch, before anything else happens to it.
Sent = Callable[[str, Batch], None]


@dataclass(slots=True)
class Watched:
    batch: Batch
    misses: int = 0


def poll_interval(requests_per_minute: float) -> float:
    """Seconds between list calls so that they spend `POLL_BUDGET_SHARE` of the budget."""
    per_second = requests_per_minute / 60.0
    return min(10.0, max(0.25, 1.0 / (per_second * POLL_BUDGET_SHARE)))


class ActionWatcher:
    def __init__(
        self,
        voucherify: VoucherifyClient,
        tasks: asyncio.TaskGroup,
        counts: Counts,
        sent: Sent,
        settle: Settle,
        *,
        interval: float,
    ) -> None:
        self.voucherify = voucherify
        self.tasks = tasks
        self.counts = counts
        self.sent = sent
        self.settle = settle
        self.interval = interval
        self._permits = asyncio.Semaphore(MAX_OUTSTANDING_BATCHES)
        self._watched: dict[str, Watched] = {}
        self._wake = asyncio.Event()

    @property
    def saturated(self) -> bool:
        return self._permits.locked()

    async def room(self) -> None:
        """Wait until a batch slot is free (backpressure on the readers)."""
        await self._permits.acquire()
        self._permits.release()

    def submit(self, batch: Batch) -> None:
        self.tasks.create_task(self._send(batch))

    async def _send(self, batch: Batch) -> None:
        await self._permits.acquire()
        try:
            action_id = await self.voucherify.bulk_upsert(batch.body())
        except RequestRejected as exc:
            self._permits.release()
            self._rejected(batch, exc)
            return
        except BaseException:
            self._permits.release()
            raise
        self.sent(action_id, batch)
        self.counts.batches += 1
        self.counts.customers_sent += len(batch.items)
        self._watched[action_id] = Watched(batch)
        self._wake.set()

    def _rejected(self, batch: Batch, exc: RequestRejected) -> None:
        """A 4xx for the whole batch: halve it until the customers at fault are isolated."""
        if len(batch.items) == 1:
            self.settle(None, batch.items, {batch.items[0].source_id: f"rejected: {exc}"})
            return
        log.warning("a batch of %d was rejected (%s); sending it in halves", len(batch.items), exc)
        half = len(batch.items) // 2
        self.submit(Batch(batch.items[:half]))
        self.submit(Batch(batch.items[half:]))

    async def poll(self) -> None:
        """Settle async actions until cancelled: one list call, then read only final ones."""
        while True:
            if not self._watched:
                self._wake.clear()
                await self._wake.wait()
            await asyncio.sleep(self.interval)
            listed = {a["id"]: a for a in await self.voucherify.recent_async_actions(100)}
            ready = []
            for action_id, watched in self._watched.items():
                status = listed.get(action_id, {}).get("status")
                if status is None and watched.misses < MISSES_BEFORE_DIRECT_READ:
                    watched.misses += 1  # not among the newest 100 (a busy project): wait
                    continue
                if status is None or status in FINAL_STATUSES:
                    ready.append(action_id)
            # Read the finished ones at once: each frees a batch slot, so none should wait
            # for another's round trip.
            actions = await asyncio.gather(*(self.voucherify.async_action(i) for i in ready))
            for action_id, action in zip(ready, actions, strict=True):
                if action["status"] not in FINAL_STATUSES:
                    continue
                watched = self._watched.pop(action_id)
                self._permits.release()
                self._final(action_id, watched.batch, action)
                # Settling a batch writes its customers to the state file (a few ms): let
                # the limiter release its next request between two, not after all of them.
                await asyncio.sleep(0)

    def _final(self, action_id: str, batch: Batch, action: dict[str, Any]) -> None:
        if action["status"] == "FAILED":
            if batch.attempt < BATCH_ATTEMPTS:
                self.counts.batches_resent += 1
                log.warning("async action %s FAILED; sending its batch again", action_id)
                self.settle(action_id, [], {})  # forget this action; the resend is new
                self.submit(Batch(batch.items, batch.attempt + 1))
                return
            error = f"async action FAILED: {failure_reason(action)}"
            self.settle(action_id, batch.items, {item.source_id: error for item in batch.items})
            return
        self.settle(action_id, batch.items, errors_by_source_id(action))


async def follow(
    voucherify: VoucherifyClient, action_ids: list[str], interval: float
) -> AsyncIterator[tuple[str, dict[str, Any] | None]]:
    """Yield `(id, final action)` for actions a killed run left in flight; None: unknown
    to Voucherify (never queued, or expired), so its batch must be sent again."""
    pending = list(action_ids)
    while pending:
        waiting = []
        for action_id in pending:
            try:
                action = await voucherify.async_action(action_id)
            except RequestRejected:
                yield action_id, None
                continue
            if action["status"] in FINAL_STATUSES:
                yield action_id, action
            else:
                waiting.append(action_id)
        pending = waiting
        if pending:
            await asyncio.sleep(interval)


def failure_reason(action: dict[str, Any]) -> str:
    return str((action.get("result") or {}).get("message") or "the async action FAILED")


def errors_by_source_id(action: dict[str, Any]) -> dict[str, str]:
    errors: dict[str, str] = {}
    for error in action["result"].get("errors") or []:
        if isinstance(error, dict) and error.get("source_id") is not None:
            text = ": ".join(str(error[k]) for k in ("key", "message", "details") if error.get(k))
            errors[str(error["source_id"])] = text or "rejected by Voucherify"
    return errors
