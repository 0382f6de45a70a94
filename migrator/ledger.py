"""Where every profile is accounted for: confirmed, failed, listed, or merged away.

One object over the state store (the truth) and the output files (for people), so the
pipeline never writes either directly and a dry run records nothing durable.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from migrator.actions import errors_by_source_id, follow
from migrator.outcome import Counts
from migrator.outputs import OutputFiles
from migrator.sources import Merge
from migrator.state import Failure, StateStore
from migrator.voucherify import VoucherifyClient

log = logging.getLogger("migrator.pipeline")


class Ledger:
    def __init__(
        self, state: StateStore, outputs: OutputFiles, run_id: int, counts: Counts, *, dry_run: bool
    ) -> None:
        self.state = state
        self.outputs = outputs
        self.run_id = run_id
        self.counts = counts
        self.dry_run = dry_run

    def failed(
        self, segment_id: str, source_id: str | None, error: str, payload: dict[str, Any] | None
    ) -> None:
        self.counts.failed += 1
        log.warning("customer failed for %s: %s", segment_id, error)
        if not self.dry_run:
            failure = Failure(segment_id, source_id, error, payload)
            self.state.record_failure(failure, self.run_id)
            self.outputs.append_failure(failure.as_record())

    def no_identifier(self, segment_id: str) -> None:
        self.counts.no_identifier += 1
        if self.state.add_no_identifier(segment_id, self.run_id):
            self.outputs.append_no_identifier(segment_id)
        self.state.clear_failure(segment_id)

    def duplicate(self, segment_id: str, source_id: str, owner: str) -> None:
        """Another profile owns this identifier: this one is listed, not sent (the state
        store lists it; `rewrite_files` counts the list)."""
        log.info("%s shares its identifier with %s, which owns the customer", segment_id, owner)

    def identified(self, segment_id: str) -> None:
        """The profile has the identifier now: it leaves the no-identifier list."""
        self.state.remove_no_identifier(segment_id)

    def would_send(self, payload: dict[str, Any]) -> None:
        self.counts.would_send += 1
        self.outputs.append_dry_run(payload)

    def confirmed(self, rows: list[tuple[str, str, dict[str, str]]]) -> None:
        """`(source_id, segment_id, fingerprints)` are written (committed by the caller)."""
        self.state.confirm(rows, self.run_id)
        self.counts.confirmed += len(rows)

    def merged(self, merges: Iterable[Merge]) -> None:
        """List the customers that only a merged-away profile fed; they are never deleted.

        A customer the survivor also resolves to has been moved to it (`set_owner`) by the
        time the run completes, so it is no longer found under the merged-away id.
        """
        for merge in merges:
            for source_id in self.state.customers_of(merge.segment_id):
                self.counts.merged += 1
                log.info("customer of merged profile %s kept, listed", merge.segment_id)
                if self.state.add_merged(
                    merge.segment_id, merge.canonical_segment_id, source_id, self.run_id
                ):
                    self.outputs.append_merged(
                        merge.segment_id, merge.canonical_segment_id, source_id
                    )
        self.state.commit()

    def rewrite_files(self) -> None:
        """Make the lists say exactly what the state store holds (no line twice)."""
        # A profile can lose ownership after it was read (the owner came later): count
        # what the list holds, not what this run saw happen.
        self.counts.duplicates = self.state.duplicate_count()
        self.outputs.rewrite(
            self.state.no_identifier_ids(),
            (f.as_record() for f in self.state.failures()),
            self.state.merged(),
            self.state.duplicates(),
        )


async def follow_sent(
    voucherify: VoucherifyClient, state: StateStore, ledger: Ledger, interval: float
) -> None:
    """Settle the batches a killed run sent and never saw confirmed, before reading.

    Their profiles come before the checkpoint's position is passed, so they are read
    again: once confirmed here, they are unchanged and not sent twice. A batch whose
    action FAILED or is unknown is simply forgotten, and sent again when read.
    """
    sent = dict(state.sent_batches())
    if not sent:
        return
    log.info("following %d batches a previous run left unconfirmed", len(sent))
    async for action_id, action in follow(voucherify, list(sent), interval):
        items = sent[action_id]
        if action is not None and action["status"] == "DONE":
            errors = errors_by_source_id(action)
            ledger.confirmed(
                [
                    (i["source_id"], i["segment_id"], i["fingerprints"])
                    for i in items
                    if i["source_id"] not in errors
                ]
            )
            for i in items:
                if i["source_id"] in errors:
                    ledger.failed(
                        i["segment_id"], i["source_id"], errors[i["source_id"]], i["payload"]
                    )
        state.forget_sent(action_id)
        state.commit()
