"""The `migrator` command line: options, progress and summaries. No business logic here."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import tempfile
from collections.abc import Awaitable, Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, TypeVar, cast

import typer
from rich.logging import RichHandler

from migrator.config import RunOptions, Settings, SourceName, load_settings, read_environment
from migrator.exceptions import ConfigError, LockedError
from migrator.logs import RedactingFilter
from migrator.mapping import MetadataMode
from migrator.mapping_check import check_mapping
from migrator.mapping_file import builtin_mapping_toml, load_mapping
from migrator.memory import pin_mmap_threshold
from migrator.runner import (
    EXIT_CONFIG,
    EXIT_INTERRUPTED,
    EXIT_LOCKED,
    EXIT_STOPPED,
    RunResult,
    retry_failed,
    run_migration,
    status,
)
from migrator.schema import SchemaPolicy
from migrator.views import (
    ProgressView,
    console,
    errors,
    show_demo,
    show_mapping_check,
    show_status,
    show_stopped,
    show_summary,
)

T = TypeVar("T")

app = typer.Typer(
    help="Move every Segment Unify profile into Voucherify as a customer, then keep it in step.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


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
SourceOption = Annotated[
    SourceName | None,
    typer.Option(
        "--source",
        help="Where to read profiles: profile-api (Segment's API, the default) or "
        "profiles-sync (the Profiles Sync views in your warehouse). Also MIGRATOR_SOURCE.",
        case_sensitive=False,
        show_default=False,
    ),
]
KeepRemoved = Annotated[
    bool,
    typer.Option(
        "--keep-removed",
        help="Leave in Voucherify the fields and metadata keys this tool wrote earlier that "
        "Segment no longer has (default: clear them). Also MIGRATOR_KEEP_REMOVED=true.",
    ),
]
Metadata = Annotated[
    MetadataMode | None,
    typer.Option(
        "--metadata",
        help="metadata: send the `metadata` trait; all: every trait not mapped to a field; "
        "none: no metadata. Default: the mapping file's, else metadata.",
        case_sensitive=False,
        show_default=False,
    ),
]
MappingOption = Annotated[
    Path | None,
    typer.Option(
        "--mapping",
        help="A mapping file (TOML; `migrator mapping init` writes the built-in rules as "
        "one). Also MAPPING_FILE.",
        dir_okay=False,
        show_default=False,
    ),
]


class SchemaPolicyName(StrEnum):
    drop_value = "drop_value"
    drop_customer = "drop_customer"
    send = "send"


SchemaPolicyOption = Annotated[
    SchemaPolicyName | None,
    typer.Option(
        "--schema-policy",
        help="A metadata value Voucherify's schema cannot take: drop_value (omit it, the "
        "default), drop_customer (to the failure ledger, nothing sent) or send (as is). "
        "Also METADATA_SCHEMA_POLICY.",
        show_default=False,
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


def _options(
    settings: Settings,
    metadata: MetadataMode | None,
    mapping: Path | None,
    schema_policy: SchemaPolicyName | None,
    keep_removed: bool,
    **flags: bool,
) -> RunOptions:
    """The run's options: command-line flags over the settings' (environment) defaults."""
    path = mapping or (Path(settings.mapping_file) if settings.mapping_file else None)
    try:
        spec = load_mapping(path) if path is not None else None
    except ConfigError as exc:
        errors.print(f"error: {exc}", markup=False)
        raise typer.Exit(EXIT_CONFIG) from None
    policy = schema_policy.value if schema_policy else settings.schema_policy
    return RunOptions(
        metadata_mode=metadata,
        mapping=spec,
        schema_policy=cast(SchemaPolicy, policy),
        keep_removed=keep_removed or settings.keep_removed,
        **flags,
    )


def _settings(env_file: Path | None, overrides: dict[str, str] | None = None) -> Settings:
    try:
        env = read_environment(env_file)
        if overrides:
            env.update(overrides)
        return load_settings(env)
    except ConfigError as exc:
        errors.print(f"error: {exc}", markup=False)
        raise typer.Exit(EXIT_CONFIG) from None


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


def _write_report(path: Path | None, result: RunResult) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result.report(), indent=2) + "\n", encoding="utf-8")


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
    metadata: Metadata = None,
    source: SourceOption = None,
) -> None:
    """Migrate a local sandbox of both APIs and verify every customer. Needs no credentials.

    With --source profiles-sync the profiles are loaded into a throwaway Postgres (the
    pgserver wheel: pip install -e '.[sandbox]') and read from Profiles Sync views.
    """
    from migrator_sandbox.demo import run_demo, run_demo_profiles_sync
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
    warehouse = source == SourceName.profiles_sync
    where = (
        "Profiles Sync views in a local Postgres"
        if warehouse
        else (f"Segment limit {segment_rate} requests/s")
    )
    console.print(
        f"sandbox: {profiles} generated profiles, {where}, Voucherify 2,000 requests/min; "
        f"files in {target}",
        markup=False,
    )
    mode = (metadata or MetadataMode.metadata).value
    demo_run = run_demo_profiles_sync if warehouse else run_demo
    result = _execute(
        lambda view: demo_run(sandbox, target, mode, on_start=view.attach), total=profiles
    )
    show_summary(result.run, "migrator demo")
    show_demo(result)
    raise typer.Exit(0 if result.ok else 1)


mapping_app = typer.Typer(
    help="Shape the mapping with a file, and check it against a sample before anything is sent.",
    no_args_is_help=True,
)
app.add_typer(mapping_app, name="mapping")


@mapping_app.command("init")
def mapping_init(
    path: Annotated[Path, typer.Argument(help="Where to write the file.", dir_okay=False)] = Path(
        "mapping.toml"
    ),
    metadata: Metadata = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write the built-in rules as a mapping file; used as is, it maps exactly as no file."""
    if path.exists() and not force:
        errors.print(f"error: {path} exists; use --force to overwrite it", markup=False)
        raise typer.Exit(EXIT_CONFIG)
    text = builtin_mapping_toml((metadata or MetadataMode.metadata).value)
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        errors.print(f"error: cannot write {path}: {exc.strerror}", markup=False)
        raise typer.Exit(EXIT_CONFIG) from None
    console.print(f"wrote {path}; run with --mapping {path} (or MAPPING_FILE={path})", markup=False)


