"""How a command runs: its `--report` (written on every exit, 0 to 130, atomically), its
one-line errors, and its coroutine under progress and signals. Typer and rich only.

Every exit is one of README's codes with one clear line: errors the operator can fix are
printed as `error: ...` lines, never as tracebacks.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import typer

from migrator.entry import Interrupted, install_signal_handlers, raise_if_interrupted
from migrator.exceptions import LockedError
from migrator.memory import pin_mmap_threshold
from migrator.report import iso, write_report
from migrator.result import EXIT_CONFIG, EXIT_INTERRUPTED, EXIT_LOCKED, RunResult
from migrator.views import (
    ProgressView,
    errors,
    show_interrupted,
    show_stopped,
    show_summary,
)

T = TypeVar("T")


# -- the report, written on every exit ----------------------------------------------------------


class CommandReport:
    """The `--report` file: what the command did, written atomically on every exit."""

    def __init__(self, path: Path | None, command: str) -> None:
        self.path = path
        self.command = command
        self.started_at = time.time()
        self.data: dict[str, Any] = {
            "command": command,
            "outcome": "interrupted",
            "stopped_because": None,
            "resume_command": None,
            "counts": None,
        }

    def result(self, result: RunResult) -> None:
        self.data = result.report()

    def failure(self, outcome: str, reason: str) -> None:
        self.data = {
            **self.data,
            "outcome": outcome,
            "stopped_because": reason,
            "resume_command": None,
        }

    def write(self, exit_code: int) -> None:
        if self.path is None:
            return
        data = dict(self.data)
        if exit_code == EXIT_INTERRUPTED and data.get("exit_code") != EXIT_INTERRUPTED:
            data["outcome"] = "interrupted"  # e.g. Ctrl-C at the resume prompt
            data["stopped_because"] = data.get("stopped_because") or "interrupted"
        data["exit_code"] = exit_code
        data["started_at"] = iso(self.started_at)
        data["ended_at"] = iso(time.time())
        data["pid"] = os.getpid()
        problem = write_report(self.path, data)
        if problem is not None:
            errors.print(f"error: {problem}", markup=False)


@contextmanager
def reporting(report: Path | None, name: str) -> Iterator[CommandReport]:
    """Run a command's body: its report is written however it ends, and an interrupt
    anywhere (settings, a prompt, the run) exits 130 with one line."""
    rep = CommandReport(report, name)
    code = 1  # a bug: Python prints its traceback after the report is written
    try:
        yield rep
        code = 0
    except typer.Exit as exc:
        code = exc.exit_code
        raise
    except Interrupted:
        code = EXIT_INTERRUPTED
        errors.print("interrupted", markup=False)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except BaseException as exc:
        rep.failure("crashed", f"{type(exc).__name__}: {exc}")
        raise
    finally:
        rep.write(code)


def fail(rep: CommandReport, code: int, outcome: str, error: Exception | str) -> NoReturn:
    """One `error:` line per problem, the report says the same, and exit `code`."""
    problems = getattr(error, "problems", None) or (str(error),)
    for problem in problems:
        errors.print(f"error: {problem}", markup=False)
    rep.failure(outcome, "; ".join(problems))
    raise typer.Exit(code)


# -- running a command's coroutine --------------------------------------------------------------


def execute(
    view: ProgressView,
    make: Callable[[ProgressView], Awaitable[T]],
    abort: Callable[[], None] | None = None,
) -> T:
    """Run a command's coroutine with progress.

    The first SIGINT or SIGTERM stops it cleanly: the run records where it got to and the
    command exits 130. A second one exits at once (`abort` writes the report first): the
    state store is safe against that too.
    """
    pin_mmap_threshold()
    raise_if_interrupted()
    sigint = signal.getsignal(signal.SIGINT) is not signal.SIG_IGN

    async def main() -> T:
        loop = asyncio.get_running_loop()
        current = asyncio.current_task()
        assert current is not None
        received = 0

        def stop(name: str) -> None:
            nonlocal received
            received += 1
            if received == 1:
                current.cancel()
                return
            if abort is not None:
                abort()
            errors.print(
                f"interrupted again ({name}): exited at once; the checkpoint is saved", markup=False
            )
            os._exit(EXIT_INTERRUPTED)

        loop.add_signal_handler(signal.SIGTERM, stop, "SIGTERM")
        if sigint:
            loop.add_signal_handler(signal.SIGINT, stop, "SIGINT")
        raise_if_interrupted()  # one that came before the loop's handlers were in place
        return await view.run(make(view))

    try:
        return asyncio.run(main())
    except (KeyboardInterrupt, asyncio.CancelledError):
        raise Interrupted from None
    finally:
        install_signal_handlers()  # closing the loop put back Python's own


def run_once(
    rep: CommandReport, make: Callable[[ProgressView], Awaitable[RunResult]]
) -> tuple[RunResult, ProgressView]:
    """`execute` for the migration commands: an interrupted run still has a result."""
    view = ProgressView()

    def abort() -> None:
        rep.failure("interrupted", "interrupted twice: exited at once")
        rep.write(EXIT_INTERRUPTED)

    try:
        return execute(view, make, abort), view
    except Interrupted:
        if view.interrupted is None:
            raise
        return view.interrupted, view
    except LockedError as exc:
        fail(rep, EXIT_LOCKED, "locked", exc)


def finish(rep: CommandReport, result: RunResult, title: str) -> None:
    """Summary, report, and the exit of a run that ended without a prompt to answer."""
    rep.result(result)
    if result.error is not None:  # the run could not start where asked: one line
        errors.print(f"error: {result.error}", markup=False)
        raise typer.Exit(EXIT_CONFIG)
    show_summary(result, title)
    if result.exit_code == EXIT_INTERRUPTED:
        show_interrupted(result)
        raise typer.Exit(EXIT_INTERRUPTED)
    if result.stopped is not None:
        show_stopped(result)
