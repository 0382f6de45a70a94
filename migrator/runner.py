"""Commands as plain async functions: lock, state, resume decision, pipeline, final files.

The CLI only parses options and renders; everything a command *decides* is here, so the
demo, the tests and the benchmarks drive the same code as `migrator run`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from migrator.config import Settings
from migrator.lock import RunLock, holder
from migrator.outputs import OutputFiles
from migrator.pipeline import Counts, Pipeline, RunOptions, RunStopped
from migrator.segment import ProfilePage, SegmentClient
from migrator.state import STATE_FILE, StateStore

log = logging.getLogger("migrator")

EXIT_OK = 0
EXIT_FAILURES = 1
EXIT_CONFIG = 2
EXIT_STOPPED = 3
EXIT_LOCKED = 4
EXIT_INTERRUPTED = 130


@dataclass
class RunResult:
    """What a command did, for the summary, the report and the exit code."""

    command: str
    exit_code: int
    outcome: str
    counts: Counts
    start_cursor: str | None = None
    resumed: bool = False
    stopped: RunStopped | None = None
    out_dir: Path = field(default_factory=Path.cwd)

    @property
    def resume_cursor(self) -> str | None:
        return self.stopped.cursor if self.stopped else None

    def report(self, state: dict[str, Any] | None = None) -> dict[str, Any]:
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
            data["resume_cursor"] = self.stopped.cursor
            data["resume_command"] = resume_command(self.stopped.cursor)
        if state:
            data.update(state)
        return data


def resume_command(cursor: str | None) -> str:
    return f"migrator run --offset {cursor}" if cursor else "migrator run --restart"


OnStart = Callable[[Pipeline], None]


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
        checkpoint = state.checkpoint()
        resumed = False
        start = offset
        if offset is None and not restart and checkpoint is not None and not options.dry_run:
            start = checkpoint.cursor
            resumed = True
            log.info(
                "resuming run %d from its checkpoint (%s)",
                checkpoint.run_id,
                f"cursor {start}" if start else "the first page",
            )
        command = "dry-run" if options.dry_run else "run"
        run_id = state.start_run(command, start)
        outputs = OutputFiles(out_dir)
        pipeline = Pipeline(settings, options, state, outputs, run_id)
        # A stop before the first page settles must point back here, not at the first page.
        pipeline.checkpoint_cursor = start
        if options.checkpointing and not options.dry_run:
            state.set_checkpoint(start, run_id)
        if on_start:
            on_start(pipeline)

        def source(segment: SegmentClient) -> AsyncIterator[ProfilePage]:
            return segment.profile_pages(start)

        result = await _drive(pipeline, source, command, state, outputs, out_dir)
        result.start_cursor, result.resumed = start, resumed
        if result.outcome.startswith("completed") and options.checkpointing and not options.dry_run:
            state.clear_checkpoint()
        return result


async def retry_failed(
    settings: Settings,
    out_dir: Path,
    options: RunOptions,
    *,
    on_start: OnStart | None = None,
) -> RunResult:
    """`migrator retry-failed`: read the ledger's profiles again from Segment and resend them."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with RunLock(out_dir), StateStore(out_dir) as state:
        state.close_abandoned_runs()
        segment_ids = [f.segment_id for f in state.failures()]
        run_id = state.start_run("retry-failed", None)
        outputs = OutputFiles(out_dir)
        options.checkpointing = False
        options.full = True
        pipeline = Pipeline(settings, options, state, outputs, run_id)
        if on_start:
            on_start(pipeline)

        async def pages(_: SegmentClient) -> AsyncIterator[ProfilePage]:
            for i in range(0, len(segment_ids), 100):
                yield ProfilePage(None, tuple(segment_ids[i : i + 100]), None)

        # Entries leave the ledger only when their customer is confirmed (or the profile
        # turns out to have no identifier); a retry that stops half-way loses nothing.
        return await _drive(pipeline, pages, "retry-failed", state, outputs, out_dir)


async def _drive(
    pipeline: Pipeline,
    source: Callable[[SegmentClient], AsyncIterator[ProfilePage]],
    command: str,
    state: StateStore,
    outputs: OutputFiles,
    out_dir: Path,
) -> RunResult:
    start = pipeline.checkpoint_cursor
    stopped: RunStopped | None = None
    outcome = "interrupted"
    try:
        counts = await pipeline.run(pipeline.checkpoint_cursor, source)
        outcome = "completed" if counts.failed == 0 else "completed_with_failures"
    except RunStopped as exc:
        stopped = exc
        counts = pipeline.counts
        outcome = "stopped"
    finally:
        state.finish_run(pipeline.run_id, outcome, pipeline.counts.as_dict())
        outputs.rewrite(state.no_identifier_ids(), (f.as_record() for f in state.failures()))
    code = EXIT_STOPPED if stopped else (EXIT_OK if counts.failed == 0 else EXIT_FAILURES)
    return RunResult(command, code, outcome, counts, start, False, stopped, out_dir)


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
            else {"cursor": checkpoint.cursor, "run_id": checkpoint.run_id},
            "customers_confirmed": state.confirmed_count(),
            "failures_pending": state.failure_count(),
            "profiles_without_identifier": state.no_identifier_count(),
        }
