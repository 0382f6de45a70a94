"""Commands as plain async functions: lock, state, resume decision, clients, pipeline, files.

The CLI only parses options and renders; everything a command *decides* is here, so the
demo, the tests and the benchmarks drive the same code as `migrator run`. The runner owns
every lifetime: it opens the source and the Voucherify client, hands the pipeline the
start position once, and closes them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from migrator.checkpoint import Checkpointer
from migrator.config import RunOptions, Settings
from migrator.exceptions import ConfigError
from migrator.ledger import Ledger
from migrator.lock import RunLock, holder
from migrator.outcome import Counts, RunStopped
from migrator.outputs import OutputFiles
from migrator.pipeline import Pipeline
from migrator.sources import Source
from migrator.sources.listed import ListedSource
from migrator.sources.profile_api import ProfileApiSource
from migrator.state import STATE_FILE, StateStore
from migrator.voucherify import VoucherifyClient

log = logging.getLogger("migrator")

EXIT_OK = 0
EXIT_FAILURES = 1
EXIT_CONFIG = 2
EXIT_STOPPED = 3
EXIT_LOCKED = 4
EXIT_INTERRUPTED = 130

#: Called with the live counts as soon as a run starts (progress display).
OnStart = Callable[[Counts], None]


@dataclass(frozen=True)
class RunResult:
    """What a command did, for the summary, the report and the exit code."""

    command: str
    exit_code: int
    outcome: str
    counts: Counts
    out_dir: Path
    start_cursor: str | None = None
    resumed: bool = False
    stopped: RunStopped | None = None

    @property
    def resume_cursor(self) -> str | None:
        return self.stopped.position if self.stopped else None

    def report(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "command": self.command,
            "outcome": self.outcome,
            "exit_code": self.exit_code,
            "start_cursor": self.start_cursor,
            "resumed_from_checkpoint": self.resumed,
            "counts": self.counts.as_dict(),
            "out_dir": str(self.out_dir),
        }
        if self.stopped is not None:
            data["stopped_because"] = str(self.stopped)
            data["hint"] = self.stopped.hint
            data["resume_cursor"] = self.stopped.position
            data["resume_command"] = resume_command(self.stopped.position)
        return data


def resume_command(cursor: str | None) -> str:
    return f"migrator run --offset {cursor}" if cursor else "migrator run --restart"


def make_source(
    settings: Settings, options: RunOptions, watermark: str | None = None, *, backfill: bool = False
) -> Source:
    """The source the settings name. Only the traits the mapping reads are fetched (one
    traits page per profile on the Profile API, fewer rows from a warehouse).

    `watermark`: where the last completed Profiles Sync run left off; a backfill (first
    run, --full, --restart) ignores it and reads every profile.
    """
    if settings.source == "profiles-sync":
        from migrator.sources.profiles_sync import ProfilesSyncSource  # SQLAlchemy: lazily

        return ProfilesSyncSource(
            settings.profiles_sync_url,
            settings.profiles_sync_schema,
            identifier=settings.identifier,
            traits=options.traits_to_fetch(),
            watermark=None if backfill else watermark,
            full=options.full,
            overlap_seconds=settings.profiles_sync_overlap,
            secrets=settings.secrets,
        )
    return ProfileApiSource(settings, traits=options.traits_to_fetch())


async def run_migration(
    settings: Settings,
    out_dir: Path,
    options: RunOptions,
    *,
    offset: str | None = None,
    restart: bool = False,
    on_start: OnStart | None = None,
) -> RunResult:
    """`migrator run`: resume from the checkpoint unless told otherwise, then migrate."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with RunLock(out_dir), StateStore(out_dir) as state:
        state.close_abandoned_runs()
        watermark = state.watermark(settings.source)
        source = make_source(settings, options, watermark, backfill=restart)
        saved = state.checkpoint()
        start, resumed = offset, False
        if offset is None and not restart and saved is not None and not options.dry_run:
            if saved.source != source.name:
                raise ConfigError(
                    f"the checkpoint in {out_dir} belongs to a {saved.source} run, not "
                    f"{source.name}; finish it with that source, or start over with --restart"
                )
            start, resumed = saved.cursor, True
            log.info(
                "resuming run %d from its checkpoint (%s)",
                saved.run_id,
                f"position {start}" if start else "the start",
            )
        command = "dry-run" if options.dry_run else "run"
        result = await _migrate(
            settings, out_dir, options, state, source, command, start, on_start=on_start
        )
        if result.outcome.startswith("completed") and not options.dry_run:
            state.set_watermark(source.name, source.watermark())
        return replace(result, resumed=resumed)


