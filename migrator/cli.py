"""The `migrator` command line: options, progress and summaries. No business logic here."""

from __future__ import annotations

import json
from collections.abc import Awaitable
from pathlib import Path
from typing import Annotated

import typer

from migrator.cli_common import (
    EnvFile,
    KeepRemoved,
    LogFile,
    MappingOption,
    Metadata,
    NoInput,
    OutDir,
    Report,
    SchemaPolicyOption,
    SourceOption,
    Verbose,
    _execute,
    _interactive,
    _options,
    _settings,
    _setup_logging,
    _write_report,
)
from migrator.cli_tools import demo, mapping_app, sandbox
from migrator.exceptions import ConfigError
from migrator.runner import (
    EXIT_CONFIG,
    EXIT_STOPPED,
    RunResult,
    retry_failed,
    run_migration,
    status,
)
from migrator.views import (
    ProgressView,
    console,
    errors,
    show_status,
    show_stopped,
    show_summary,
)

app = typer.Typer(
    help="Move every Segment Unify profile into Voucherify as a customer, then keep it in step.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
def run(
    env_file: EnvFile = None,
    out_dir: OutDir = Path("."),
    source: SourceOption = None,
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
    metadata: Metadata = None,
    mapping: MappingOption = None,
    schema_policy: SchemaPolicyOption = None,
    keep_removed: KeepRemoved = False,
    no_input: NoInput = False,
    report: Report = None,
    log_file: LogFile = None,
    verbose: Verbose = False,
) -> None:
    """Migrate every profile (resuming from the checkpoint, sending only what changed)."""
    settings = _settings(env_file, {"MIGRATOR_SOURCE": source.value} if source else None)
    _setup_logging(log_file, verbose, settings.secrets)
    options = _options(
        settings, metadata, mapping, schema_policy, keep_removed, full=full, dry_run=dry_run
    )
    prompted = False
    while True:

        def make(
            view: ProgressView, start: str | None = offset, again: bool = restart
        ) -> Awaitable[RunResult]:
            return run_migration(
                settings, out_dir, options, offset=start, restart=again, on_start=view.attach
            )

        result = _execute(make)
        show_summary(result, "migrator dry run" if dry_run else "migrator run")
        _write_report(report, result)
        if result.stopped is None:
            raise typer.Exit(result.exit_code)
        show_stopped(result)
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

    Never prompts, so --no-input changes nothing; it is accepted for cron lines that pass
    it to every command.
    """
    settings = _settings(env_file, {"MIGRATOR_SOURCE": source.value} if source else None)
    _setup_logging(log_file, verbose, settings.secrets)
    options = _options(settings, metadata, mapping, schema_policy, keep_removed)
    result = _execute(lambda view: retry_failed(settings, out_dir, options, on_start=view.attach))
    show_summary(result, "migrator retry-failed")
    _write_report(report, result)
    if result.stopped is not None:
        show_stopped(result)
    raise typer.Exit(result.exit_code)


@app.command("status")
def status_command(
    out_dir: OutDir = Path("."),
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
) -> None:
    """Recent runs, the checkpoint, customers confirmed and failures pending."""
    try:
        data = status(out_dir)
    except ConfigError as exc:
        errors.print(f"error: {exc}", markup=False)
        raise typer.Exit(EXIT_CONFIG) from None
    if as_json:
        console.print_json(json.dumps(data))
        return
    show_status(data, out_dir)


app.command()(demo)
app.add_typer(mapping_app, name="mapping")
app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)(sandbox)


if __name__ == "__main__":  # pragma: no cover
    app()
