"""The `migrator` command line: options, progress and summaries. No business logic here."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from migrator.config import RunOptions, Settings, load_settings, read_environment
from migrator.exceptions import ConfigError, LockedError
from migrator.logs import RedactingFilter
from migrator.mapping import MetadataMode
from migrator.memory import pin_mmap_threshold
from migrator.outcome import Counts
from migrator.runner import (
    EXIT_CONFIG,
    EXIT_INTERRUPTED,
    EXIT_LOCKED,
    EXIT_STOPPED,
    RunResult,
    resume_command,
    retry_failed,
    run_migration,
    status,
)

T = TypeVar("T")

app = typer.Typer(
    help="Move every Segment Unify profile into Voucherify as a customer, then keep it in step.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=False, highlight=False, emoji=False)
# soft_wrap: a message is one line even in a log or a pipe (rich would wrap it at 80 columns).
errors = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)


EnvFile = Annotated[
    Path | None,
    typer.Option(
        "--env-file", help="Read settings from this file instead of ./.env.", dir_okay=False
    ),
]
OutDir = Annotated[
    Path,
    typer.Option(
        "--out-dir", help="Where the state, the lists and the ledger are written.", file_okay=False
    ),
]
NoInput = Annotated[
    bool, typer.Option("--no-input", help="Never prompt (for cron); exit 3 if stopped.")
]
Report = Annotated[
    Path | None,
    typer.Option("--report", help="Write a JSON summary of the run here.", dir_okay=False),
]
LogFile = Annotated[
    Path | None,
    typer.Option(
        "--log-file", help="Append a detailed log (one line per request) here.", dir_okay=False
    ),
]
Verbose = Annotated[
    bool, typer.Option("--verbose", "-v", help="Show info lines, not only warnings.")
]
Metadata = Annotated[
    MetadataMode,
    typer.Option(
        "--metadata",
        help="metadata: send the `metadata` trait; all: every trait not mapped to a field; "
        "none: no metadata.",
        case_sensitive=False,
    ),
]


def _interactive() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


def _setup_logging(log_file: Path | None, verbose: bool, secrets: tuple[str, ...]) -> None:
    """Warnings on the console (above the progress bar in a terminal); details in the file."""
    logger = logging.getLogger("migrator")
    logger.handlers.clear()
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    redact = RedactingFilter(secrets)
    if sys.stderr.isatty():
        handler: logging.Handler = RichHandler(console=errors, show_path=False, markup=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    handler.setLevel(logging.INFO if verbose else logging.WARNING)
    handler.addFilter(redact)
    logger.addHandler(handler)
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(log_file, encoding="utf-8")
        file_handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
        )
        file_handler.setLevel(logging.DEBUG)
        file_handler.addFilter(redact)
        logger.addHandler(file_handler)


def _settings(env_file: Path | None, overrides: dict[str, str] | None = None) -> Settings:
    try:
        env = read_environment(env_file)
        if overrides:
            env.update(overrides)
        return load_settings(env)
    except ConfigError as exc:
        errors.print(f"error: {exc}", markup=False)
        raise typer.Exit(EXIT_CONFIG) from None


class ProgressView:
    """Live counters: a rich bar in a terminal, a plain line every 10 s otherwise."""

    def __init__(self, total: int | None = None) -> None:
        self.total = total
        self.counts: Counts | None = None
        self._progress: Progress | None = None
        self._task: Any = None

    def attach(self, counts: Counts) -> None:
        self.counts = counts

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
            return await work
        finally:
            ticker.cancel()
            self._show()

    def _show(self) -> None:
        if self.counts is None:
            return
        if self._progress is not None:
            self._progress.update(
                self._task, description=self._line(), completed=self.counts.profiles_read
            )
        else:
            print(f"progress: {self._line()}", file=sys.stderr, flush=True)


def _execute(make: Callable[[ProgressView], Awaitable[T]], total: int | None = None) -> T:
    """Run a command's coroutine with progress; SIGTERM and Ctrl-C stop it cleanly."""
    view = ProgressView(total)
    pin_mmap_threshold()

    async def main() -> T:
        loop = asyncio.get_running_loop()
        current = asyncio.current_task()
        assert current is not None
        loop.add_signal_handler(signal.SIGTERM, current.cancel)
        return await view.run(make(view))

    try:
        return asyncio.run(main())
    except (KeyboardInterrupt, asyncio.CancelledError):
        errors.print("interrupted: the checkpoint is saved; `migrator run` resumes from it.")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except LockedError as exc:
        errors.print(f"error: {exc}", markup=False)
        raise typer.Exit(EXIT_LOCKED) from None
    except ConfigError as exc:
        errors.print(f"error: {exc}", markup=False)
        raise typer.Exit(EXIT_CONFIG) from None


