"""What a command did and how to go on: `RunResult`, the exit codes, and the command lines
and messages that name the run's options (the resume command, a refused start, options
that differ from the stored ones). No I/O."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from migrator.checkpoint import Checkpointer
from migrator.config import RunOptions, Settings, SourceName
from migrator.exceptions import InvalidPosition, OptionsChanged
from migrator.mapping import MetadataMode
from migrator.outcome import Counts, RunStopped
from migrator.shape import OutputShape
from migrator.state import Checkpoint

EXIT_OK = 0
EXIT_FAILURES = 1
EXIT_CONFIG = 2
EXIT_STOPPED = 3
EXIT_LOCKED = 4
EXIT_INTERRUPTED = 130


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
    options: RunOptions = field(default_factory=RunOptions)
    shape: OutputShape | None = None
    #: Where a run that did not complete resumes (its checkpoint).
    position: str | None = None
    #: Why a run could not start where it was asked to (exit 2), with what to do instead.
    error: str | None = None

    @property
    def completed(self) -> bool:
        return self.outcome.startswith("completed")

    @property
    def resume_cursor(self) -> str | None:
        return None if self.completed or self.error is not None else self.position

    @property
    def resume_command(self) -> str | None:
        """The command that goes on from here, complete and runnable from any folder."""
        if self.completed or self.error is not None:
            return None
        return resume_command(self)

    @property
    def reason(self) -> str | None:
        """Why the run did not complete, in one line."""
        if self.error is not None:
            return self.error
        if self.stopped is not None:
            return str(self.stopped)
        if self.outcome == "interrupted":
            return "interrupted (Ctrl-C or SIGTERM)"
        return None

    def report(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "command": self.command,
            "outcome": self.outcome,
            "exit_code": self.exit_code,
            "start_cursor": self.start_cursor,
            "resumed_from_checkpoint": self.resumed,
            "options": None if self.shape is None else self.shape.as_dict(),
            "counts": self.counts.as_dict(),
            "out_dir": str(self.out_dir.absolute()),
            "stopped_because": self.reason,
            "hint": self.stopped.hint if self.stopped is not None else None,
            "resume_cursor": self.resume_cursor,
            "resume_command": self.resume_command,
        }
        return data


def resume_command(result: RunResult) -> str:
    """`migrator ...` that continues `result`'s work with the same options and files.

    Paths are absolute, so it runs from any folder. A dry run keeps no checkpoint: it is
    run again from the start.
    """
    return command_line(
        result.command, result.out_dir, result.options, result.shape, result.position
    )


def command_line(
    command: str,
    out_dir: Path,
    options: RunOptions,
    shape: OutputShape | None,
    position: str | None,
) -> str:
    if command == "retry-failed":
        words = ["migrator", "retry-failed"]
    else:
        words = ["migrator", "run"]
        if options.dry_run:
            words.append("--dry-run")
        elif position is not None:
            words += ["--offset", position]
        else:
            words.append("--restart")
        if options.full and not options.dry_run:
            words.append("--full")
        if shape is not None and shape.source != SourceName.profile_api.value:
            words += ["--source", shape.source]
        if shape is not None and shape.metadata != MetadataMode.metadata.value:
            words += ["--metadata", shape.metadata]
        if shape is not None and shape.mapping is not None:
            words += ["--mapping", shape.mapping]
    words += ["--out-dir", str(out_dir.absolute())]
    if options.env_file is not None:
        words += ["--env-file", str(options.env_file)]
    return shlex.join(words)


def output_shape(settings: Settings, options: RunOptions) -> OutputShape:
    """The options of this run that shape the customers it writes (stored with the state)."""
    return OutputShape(
        source=settings.source,
        metadata=str(options.mode),
        identifier=settings.identifier,
        mapping=options.mapping_path,
    )


def options_changed(
    out_dir: Path, differences: list[str], saved: Checkpoint | None, command: str
) -> OptionsChanged:
    where = out_dir.absolute()
    asked = "; ".join(differences)
    if command == "retry-failed":
        message = (
            f"retry-failed resends customers in the shape stored for {where}, but was asked "
            f"for {asked}. Drop the option; to change the shape, run `migrator run --full` "
            "with the new options first."
        )
    elif saved is not None:
        message = (
            f"this run asks for {asked}: the options stored with the checkpoint of run "
            f"{saved.run_id} in {where}. A plain `migrator run` resumes with the stored "
            "options; to use the new ones, start over with --restart (add --full to resend "
            "every customer)."
        )
    else:
        message = (
            f"this run asks for {asked}: the options the customers in {where} were written "
            "with. A plain `migrator run` keeps them; to change them, add --full (send every "
            "customer again in the new shape) or --restart."
        )
    return OptionsChanged(message, differences)


def refused_start(
    cause: InvalidPosition,
    out_dir: Path,
    options: RunOptions,
    shape: OutputShape,
    saved: Checkpoint | None,
) -> str:
    """The one line that says a start position was refused, and how to start over."""
    where = "the first page" if cause.position is None else repr(cause.position)
    line = f"cannot start at {where}: {cause.reason}. The checkpoint is unchanged"
    if saved is not None and saved.cursor != cause.position:
        resume = command_line("run", out_dir, options, shape, saved.cursor)
        line += f" (resume it with: {resume})"
    restart = command_line("run", out_dir, options, shape, None)
    return f"{line}. To start over from the first page: {restart}"


def invocation(command: str, out_dir: Path, options: RunOptions, start: str | None) -> str:
    """The run's options, for the log file (never a secret: none is an option)."""
    words = ["migrator", "retry-failed" if command == "retry-failed" else "run"]
    if options.dry_run:
        words.append("--dry-run")
    if options.full and command != "retry-failed":
        words.append("--full")
    if start is not None and command != "retry-failed":
        words += ["--offset", start]
    words += ["--metadata", str(options.mode), "--out-dir", str(out_dir.absolute())]
    if options.mapping_path is not None:
        words += ["--mapping", options.mapping_path]
    if options.env_file is not None:
        words += ["--env-file", str(options.env_file)]
    return shlex.join(words)


@dataclass
class Run:
    """A run under way, and how it is ending: its result can be taken at any moment (an
    interrupt hands the CLI the result so far)."""

    command: str
    out_dir: Path
    options: RunOptions
    shape: OutputShape
    start: str | None
    resumed: bool
    counts: Counts
    checkpoint: Checkpointer
    outcome: str = "interrupted"
    stopped: RunStopped | None = None
    error: str | None = None

    def result(self) -> RunResult:
        if self.outcome == "usage_error":
            code = EXIT_CONFIG
        elif self.outcome == "interrupted":
            code = EXIT_INTERRUPTED
        elif self.stopped is not None:
            code = EXIT_STOPPED
        else:
            code = EXIT_OK if self.counts.failed == 0 else EXIT_FAILURES
        return RunResult(
            command=self.command,
            exit_code=code,
            outcome=self.outcome,
            counts=self.counts,
            out_dir=self.out_dir,
            start_cursor=self.start,
            resumed=self.resumed,
            stopped=self.stopped,
            options=self.options,
            shape=self.shape,
            position=self.checkpoint.position,
            error=self.error,
        )
