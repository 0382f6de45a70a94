"""What the command line shows: live progress, summaries, status and the demo's check.

Rendering only; every decision is in the runner.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from migrator.outcome import Counts
from migrator.result import RunResult

if TYPE_CHECKING:
    from migrator.mapping_check import MappingCheck
    from migrator_sandbox.demo import DemoResult

T = TypeVar("T")

console = Console(stderr=False, highlight=False, emoji=False, soft_wrap=True)
# soft_wrap: a message is one line even in a log or a pipe (rich would wrap it at 80 columns).
errors = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)
#: Tables in a pipe or a log are as wide as their content: never truncated at 80 columns.
PIPED_WIDTH = 10_000


def _print_table(table: Table) -> None:
    if console.is_terminal:
        console.print(table)
        return
    wide = Console(file=sys.stdout, width=PIPED_WIDTH, highlight=False, emoji=False)
    wide.print(table)


def make_console_handler() -> logging.Handler:
    """Log lines on the console: above the progress bar in a terminal, plain otherwise."""
    if sys.stderr.isatty():
        handler: logging.Handler = RichHandler(console=errors, show_path=False, markup=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    return handler


class ProgressView:
    """Live counters: a rich bar in a terminal, a plain line every 10 s otherwise."""

    def __init__(self, total: int | None = None) -> None:
        self.total = total
        self.counts: Counts | None = None
        self.interrupted: RunResult | None = None
        self._progress: Progress | None = None
        self._task: Any = None

    def attach(self, counts: Counts) -> None:
        self.counts = counts

    def interrupt(self, result: RunResult) -> None:
        """The run was interrupted: keep its result for the summary and the report."""
        self.interrupted = result

    def _line(self) -> str:
        assert self.counts is not None
        c = self.counts
        elapsed = max(time.monotonic() - c.started_at, 1e-9)
        return (
            f"read {c.profiles_read}  confirmed {c.confirmed}  unchanged {c.unchanged}  "
            f"no identifier {c.no_identifier}  failed {c.failed}  "
            f"{c.profiles_read / elapsed:.1f} profiles/s"
        )

    async def run(self, work: Awaitable[T]) -> T:
        if console.is_terminal:
            with Progress(
                SpinnerColumn(),
                BarColumn(bar_width=20),
                TextColumn("{task.description}"),
                TimeElapsedColumn(),
                console=console,
                transient=False,
            ) as progress:
                self._progress = progress
                self._task = progress.add_task("starting", total=self.total)
                return await self._with_ticker(work, 0.25)
        return await self._with_ticker(work, 10.0)

    async def _with_ticker(self, work: Awaitable[T], every: float) -> T:
        async def tick() -> None:
            while True:
                await asyncio.sleep(every)
                self._show()

        ticker = asyncio.create_task(tick())
        try:
            result = await work
        finally:
            ticker.cancel()
        self._show()  # not after an error: its one line is then the last word
        return result

    def _show(self) -> None:
        if self.counts is None or self.counts.profiles_read == 0:
            return  # nothing to tell yet (or a run that could not start: its error says why)
        if self._progress is not None:
            self._progress.update(
                self._task, description=self._line(), completed=self.counts.profiles_read
            )
        else:
            print(f"progress: {self._line()}", file=sys.stderr, flush=True)


def show_summary(result: RunResult, title: str) -> None:
    c = result.counts.as_dict()
    table = Table(title=title, show_header=False)
    rows = [
        ("outcome", result.outcome),
        ("profiles read", c["profiles_read"]),
        ("customers confirmed", c["confirmed"]),
        ("unchanged (not sent)", c["unchanged"]),
        ("without identifier", c["no_identifier"]),
        ("identifier owned by another profile", c["duplicates"]),
        ("failed", c["failed"]),
        ("mapping warnings", c["warnings"]),
        ("retried requests", c["retries"]),
        ("elapsed", f"{c['elapsed_seconds']:.1f} s"),
        ("profiles/s", f"{c['profiles_per_second']:.1f}"),
    ]
    if c["would_send"]:
        rows.insert(2, ("would send (dry run)", c["would_send"]))
    if result.resumed:
        rows.insert(0, ("resumed from", result.start_cursor or "the first page"))
    for name, value in rows:
        table.add_row(name, Text(str(value)))  # a cursor is opaque: never markup
    _print_table(table)
    console.print(f"files in {result.out_dir}", markup=False)


def show_stopped(result: RunResult) -> None:
    """Why the run stopped (once), what to change, and the exact command that resumes."""
    assert result.stopped is not None
    errors.print(f"stopped: {result.stopped}", markup=False)
    if result.stopped.hint:
        errors.print(result.stopped.hint, markup=False)
    if result.options.dry_run:
        _resume_lines(result, "a dry run keeps no checkpoint. Run it again with:")
        return
    _resume_lines(result, "everything before the resume point is saved. Resume with:")


def show_interrupted(result: RunResult) -> None:
    if result.options.dry_run:
        errors.print("interrupted: a dry run keeps no checkpoint.", markup=False)
        _resume_lines(result, "Run it again with:")
        return
    _resume_lines(result, "interrupted: the checkpoint is saved. Resume with:")


def _resume_lines(result: RunResult, lead: str) -> None:
    command = result.resume_command
    if command is not None:
        errors.print(f"{lead}\n  {command}", markup=False)


def show_status(data: dict[str, Any], out_dir: Path) -> None:
    if data["state_file"] is None:
        return  # the command says so on stderr, and exits 2
    checkpoint = data["checkpoint"]
    live = data.get("in_progress")
    pid = data["running_pid"]
    if checkpoint is None:
        line = "none"
        last = next((r for r in data["runs"] if r["command"] == "run"), None)
        if live is not None and live["command"] == "dry-run":
            line += " (a dry run keeps none)"
        elif last is None:
            line += " (no migration run yet)"
        elif last["outcome"].startswith("completed"):
            line += " (the last run finished)"
    else:
        where = checkpoint["cursor"] or "the first page"
        if live is not None and live["run_id"] == checkpoint["run_id"]:
            line = f"run {checkpoint['run_id']} in progress (pid {pid}), at {where}"
        else:
            line = f"run {checkpoint['run_id']} stopped; resumes at {where}"
    console.print(f"checkpoint: {line}", markup=False)
    if live is not None and (checkpoint is None or live["run_id"] != checkpoint["run_id"]):
        what = {"dry-run": "dry run", "retry-failed": "retry-failed"}.get(live["command"], "run")
        console.print(f"in progress: {what} {live['run_id']} (pid {pid})", markup=False)
    if data.get("options"):
        stored = data["options"]
        shown = ", ".join(
            f"{key} {stored[key] if stored[key] is not None else 'built-in'}"
            for key in ("source", "metadata", "identifier", "mapping")
            if key in stored
        )
        console.print(f"stored options: {shown}", markup=False)
    console.print(f"customers confirmed: {data['customers_confirmed']}")
    console.print(f"failures pending: {data['failures_pending']}")
    console.print(f"profiles without identifier: {data['profiles_without_identifier']}")
    console.print(f"profiles sharing another's identifier: {data['duplicate_identifiers']}")
    table = Table("run", "command", "started", "ended", "outcome", "read", "confirmed", "failed")
    for r in data["runs"]:
        counts = r["counts"]
        table.add_row(
            str(r["id"]),
            r["command"],
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["started_at"])),
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["ended_at"]))
            if r["ended_at"]
            else "-",
            r["outcome"],
            str(counts.get("profiles_read", "-")),
            str(counts.get("confirmed", "-")),
            str(counts.get("failed", "-")),
        )
    _print_table(table)


def show_demo(result: DemoResult) -> None:
    v = result.verification
    table = Table(title="verified against the sandbox's oracle", show_header=False)
    table.add_row("customers expected", str(v.expected))
    table.add_row("arrived in Voucherify", str(v.arrived))
    table.add_row("correct to the last field", str(v.correct))
    table.add_row("wrong fields", str(len(v.wrong)))
    table.add_row("unexpected customers", str(len(v.unexpected)))
    table.add_row(
        "without identifier (listed / expected)",
        f"{result.listed_without_identifier} / {len(v.no_identifier)}",
    )
    table.add_row("failures in the ledger", str(result.ledger_lines))
    if result.schema_keys:
        table.add_row("typed metadata keys in the schema", str(result.schema_keys))
        table.add_row("metadata values converted to their type", str(result.coerced))
        table.add_row("customers rejected by the schema", str(result.schema_rejections))
        off = getattr(v, "off_schema", [])
        table.add_row("customers with a value off its schema type", str(len(off)))
    table.add_row("Segment 429 answers", str(result.segment_429))
    _print_table(table)
    if result.ok:
        console.print(
            "[bold green]verified:[/] every profile is in Voucherify or listed without identifier."
        )
        return
    console.print("[bold red]not verified:[/] see the table above.")


def show_mapping_check(check: MappingCheck) -> None:
    console.print(
        f"{check.profiles} profiles read: {check.customers} customers, "
        f"{check.no_identifier} without identifier, {check.unreadable} unreadable; "
        f"{check.rejected_customers} would be rejected. "
        + (
            "Checked against Voucherify's metadata schema."
            if check.schema
            else "Voucherify defines no customer metadata schema: metadata is not checked."
        ),
        markup=False,
        soft_wrap=True,
    )
    table = Table("field", "filled", "coerced", "dropped", "would be rejected", "why")
    for name, t in sorted(check.fields.items()):
        why = "; ".join(f"{reason} ({n})" for reason, n in t.reasons.most_common(3))
        table.add_row(
            name, str(t.filled), str(t.coerced), str(t.dropped), str(t.rejected), Text(why)
        )
    console.print(table)