@mapping_app.command("check")
def mapping_check(
    env_file: EnvFile = None,
    source: SourceOption = None,
    sample: Annotated[
        int, typer.Option("--sample", min=1, help="Profiles to read from the source.")
    ] = 200,
    metadata: Metadata = None,
    mapping: MappingOption = None,
    schema_policy: SchemaPolicyOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the check as JSON.")] = False,
) -> None:
    """Map a sample of profiles and check them against the live Voucherify metadata schema:
    per target field, how many are filled, coerced, dropped or would be rejected, and why.
    Nothing is sent."""
    settings = _settings(env_file, {"MIGRATOR_SOURCE": source.value} if source else None)
    _setup_logging(None, False, settings.secrets)
    options = _options(settings, metadata, mapping, schema_policy, False)
    result = _execute(lambda view: check_mapping(settings, options, sample))
    if as_json:
        console.print_json(json.dumps(result.as_dict()))
    else:
        show_mapping_check(result)


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
        serve(
            options.settings,
            options.host,
            options.port,
            access_log=options.access_log,
            profiles_sync=options.profiles_sync,
        )
    except KeyboardInterrupt:
        raise typer.Exit(0) from None
    except ConfigError as exc:
        errors.print(f"error: {exc}", markup=False)
        raise typer.Exit(EXIT_CONFIG) from None


if __name__ == "__main__":  # pragma: no cover
    app()