def _summary(result: RunResult, title: str) -> None:
    c = result.counts.as_dict()
    table = Table(title=title, show_header=False)
    rows = [
        ("outcome", result.outcome),
        ("profiles read", c["profiles_read"]),
        ("customers confirmed", c["confirmed"]),
        ("unchanged (not sent)", c["unchanged"]),
        ("without identifier", c["no_identifier"]),
        ("failed", c["failed"]),
        ("mapping warnings", c["warnings"]),
        ("elapsed", f"{c['elapsed_seconds']:.1f} s"),
        ("profiles/s", f"{c['profiles_per_second']:.1f}"),
    ]
    if c["would_send"]:
        rows.insert(2, ("would send (dry run)", c["would_send"]))
    if result.resumed:
        rows.insert(0, ("resumed from", result.start_cursor or "the first page"))
    for name, value in rows:
        table.add_row(name, Text(str(value)))  # a cursor is opaque: never markup
    console.print(table)
    console.print(f"files in {result.out_dir}", markup=False)


def _write_report(path: Path | None, result: RunResult) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result.report(), indent=2) + "\n", encoding="utf-8")


def _stopped(result: RunResult) -> None:
    assert result.stopped is not None
    errors.print(f"stopped: {result.stopped}", markup=False)
    if result.stopped.hint:
        errors.print(result.stopped.hint, markup=False)
    command = resume_command(result.resume_cursor)
    errors.print(
        f"everything before the resume point is saved. Resume with:\n  {command}", markup=False
    )


@app.command()
def run(
    env_file: EnvFile = None,
    out_dir: OutDir = Path("."),
    offset: Annotated[
        str | None,
        typer.Option(
            "--offset", help="Start at this Segment list cursor (overrides the checkpoint)."
        ),
    ] = None,
    restart: Annotated[
        bool, typer.Option("--restart", help="Ignore the checkpoint; start at the first page.")
    ] = False,
    full: Annotated[
        bool, typer.Option("--full", help="Send every customer, changed or not.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Read and map; write dry-run.jsonl; send nothing.")
    ] = False,
    metadata: Metadata = MetadataMode.metadata,
    no_input: NoInput = False,
    report: Report = None,
    log_file: LogFile = None,
    verbose: Verbose = False,
) -> None:
    """Migrate every profile (resuming from the checkpoint, sending only what changed)."""
    settings = _settings(env_file)
    _setup_logging(log_file, verbose, settings.secrets)
    options = RunOptions(metadata_mode=metadata, full=full, dry_run=dry_run)
    prompted = False
    while True:

        def make(
            view: ProgressView, start: str | None = offset, again: bool = restart
        ) -> Awaitable[RunResult]:
            return run_migration(
                settings, out_dir, options, offset=start, restart=again, on_start=view.attach
            )

        result = _execute(make)
        _summary(result, "migrator dry run" if dry_run else "migrator run")
        _write_report(report, result)
        if result.stopped is None:
            raise typer.Exit(result.exit_code)
        _stopped(result)
        if prompted or no_input or result.stopped.account or not _interactive():
            raise typer.Exit(EXIT_STOPPED)
        prompted = True
        cursor = result.resume_cursor
        if not typer.confirm(f"Resume from offset {cursor or 'the first page'}?", default=False):
            raise typer.Exit(EXIT_STOPPED)
        offset, restart = cursor, cursor is None


