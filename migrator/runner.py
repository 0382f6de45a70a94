"""Commands as plain async functions: lock, state, resume decision, clients, pipeline, files.

The CLI only parses options and renders; everything a command *decides* is here, so the
demo, the tests and the benchmarks drive the same code as `migrator run`. The runner owns
every lifetime: it opens the source and the Voucherify client, hands the pipeline the
start position once, and closes them.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from migrator.checkpoint import Checkpointer
from migrator.config import RunOptions, Settings
from migrator.exceptions import InvalidPosition
from migrator.http import RUN_RETRIES
from migrator.ledger import Ledger
from migrator.memory import calm_gc
from migrator.out_dir import open_out_dir
from migrator.outcome import Counts, RunStopped
from migrator.outputs import OutputFiles
from migrator.pipeline import Pipeline
from migrator.result import (
    Run,
    RunResult,
    invocation,
    options_changed,
    output_shape,
    refused_start,
)
from migrator.shape import OutputShape
from migrator.sources import Source
from migrator.sources.listed import ListedSource
from migrator.sources.profile_api import ProfileApiSource
from migrator.state import Checkpoint, StateStore
from migrator.status import stored_or_inferred
from migrator.voucherify import VoucherifyClient

log = logging.getLogger("migrator")


#: Called with the live counts as soon as a run starts (progress display).
OnStart = Callable[[Counts], None]
#: Called with the result of a run that is interrupted (cancelled), before the
#: cancellation goes on: the CLI still reports what it did and where it resumes.
OnInterrupted = Callable[["RunResult"], None]


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


# -- commands ----------------------------------------------------------------------------------


async def run_migration(
    settings: Settings,
    out_dir: Path,
    options: RunOptions,
    *,
    offset: str | None = None,
    restart: bool = False,
    on_start: OnStart | None = None,
    on_interrupted: OnInterrupted | None = None,
) -> RunResult:
    """`migrator run`: resume from the checkpoint unless told otherwise, then migrate.

    A run asking for another output shape than the one stored (`OptionsChanged`) must say
    `--restart` or `--full`; a dry run may preview any shape.
    """
    with open_out_dir(out_dir) as state:
        state.close_abandoned_runs()
        shape = output_shape(settings, options)
        saved, previous = state.checkpoint(), state.options()
        _check_shape(
            out_dir, shape, stored_or_inferred(previous, saved), saved, options, offset, restart
        )
        watermark = state.watermark(settings.source)
        source = make_source(settings, options, watermark, backfill=restart)
        start, resumed = offset, False
        if offset is None and not restart and saved is not None and not options.dry_run:
            start, resumed = saved.cursor, True
            log.info(
                "resuming run %d from its checkpoint (%s)",
                saved.run_id,
                f"position {start}" if start else "the start",
            )
        if not options.dry_run:
            state.set_options(shape.as_dict())
        command = "dry-run" if options.dry_run else "run"
        result = await _migrate(
            settings,
            out_dir,
            options,
            state,
            source,
            command,
            start,
            shape,
            resumed=resumed,
            saved=saved,
            on_start=on_start,
            on_interrupted=on_interrupted,
        )
        if result.error is not None and result.position == start and not options.dry_run:
            # The start was refused before anything was read: leave the state as it was.
            _restore(state, saved)
            state.set_options(previous)
        if result.completed and not options.dry_run:
            state.set_watermark(source.name, source.watermark())
        return result


def _check_shape(
    out_dir: Path,
    shape: OutputShape,
    stored: Mapping[str, Any] | None,
    saved: Checkpoint | None,
    options: RunOptions,
    offset: str | None,
    restart: bool,
) -> None:
    """Another shape than the stored one needs --restart, or --full when not resuming (a
    dry run may preview any)."""
    differences = shape.differences(stored) if stored else []
    if differences and not options.dry_run:
        resuming = saved is not None and offset is None
        if not (restart or (options.full and not resuming)):
            raise options_changed(out_dir, differences, saved, "run")
        log.info("options changed: %s; stored from now on", "; ".join(differences))


def _restore(state: StateStore, saved: Checkpoint | None) -> None:
    if saved is None:
        state.clear_checkpoint()
    else:
        state.set_checkpoint(saved.cursor, saved.run_id, saved.source)


async def retry_failed(
    settings: Settings,
    out_dir: Path,
    options: RunOptions,
    *,
    on_start: OnStart | None = None,
    on_interrupted: OnInterrupted | None = None,
) -> RunResult:
    """`migrator retry-failed`: read the ledger's profiles again and resend them, in the
    shape stored for the output directory.

    Entries leave the ledger only when their customer is confirmed (or the profile turns
    out to have no identifier); a retry that stops half-way loses nothing.
    """
    with open_out_dir(out_dir) as state:
        state.close_abandoned_runs()
        shape = output_shape(settings, options)
        stored = stored_or_inferred(state.options(), state.checkpoint())
        differences = shape.differences(stored) if stored else []
        if differences:
            raise options_changed(out_dir, differences, None, "retry-failed")
        options = replace(options, checkpointing=False, full=True)
        segment_ids = [f.segment_id for f in state.failures()]
        source = ListedSource(make_source(settings, options, backfill=True), segment_ids)
        return await _migrate(
            settings,
            out_dir,
            options,
            state,
            source,
            "retry-failed",
            None,
            shape,
            on_start=on_start,
            on_interrupted=on_interrupted,
        )


async def _migrate(
    settings: Settings,
    out_dir: Path,
    options: RunOptions,
    state: StateStore,
    source: Source,
    command: str,
    start: str | None,
    shape: OutputShape,
    *,
    resumed: bool = False,
    saved: Checkpoint | None = None,
    on_start: OnStart | None,
    on_interrupted: OnInterrupted | None,
) -> RunResult:
    run_id = state.start_run(command, start)
    counts = Counts()
    retries = RUN_RETRIES.set(counts)
    outputs = OutputFiles(out_dir)
    ledger = Ledger(state, outputs, run_id, counts, dry_run=options.dry_run)
    checkpoint = Checkpointer(
        state, run_id, source.name, start, enabled=options.checkpointing and not options.dry_run
    )
    run = Run(command, out_dir, options, shape, start, resumed, counts, checkpoint)
    _log_start(run_id, run)
    if on_start:
        on_start(counts)
    if options.dry_run:
        outputs.start_dry_run()
    try:
        async with source, VoucherifyClient(settings) as voucherify:
            pipeline = Pipeline(
                options, settings.identifier, source, voucherify, state, ledger, checkpoint
            )
            run.outcome, run.stopped = await _run(pipeline, source, state, ledger, options.dry_run)
        if run.stopped is not None and isinstance(run.stopped.cause, InvalidPosition):
            run.error = refused_start(run.stopped.cause, out_dir, options, shape, saved)
            run.outcome, run.stopped = "usage_error", None
    except asyncio.CancelledError:
        if on_interrupted is not None:
            on_interrupted(run.result())
        raise
    finally:
        RUN_RETRIES.reset(retries)
        closed = _close(outputs, state, ledger, run_id, run.outcome, counts)
        if closed is not None and run.stopped is None and run.outcome.startswith("completed"):
            # An output file that cannot be written stops the run resumably: the state
            # store holds everything, and the next run rewrites the files from it.
            run.stopped, run.outcome = RunStopped(closed, checkpoint.position), "stopped"
            state.finish_run(run_id, run.outcome, counts.as_dict())
        _log_end(run_id, run.result())
    if run.outcome.startswith("completed"):
        checkpoint.complete()
    return run.result()


def _log_start(run_id: int, run: Run) -> None:
    """The log file's first line of a run: its options (never a secret: none is an option)."""
    if run.command == "retry-failed":
        where = "reading the failed profiles again"
    else:
        where = ("resuming at " if run.resumed else "starting at ") + (
            run.start or "the first page"
        )
    log.info(
        "run %d started (pid %d): %s; source %s, identifier %s, mapping %s; %s",
        run_id,
        os.getpid(),
        invocation(run.command, run.out_dir, run.options, run.start),
        run.shape.source,
        run.shape.identifier,
        run.shape.mapping or "built-in",
        where,
    )


def _log_end(run_id: int, done: RunResult) -> None:
    """The log file's last line of a run: what it did and, if it did not complete, why
    and how to go on."""
    counts = done.counts
    log.info(
        "run %d ended: %s, exit %d; read %d, confirmed %d, unchanged %d, failed %d, "
        "retried requests %d%s%s",
        run_id,
        done.outcome,
        done.exit_code,
        counts.profiles_read,
        counts.confirmed,
        counts.unchanged,
        counts.failed,
        counts.retries,
        f"; stopped because: {done.reason}" if done.reason else "",
        f"; resume with: {done.resume_command}" if done.resume_command else "",
    )


# -- the end of a run --------------------------------------------------------------------------


async def _run(
    pipeline: Pipeline, source: Source, state: StateStore, ledger: Ledger, dry_run: bool
) -> tuple[str, RunStopped | None]:
    """The pipeline over the source, merges first: the outcome, and why it stopped."""
    merges = [] if dry_run else await source.merges()
    for merge in merges:  # the survivor inherits what the merged-away profile owned
        state.transfer_owner(merge.segment_id, merge.canonical_segment_id)
    try:
        with calm_gc():
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
