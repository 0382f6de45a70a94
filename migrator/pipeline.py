"""The one orchestrator: pages -> profiles -> customers -> batches -> confirmations -> checkpoint.

Everything streams: pages are prefetched into a small queue; profiles read one by one
(the Profile API) are read concurrently under the source's bound, complete ones (a
warehouse) are mapped as they come; customers flow into batches of 100 sent while reading
goes on, and async actions settle in the background. When too many batches wait for
Voucherify, reading waits, so memory stays flat however many profiles there are. The parts
live in `batching`, `actions`, `ledger` and `checkpoint`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from typing import Any

from migrator.actions import ActionWatcher, poll_interval
from migrator.batching import Batch, Batcher, Item, fits_alone
from migrator.changes import Fingerprints, diff, fingerprints, is_unchanged
from migrator.checkpoint import Checkpointer, PageTracker, TrackedPage
from migrator.config import RunOptions
from migrator.identity import seen_key
from migrator.ledger import Ledger, follow_sent
from migrator.logs import keeps_details
from migrator.mapping import Mapped, map_profile
from migrator.outcome import Counts, RunStopped, stop_cause
from migrator.outputs import json_bytes
from migrator.schema import MetadataSchema, SchemaReport, apply_schema
from migrator.sources import Page, Profile, ProfileUnreadable, Source, after_first
from migrator.state import StateStore
from migrator.voucherify import VoucherifyClient

__all__ = ["Counts", "Pipeline", "RunOptions", "RunStopped"]

log = logging.getLogger("migrator.pipeline")

#: Profiles read ahead of the page being processed, counted in whole pages (at least
#: one). A Profile API list call waits in the limiter behind every profile request already
#: queued (~0.4 s), and a 429 on it costs 1 s more; 1,000 ids (10 pages, ~2 s of work at
#: 1,000 req/s) keep the readers fed. A warehouse page carries 2,000 complete profiles:
#: one page ahead keeps the database busy while the last is mapped, and memory flat.
PREFETCH_PROFILES = 1000
#: Complete profiles mapped in a row before the event loop gets a turn (~1-2 ms of work).
YIELD_EVERY = 20
#: Complete profiles whose state is read at once (`StateStore.prefetch`): a few queries
#: per chunk instead of up to five statements per profile.
PREFETCH_CHUNK = 200


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
        self._in_flight: dict[str, asyncio.Future[None]] = {}
        self.mode = options.mode
        self.schema: MetadataSchema | None = None
        self.schema_report = SchemaReport()
        self.dropped: Counter[str] = Counter()
        self._details = keeps_details(log)  # per-profile lines: only if shown somewhere

    async def run(self) -> Counts:
        """Migrate every page from the checkpoint on; raises `RunStopped` if it cannot go on."""
        pages = self.source.pages(self.checkpoint.position)
        # The first page is read while Voucherify is asked: the first write leaves sooner.
        first = asyncio.ensure_future(anext(pages, None))
        try:
            await self._preflight()  # a dry run too: it reports what the schema would do
            async with asyncio.TaskGroup() as tasks:
                interval = poll_interval(self.voucherify.requests_per_minute)
                if not self.options.dry_run:
                    await follow_sent(self.voucherify, self.state, self.ledger, interval)
                watcher = ActionWatcher(
                    self.voucherify,
                    tasks,
                    self.counts,
                    self._sent,
                    self._settle,
                    interval=interval,
                )
                batcher = Batcher(watcher.submit, lambda: watcher.saturated)
                self._watcher, self._batcher = watcher, batcher
                poller = tasks.create_task(watcher.poll())
                try:
                    await self._read_all(after_first(first, pages))
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
            first.cancel()  # if reading never started: nothing lost, nothing left running
            await asyncio.gather(first, return_exceptions=True)
            self.state.commit()
            self.summarise()
        return self.counts

    async def _preflight(self) -> None:
        """Check the Voucherify credentials before reading anything, pace under the limit
        Voucherify announces when it is lower than configured, say which budget bounds the
        run, and read the metadata schema the customers are fitted to."""
        schema = await self.voucherify.customer_metadata_schema()
        self.voucherify.adopt_announced_limit()
        writes = self.voucherify.customers_per_second()
        ceiling = self.source.ceiling
        if ceiling is not None and writes < ceiling:
            log.warning(
                "Voucherify's budget of %g requests/min bounds this run: about %.0f customers/s "
                "can be written, while the source allows %.0f profiles/s. If your plan allows "
                "more, raise VOUCHERIFY_RATE_LIMIT.",
                self.voucherify.requests_per_minute,
                writes,
                ceiling,
            )
        elif ceiling is None:  # a warehouse: Voucherify always sets the pace
            log.info(
                "Voucherify's budget of %g requests/min sets the pace: about %.0f customers/s",
                self.voucherify.requests_per_minute,
                writes,
            )
        try:
            self.schema = MetadataSchema.from_body(schema)
        except ValueError:
            log.warning("Voucherify's customer metadata schema could not be read; not checked")
            self.schema = None
        if self.schema is not None and not self.schema.checks_anything:
            self.schema = None

    async def _read_all(self, pages: AsyncIterator[Page]) -> None:
        queue: asyncio.Queue[Page | None] = asyncio.Queue()
        ahead = 0  # profiles in the queue
        taken = asyncio.Event()

        async def prefetch() -> None:
            nonlocal ahead
            async for page in pages:
                await queue.put(page)
                ahead += len(page)
                while ahead >= PREFETCH_PROFILES:
                    taken.clear()
                    await taken.wait()
            await queue.put(None)

        async with asyncio.TaskGroup() as readers:  # its end: every profile task is done
            readers.create_task(prefetch())
            while (page := await queue.get()) is not None:
                ahead -= len(page)
                taken.set()
                tracked = self.tracker.add(page.next_position, len(page))
                await self._migrate_complete(tracked, page.profiles)
                for segment_id in page.segment_ids:
                    await self._readers.acquire()
                    readers.create_task(self._read(tracked, segment_id))
        self.tracker.source_done()

    async def _migrate_complete(self, page: TrackedPage, profiles: Sequence[Profile]) -> None:
        """Profiles that arrived complete (a warehouse page), `PREFETCH_CHUNK` at a time:
        map them, read what the state store holds about them in one query per table
        (`StateStore.prefetch`), then settle or send each."""
        for start in range(0, len(profiles), PREFETCH_CHUNK):
            chunk = profiles[start : start + PREFETCH_CHUNK]
            mapped = [self._map(profile) for profile in chunk]
            self.state.prefetch(
                [profile.segment_id for profile in chunk],
                [m.customer["source_id"] for m in mapped if m.customer is not None],
            )
            for n, (profile, customer) in enumerate(zip(chunk, mapped, strict=True), 1):
                await self._migrate(page, profile, customer)
                if n % YIELD_EVERY == 0:
                    # Mapping never waits by itself: let sends and polls go out between.
                    await asyncio.sleep(0)

    async def _read(self, page: TrackedPage, segment_id: str) -> None:
        try:
            try:
                profile = await self.source.read(segment_id)
            except ProfileUnreadable as exc:
                self.counts.profiles_read += 1
                self.ledger.failed(segment_id, None, str(exc), None)
                self.tracker.settle(page)
                return
            await self._migrate(page, profile, self._map(profile))
        finally:
            self._readers.release()

    async def _migrate(self, page: TrackedPage, profile: Profile, mapped: Mapped) -> None:
        """Send one mapped profile's customer unless nothing changed."""
        self.counts.profiles_read += 1
        customer = self._owned_customer(profile, mapped)
        if customer is None:
            self.tracker.settle(page)
            return
        segment_id, source_id = profile.segment_id, customer["source_id"]
        # One item per source_id in flight: the next waits for the last to settle, so a
        # batch never holds two, and it is compared with what was really written.
        while (settled := self._in_flight.get(source_id)) is not None:
            await settled
        written = self.state.written(source_id)
        if written is not None and written[0] != segment_id:
            self.state.set_owner(source_id, segment_id)  # a merge or a new owner took it
        if self.schema is not None:
            customer = self._checked(segment_id, customer, creating=written is None)
        payload, prints = self._payload(customer, None if written is None else written[1])
        if payload is None:
            self.tracker.settle(page)
            return
        body = json_bytes(payload)
        item = Item(page, segment_id, source_id, payload, body, prints)
        if not fits_alone(body):
            self._failed(item, "customer is larger than the 10 MB bulk limit")
            return
        self._in_flight[source_id] = asyncio.get_running_loop().create_future()
        self._batcher.add(item)
        await self._watcher.room()  # backpressure: hold this profile until Voucherify has room

    def _map(self, profile: Profile) -> Mapped:
        return map_profile(
            profile.segment_id,
            profile.traits,
            profile.external_ids,
            identifier=self.identifier,
            metadata_mode=self.mode,
            spec=self.options.mapping,
        )

    def _owned_customer(self, profile: Profile, mapped: Mapped) -> dict[str, Any] | None:
        """The profile's customer, if it has one and owns its source_id; otherwise the
        profile is accounted for here (ledger, no-identifier or duplicate list)."""
        segment_id = profile.segment_id
        self.counts.warnings += len(mapped.warnings)
        for field in mapped.dropped:
            self.dropped[field] += 1
        if self._details:
            for warning in mapped.warnings:
                log.info(warning)
            for field in mapped.dropped:
                log.info("%s dropped for %s: a type or format it cannot take", field, segment_id)
        customer = mapped.customer
        if mapped.refused is not None:
            self.ledger.failed(segment_id, mapped.source_id, mapped.refused, None)
            return None
        if customer is None:
            self.ledger.no_identifier(segment_id)
            return None
        self.ledger.identified(segment_id)
        source_id = customer["source_id"]
        owner = self.state.claim(
            source_id,
            segment_id,
            lambda: profile.seen or seen_key(profile.external_ids, self.identifier, source_id),
            self.ledger.run_id,
        )
        if owner != segment_id:
            self.ledger.duplicate(segment_id, source_id, owner)
            return None
        return customer

    def _payload(
        self, customer: dict[str, Any] | None, previous: Fingerprints | None
    ) -> tuple[dict[str, Any] | None, Fingerprints]:
        """What to send (None: nothing, the profile is settled) and the hashes to keep."""
        if customer is None:
            return None, {}  # refused by the schema check: in the ledger
        if previous is None and self.options.dry_run:
            # Never written, and a dry run remembers nothing: the whole customer, no hashes.
            self.ledger.would_send(customer)
            return None, {}
        prints = fingerprints(customer)
        payload = diff(
            customer,
            previous or {},
            clear_removed=not self.options.keep_removed,
            send_all=self.options.full,
            current=prints,
        )
        if previous is not None and not self.options.full and is_unchanged(payload):
            self.counts.unchanged += 1
            return None, prints
        if self.options.dry_run:
            self.ledger.would_send(payload)
            return None, prints
        return payload, prints

    def _checked(
        self, segment_id: str, customer: dict[str, Any], *, creating: bool
    ) -> dict[str, Any] | None:
        """The customer with its metadata fitted to Voucherify's schema; None: refused
        (recorded in the ledger, no API call spent)."""
        assert self.schema is not None
        outcome = apply_schema(
            customer.get("metadata") or {},
            self.schema,
            self.options.schema_policy,
            creating=creating,
        )
        self.schema_report.add(outcome)
        if outcome.refused is not None:
            self.ledger.failed(segment_id, customer["source_id"], outcome.refused, customer)
            return None
        checked = {k: v for k, v in customer.items() if k != "metadata"}
        if outcome.metadata:
            checked["metadata"] = outcome.metadata
        return checked

    def summarise(self) -> None:
        """Warning-level lines a human should read once per run, not once per profile;
        the same figures go to the report."""
        self.counts.dropped_for_type = dict(sorted(self.dropped.items()))
        self.counts.metadata_schema = {
            key: {
                status: getattr(tally, status)
                for status in ("filled", "coerced", "dropped", "refused", "sent", "undefined")
                if getattr(tally, status)
            }
            for key, tally in sorted(self.schema_report.keys.items())
        }
        for field, count in sorted(self.dropped.items()):
            log.warning(
                "%s: %d value%s dropped, of a type or format the field cannot take "
                "(segment_ids in the log with -v or --log-file)",
                field,
                count,
                "" if count == 1 else "s",
            )
        for line in self.schema_report.warnings():
            log.warning(line)

    def _sent(self, action_id: str, batch: Batch) -> None:
        self.state.record_sent(
            action_id,
            [
                {
                    "source_id": i.source_id,
                    "segment_id": i.segment_id,
                    "fingerprints": i.fingerprints,
                    "payload": i.payload,
                }
                for i in batch.items
            ],
            self.ledger.run_id,
        )

    def _settle(self, action_id: str | None, items: list[Item], errors: dict[str, str]) -> None:
        """A batch is final: confirm what was written, record what was not."""
        if action_id is not None:
            self.state.forget_sent(action_id)
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
            self._released(item.source_id)
            self.tracker.settle(item.page)

    def _failed(self, item: Item, error: str) -> None:
        self.ledger.failed(item.segment_id, item.source_id, error, item.payload)
        self._released(item.source_id)
        self.tracker.settle(item.page)

    def _released(self, source_id: str) -> None:
        settled = self._in_flight.pop(source_id, None)
        if settled is not None:
            settled.set_result(None)