@app.command("retry-failed")
def retry_failed_command(
    env_file: EnvFile = None,
    out_dir: OutDir = Path("."),
    metadata: Metadata = MetadataMode.metadata,
    report: Report = None,
    log_file: LogFile = None,
    verbose: Verbose = False,
) -> None:
    """Read the failed customers again from Segment, resend them, clear those that succeed."""
    settings = _settings(env_file)
    _setup_logging(log_file, verbose, settings.secrets)
    options = RunOptions(metadata_mode=metadata)
    result = _execute(lambda view: retry_failed(settings, out_dir, options, on_start=view.attach))
    _summary(result, "migrator retry-failed")
    _write_report(report, result)
    if result.stopped is not None:
        _stopped(result)
    raise typer.Exit(result.exit_code)


@app.command("status")
def status_command(
    out_dir: OutDir = Path("."),
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
) -> None:
    """Recent runs, the checkpoint, customers confirmed and failures pending."""
    data = status(out_dir)
    if as_json:
        console.print_json(json.dumps(data))
        return
    if data["state_file"] is None:
        console.print(f"no runs yet in {out_dir.resolve()}", markup=False)
        return
    checkpoint = data["checkpoint"]
    if checkpoint is None:
        line = "none (the last run finished)"
    else:
        where = checkpoint["cursor"] or "the first page"
        if data["running_pid"] is not None:
            line = f"run {checkpoint['run_id']} in progress (pid {data['running_pid']}), at {where}"
        else:
            line = f"run {checkpoint['run_id']} stopped; resumes at {where}"
    console.print(f"checkpoint: {line}", markup=False)
    console.print(f"customers confirmed: {data['customers_confirmed']}")
    console.print(f"failures pending: {data['failures_pending']}")
    console.print(f"profiles without identifier: {data['profiles_without_identifier']}")
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
    console.print(table)


@app.command()
def demo(
    profiles: Annotated[
        int, typer.Option("--profiles", min=1, help="Profiles to generate.")
    ] = 3000,
    segment_rate: Annotated[
        int, typer.Option("--segment-rate", min=1, help="The sandbox space's Segment requests/s.")
    ] = 250,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the generated profiles.")] = 1,
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out-dir",
            help="Where to write the run's files (default: a new temp dir).",
            file_okay=False,
        ),
    ] = None,
    metadata: Metadata = MetadataMode.metadata,
) -> None:
    """Migrate a local sandbox of both APIs and verify every customer. Needs no credentials."""
    from migrator_sandbox.demo import run_demo
    from migrator_sandbox.settings import SandboxSettings

    _setup_logging(None, False, ())
    target = out_dir or Path(tempfile.mkdtemp(prefix="migrator-demo-"))
    sandbox = SandboxSettings(
        profiles=profiles,
        seed=seed,
        segment_rate=segment_rate,
        latency_min_ms=20,
        latency_max_ms=80,
    )
    console.print(
        f"sandbox: {profiles} generated profiles, Segment limit {segment_rate} requests/s, "
        f"Voucherify 2,000 requests/min; files in {target}",
        markup=False,
    )
    result = _execute(
        lambda view: run_demo(sandbox, target, metadata.value, on_start=view.attach), total=profiles
    )
    _summary(result.run, "migrator demo")
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
    table.add_row("Segment 429 answers", str(result.segment_429))
    console.print(table)
    if result.ok:
        console.print(
            "[bold green]verified:[/] every profile is in Voucherify or listed without identifier."
        )
        raise typer.Exit(0)
    console.print("[bold red]not verified:[/] see the table above.")
    raise typer.Exit(1)


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def sandbox(ctx: typer.Context) -> None:
    """Serve the sandbox of both APIs and print the variables that point `migrator run` at it.

    Knobs: --profiles N --port P --segment-rate R --voucherify-rate R --latency-ms MIN,MAX
    --fault-5xx X ... (run `migrator sandbox --help` for the whole list).
    """
    from migrator_sandbox.server import serve
    from migrator_sandbox.settings import parse_args

    options = parse_args(list(ctx.args), prog="migrator sandbox")
    try:
        serve(options.settings, options.host, options.port, access_log=options.access_log)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


if __name__ == "__main__":  # pragma: no cover
    app()