async def retry_failed(
    settings: Settings,
    out_dir: Path,
    options: RunOptions,
    *,
    on_start: OnStart | None = None,
) -> RunResult:
    """`migrator retry-failed`: read the ledger's profiles again and resend them.

    Entries leave the ledger only when their customer is confirmed (or the profile turns
    out to have no identifier); a retry that stops half-way loses nothing.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    with RunLock(out_dir), StateStore(out_dir) as state:
        state.close_abandoned_runs()
        options = replace(options, checkpointing=False, full=True)
        segment_ids = [f.segment_id for f in state.failures()]
        source = ListedSource(make_source(settings, options, backfill=True), segment_ids)
        return await _migrate(
            settings, out_dir, options, state, source, "retry-failed", None, on_start=on_start
        )


async def _migrate(
    settings: Settings,
    out_dir: Path,
    options: RunOptions,
    state: StateStore,
    source: Source,
    command: str,
    start: str | None,
    *,
    on_start: OnStart | None,
) -> RunResult:
    run_id = state.start_run(command, start)
    counts = Counts()
    outputs = OutputFiles(out_dir)
    ledger = Ledger(state, outputs, run_id, counts, dry_run=options.dry_run)
    checkpoint = Checkpointer(
        state, run_id, source.name, start, enabled=options.checkpointing and not options.dry_run
    )
    if on_start:
        on_start(counts)
    stopped: RunStopped | None = None
    outcome = "interrupted"
    if options.dry_run:
        outputs.start_dry_run()
    try:
        async with source, VoucherifyClient(settings) as voucherify:
            pipeline = Pipeline(
                options, settings.identifier, source, voucherify, state, ledger, checkpoint
            )
            outcome, stopped = await _run(pipeline, source, state, ledger, options.dry_run)
    except BaseException:
        _close(outputs, state, ledger, run_id, outcome, counts)
        raise
    closed = _close(outputs, state, ledger, run_id, outcome, counts)
    if closed is not None and stopped is None:
        # An output file that cannot be written stops the run resumably: the state store
        # holds everything, and the next run rewrites the files from it.
        stopped, outcome = RunStopped(closed, checkpoint.position), "stopped"
        state.finish_run(run_id, outcome, counts.as_dict())
    if outcome.startswith("completed"):
        checkpoint.complete()
    code = EXIT_STOPPED if stopped else (EXIT_OK if counts.failed == 0 else EXIT_FAILURES)
    return RunResult(
        command=command,
        exit_code=code,
        outcome=outcome,
        counts=counts,
        out_dir=out_dir,
        start_cursor=start,
        stopped=stopped,
    )


async def _run(
    pipeline: Pipeline, source: Source, state: StateStore, ledger: Ledger, dry_run: bool
) -> tuple[str, RunStopped | None]:
    """The pipeline over the source, merges first: the outcome, and why it stopped."""
    merges = [] if dry_run else await source.merges()
    for merge in merges:  # the survivor inherits what the merged-away profile owned
        state.transfer_owner(merge.segment_id, merge.canonical_segment_id)
    try:
        await pipeline.run()
        if merges:
            ledger.merged(merges)
    except RunStopped as exc:
        return "stopped", exc
    except OSError as exc:  # merged-profiles.csv could not be written
        return "stopped", RunStopped(exc, pipeline.checkpoint.position)
    return ("completed" if ledger.counts.failed == 0 else "completed_with_failures"), None


def _close(
    outputs: OutputFiles,
    state: StateStore,
    ledger: Ledger,
    run_id: int,
    outcome: str,
    counts: Counts,
) -> OSError | None:
    """Record the run's end and rewrite the lists; an output file that cannot be written is
    returned, never raised over the reason the run is ending."""
    state.finish_run(run_id, outcome, counts.as_dict())
    try:
        outputs.close()
        ledger.rewrite_files()
    except OSError as exc:
        log.warning("the output files in %s could not be written: %s", outputs.out_dir, exc)
        return exc
    return None


def status(out_dir: Path) -> dict[str, Any]:
    """`migrator status`: what the state store says, without taking the lock."""
    if not (out_dir / STATE_FILE).exists():
        return {
            "state_file": None,
            "running_pid": None,
            "runs": [],
            "checkpoint": None,
            "customers_confirmed": 0,
            "failures_pending": 0,
            "profiles_without_identifier": 0,
            "duplicate_identifiers": 0,
        }
    running_pid = holder(out_dir)
    with StateStore(out_dir) as state:
        checkpoint = state.checkpoint()
        runs = state.recent_runs(10)
        if running_pid is None:
            # Nobody holds the directory: a run still marked running was killed (the next
            # run records it so; say it now).
            for run in runs:
                if run["outcome"] == "running":
                    run["outcome"] = "killed"
        return {
            "state_file": str(state.path),
            "running_pid": running_pid,
            "runs": runs,
            "checkpoint": None
            if checkpoint is None
            else {
                "cursor": checkpoint.cursor,
                "run_id": checkpoint.run_id,
                "source": checkpoint.source,
            },
            "customers_confirmed": state.confirmed_count(),
            "failures_pending": state.failure_count(),
            "profiles_without_identifier": state.no_identifier_count(),
            "duplicate_identifiers": state.duplicate_count(),
        }
