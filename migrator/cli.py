"""The `migrator` command line: `run`, `retry-failed` and `status`; the tools around them
are in `cli_tools`. Options, progress and summaries only; no business logic here."""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from migrator.cli_common import (
    DryRun,
    EnvFile,
    Full,
    KeepRemoved,
    LogFile,
    MappingOption,
    Metadata,
    NoInput,
    Offset,
    OutDir,
    Report,
    Restart,
    SchemaPolicyOption,
    SourceOption,
    Verbose,
    _confirm,
    _interactive,
    _options,
    _settings,
    _setup_logging,
)
from migrator.cli_exec import CommandReport, fail, finish, reporting, run_once
from migrator.cli_tools import demo, mapping_app, sandbox
from migrator.config import RunOptions, Settings
from migrator.entry import Interrupted, install_signal_handlers
from migrator.exceptions import ConfigError, OptionsChanged
from migrator.report import report_early_exit
from migrator.result import EXIT_CONFIG, EXIT_INTERRUPTED, EXIT_STOPPED, RunResult
from migrator.runner import retry_failed, run_migration
from migrator.status import status, stored_options
from migrator.views import ProgressView, errors, show_status

app = typer.Typer(
    help="Move every Segment Unify profile into Voucherify as a customer, then keep it in step.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: no `<bool>` after every flag, no box to truncate
)


@app.command()
def run(
    env_file: EnvFile = None,
    out_dir: OutDir = Path("."),
    source: SourceOption = None,
    offset: Offset = None,
    restart: Restart = False,
    full: Full = False,
    dry_run: DryRun = False,
    metadata: Metadata = None,
    mapping: MappingOption = None,
    schema_policy: SchemaPolicyOption = None,
    keep_removed: KeepRemoved = False,
    no_input: NoInput = False,
    report: Report = None,
    log_file: LogFile = None,
    verbose: Verbose = False,
) -> None:
    """Migrate every profile (resuming from the checkpoint, sending only what changed).

    The options that shape the customers (--source, --metadata, --mapping, the identifier)
    are stored in --out-dir: a plain `migrator run` resumes with them; other ones need --restart or
    --full.
    """
    title = "migrator dry run" if dry_run else "migrator run"
    with reporting(report, "dry-run" if dry_run else "run") as rep:
        stored = stored_options(out_dir)
        settings = _settings(rep, env_file, source, stored)
        _setup_logging(rep, log_file, verbose, settings.secrets)
        options = _options(
            rep,
            settings,
            stored,
            env_file,
            metadata,
            mapping,
            schema_policy,
            keep_removed,
            full=full,
            dry_run=dry_run,
        )
        _run_until_done(rep, settings, out_dir, options, offset, restart, no_input, title)


def _run_until_done(
    rep: CommandReport,
    settings: Settings,
    out_dir: Path,
    options: RunOptions,
    offset: str | None,
    restart: bool,
    no_input: bool,
    title: str,
) -> NoReturn:
    """Run; at a terminal, a stopped run or changed options ask once whether to go on."""
    prompted = False
    while True:

        def make(
            view: ProgressView, start: str | None = offset, again: bool = restart
        ) -> Awaitable[RunResult]:
            return run_migration(
                settings,
                out_dir,
                options,
                offset=start,
                restart=again,
                on_start=view.attach,
                on_interrupted=view.interrupt,
            )

        try:
            result, _ = run_once(rep, make)
        except OptionsChanged as exc:
            if prompted or no_input or not _interactive():
                fail(rep, EXIT_CONFIG, "options_changed", exc)
            prompted = True
            errors.print(f"note: {exc}", markup=False)
            if not _confirm("Start over from the first page with the new options?"):
                fail(rep, EXIT_CONFIG, "options_changed", exc)
            offset, restart = None, True
            continue
        except ConfigError as exc:
            fail(rep, EXIT_CONFIG, "config_error", exc)
        finish(rep, result, title)
        if result.stopped is None:
            raise typer.Exit(result.exit_code)
        if prompted or no_input or result.stopped.account or not _interactive():
            raise typer.Exit(EXIT_STOPPED)
        prompted = True
        cursor = result.resume_cursor
        if not _confirm(f"Resume from offset {cursor or 'the first page'}?"):
            raise typer.Exit(EXIT_STOPPED)
        offset, restart = cursor, cursor is None


@app.command("retry-failed")
def retry_failed_command(
    env_file: EnvFile = None,
    out_dir: OutDir = Path("."),
    source: SourceOption = None,
    metadata: Metadata = None,
    mapping: MappingOption = None,
    schema_policy: SchemaPolicyOption = None,
    keep_removed: KeepRemoved = False,
    no_input: NoInput = False,
    report: Report = None,
    log_file: LogFile = None,
    verbose: Verbose = False,
) -> None:
    """Read the failed customers again from the source, resend them, clear those that succeed.

    They are resent in the shape stored in --out-dir (the --metadata mode, mapping and
    identifier of the runs that failed them). Never prompts, so --no-input changes nothing;
    it is accepted for cron lines that pass it to every command.
    """
    with reporting(report, "retry-failed") as rep:
        stored = stored_options(out_dir)
        settings = _settings(rep, env_file, source, stored)
        _setup_logging(rep, log_file, verbose, settings.secrets)
        options = _options(
            rep, settings, stored, env_file, metadata, mapping, schema_policy, keep_removed
        )
        try:
            result, _ = run_once(
                rep,
                lambda view: retry_failed(
                    settings,
                    out_dir,
                    options,
                    on_start=view.attach,
                    on_interrupted=view.interrupt,
                ),
            )
        except ConfigError as exc:
            fail(
                rep,
                EXIT_CONFIG,
                "options_changed" if isinstance(exc, OptionsChanged) else "config_error",
                exc,
            )
        finish(rep, result, "migrator retry-failed")
        raise typer.Exit(result.exit_code)


@app.command("status")
def status_command(
    out_dir: OutDir = Path("."),
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the status as JSON.", metavar="")
    ] = False,
) -> None:
    """Recent runs, the checkpoint, customers confirmed and failures pending.

    Exits 2 when --out-dir holds no migrator state (a mistyped path).
    """
    try:
        data = status(out_dir)
    except ConfigError as exc:  # a damaged state file
        errors.print(f"error: {exc}", markup=False)
        raise typer.Exit(EXIT_CONFIG) from None
    if as_json:
        print(json.dumps(data, indent=2))
    else:
        show_status(data, out_dir)
    if data["state_file"] is None:
        errors.print(
            f"error: no migrator state in {out_dir.absolute()}: no run has used this "
            "--out-dir (is the path right?)",
            markup=False,
        )
        raise typer.Exit(EXIT_CONFIG)


app.command()(demo)
app.add_typer(mapping_app, name="mapping")
app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)(sandbox)


def main() -> None:
    """The entry point: `migrator` (through `migrator.entry`) and `python -m migrator.cli`."""
    install_signal_handlers()
    argv = sys.argv[1:]
    try:
        app()
    except Interrupted:  # outside any command (while the command line is parsed)
        report_early_exit(argv, EXIT_INTERRUPTED, "interrupted", "interrupted")
        errors.print("interrupted", markup=False)
        sys.exit(EXIT_INTERRUPTED)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
        if code != 0:  # a command line that does not parse: click said why
            report_early_exit(argv, code, "usage_error", "the command line was not valid")
        raise


if __name__ == "__main__":  # pragma: no cover
    main()
