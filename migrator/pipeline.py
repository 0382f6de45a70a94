"""The one orchestrator: pages -> profiles -> customers -> batches -> confirmations -> checkpoint.

Everything streams. The source's pages are prefetched into a small queue; profiles that
must be read one by one (the Profile API) are read concurrently under a bound the source
sets, profiles that arrive complete (a warehouse) are mapped as they come; customers flow
into batches of 100 sent while reading goes on, and async actions are settled in the
background. Backpressure runs the other way: when too many batches wait for Voucherify,
reading waits. Memory stays flat however many profiles there are.

Each part lives in its own module: `batching` (bodies), `actions` (sending, polling,
settling), `ledger` (where every profile is accounted for), `checkpoint` (pages settled,
resume position).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator

from migrator.actions import ActionWatcher, poll_interval
from migrator.batching import Batcher, Item, fits_alone
from migrator.checkpoint import Checkpointer, PageTracker, TrackedPage
from migrator.config import RunOptions
from migrator.ledger import Ledger
from migrator.mapping import changed_fields, field_fingerprints, map_profile
from migrator.outcome import Counts, RunStopped, stop_cause
from migrator.sources import Page, Profile, ProfileUnreadable, Source
from migrator.state import StateStore
from migrator.voucherify import VoucherifyClient

__all__ = ["Counts", "Pipeline", "RunOptions", "RunStopped"]

log = logging.getLogger("migrator.pipeline")

#: Pages read ahead of the one being processed. A Profile API list call waits in the
#: limiter behind every profile request already queued (~0.4 s), and a 429 on it costs
#: 1 s more; 10 pages (1,000 ids, ~2 s of work at 1,000 req/s) keep the readers fed.
PREFETCH_PAGES = 10


class Pipeline:
    """Runs one migration over a source's pages, from the checkpoint's position."""

    def __init__(
        self,
        options: RunOptions,
        identifier: str,
        source: Source,
        voucherify: VoucherifyClient,
        state: StateStore,
        ledger: Ledger,
        checkpoint: Checkpointer,
    ) -> None:
        self.options = options
        self.identifier = identifier
        self.source = source
        self.voucherify = voucherify
        self.state = state
        self.ledger = ledger
        self.checkpoint = checkpoint
        self.counts = ledger.counts
        self.tracker = PageTracker(checkpoint)
        self._readers = asyncio.Semaphore(source.concurrency)

    async def run(self) -> Counts:
        """Migrate every page from the checkpoint on; raises `RunStopped` if it cannot go on."""
        try:
            if not self.options.dry_run:
                await self._preflight()
            async with asyncio.TaskGroup() as tasks:
                watcher = ActionWatcher(
                    self.voucherify,
                    tasks,
                    self.counts,
                    self._settle,
                    interval=poll_interval(self.voucherify.requests_per_minute),
                )
                batcher = Batcher(watcher.submit, lambda: watcher.saturated)
                self._watcher, self._batcher = watcher, batcher
                poller = tasks.create_task(watcher.poll())
                try:
                    await self._read_all(self.source.pages(self.checkpoint.position))
                    batcher.flush()
                    await self.tracker.finished.wait()
                finally:
                    batcher.close()
                    poller.cancel()
        except (Exception, BaseExceptionGroup) as exc:
            cause = stop_cause(exc)
            if cause is None:
                raise  # a bug, not an API or source fault: show it as it is
            self.state.commit()
            raise RunStopped(cause, self.checkpoint.position) from None
        finally:
            self.state.commit()
        return self.counts

    async def _preflight(self) -> None:
        """Check the Voucherify credentials before reading anything, and warn about a
        metadata schema that will reject undefined keys (those customers go to the ledger)."""
        schema = await self.voucherify.customer_metadata_schema()
        if schema and schema.get("allow_defined_only") and self.options.metadata_mode != "none":
            defined = ", ".join(sorted(schema.get("properties") or {})) or "none"
            log.warning(
                "Voucherify accepts only defined customer metadata keys (%s); customers with "
                "other keys will be rejected and recorded in the failure ledger",
                defined,
            )

    async def _read_all(self, pages: AsyncIterator[Page]) -> None:
        queue: asyncio.Queue[Page | None] = asyncio.Queue(PREFETCH_PAGES)

        async def prefetch() -> None:
            async for page in pages:
                await queue.put(page)
            await queue.put(None)

        async with asyncio.TaskGroup() as readers:  # its end: every profile task is done
            readers.create_task(prefetch())
            while (page := await queue.get()) is not None:
                tracked = self.tracker.add(page.next_position, len(page))
                for profile in page.profiles:
                    await self._migrate(tracked, profile)
                for segment_id in page.segment_ids:
                    await self._readers.acquire()
                    readers.create_task(self._read(tracked, segment_id))
        self.tracker.source_done()

    async def _read(self, page: TrackedPage, segment_id: str) -> None:
        try:
            try:
                profile = await self.source.read(segment_id)
            except ProfileUnreadable as exc:
                self.counts.profiles_read += 1
                self.ledger.failed(segment_id, None, str(exc), None)
                self.tracker.settle(page)
                return
            await self._migrate(page, profile)
        finally:
            self._readers.release()

    async def _migrate(self, page: TrackedPage, profile: Profile) -> None:
        """Map one profile, and send its customer unless nothing changed."""
        self.counts.profiles_read += 1
        segment_id = profile.segment_id
        mapped = map_profile(
            segment_id,
            profile.traits,
            profile.external_ids,
            identifier=self.identifier,
            metadata_mode=self.options.metadata_mode,
        )
        for warning in mapped.warnings:
            self.counts.warnings += 1
            log.info(warning)
        customer = mapped.customer
        if customer is None:
            self.ledger.no_identifier(segment_id)
            self.tracker.settle(page)
            return
        self.ledger.identified(segment_id)
        source_id = customer["source_id"]
        fingerprints = field_fingerprints(customer)
        written = None if self.options.full else self.state.written(source_id)
        previous = None if written is None else written[1]
        payload = customer if previous is None else changed_fields(customer, previous)
        if previous is not None and len(payload) == 1:
            self.counts.unchanged += 1
            if written is not None and written[0] != segment_id:
                self.state.set_owner(source_id, segment_id)  # a merge moved it
            self.tracker.settle(page)
            return
        if self.options.dry_run:
            self.ledger.would_send(payload)
            self.tracker.settle(page)
            return
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        if not fits_alone(body):
            self._failed(
                Item(page, segment_id, source_id, payload, body, fingerprints),
                "customer is larger than the 10 MB bulk limit",
            )
            return
        self._batcher.add(Item(page, segment_id, source_id, payload, body, fingerprints))
        await self._watcher.room()  # backpressure: hold this profile until Voucherify has room

    def _settle(self, items: list[Item], errors: dict[str, str]) -> None:
        """A batch is final: confirm what was written, record what was not."""
        self.ledger.confirmed(
            [
                (i.source_id, i.segment_id, i.fingerprints)
                for i in items
                if i.source_id not in errors
            ]
        )
        for item in items:
            if item.source_id in errors:
                self.ledger.failed(
                    item.segment_id, item.source_id, errors[item.source_id], item.payload
                )
        self.state.commit()  # durable before the checkpoint can move past these items
        for item in items:
            self.tracker.settle(item.page)

    def _failed(self, item: Item, error: str) -> None:
        self.ledger.failed(item.segment_id, item.source_id, error, item.payload)
        self.tracker.settle(item.page)
