"""The commands around a run: the mapping file (`mapping init`, `mapping check`) and the
sandbox (`demo`, `sandbox`). Registered on the app by `migrator.cli`."""

from __future__ import annotations

import json
import signal
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from migrator.cli_common import (
    EnvFile,
    MappingOption,
    Metadata,
    SchemaPolicyOption,
    SourceOption,
    _options,
    _settings,
    _setup_logging,
)
from migrator.cli_exec import CommandReport, execute, fail, reporting
from migrator.config import SourceName
from migrator.entry import Interrupted
from migrator.exceptions import ConfigError
from migrator.mapping import MetadataMode
from migrator.mapping_check import check_mapping
from migrator.mapping_file import builtin_mapping_toml
from migrator.result import EXIT_CONFIG, EXIT_INTERRUPTED

if TYPE_CHECKING:
    from migrator_sandbox.settings import SandboxSettings

from migrator.views import (
    ProgressView,
    console,
    errors,
    show_demo,
    show_mapping_check,
    show_summary,
)

Profiles = Annotated[
    int, typer.Option("--profiles", min=1, help="Profiles to generate.", metavar="N")
]
SegmentRate = Annotated[
    int,
    typer.Option(
        "--segment-rate", min=1, help="The sandbox space's Segment requests/s.", metavar="N"
    ),
]
Seed = Annotated[int, typer.Option("--seed", help="Seed of the generated profiles.", metavar="N")]
DemoOutDir = Annotated[
    Path | None,
    typer.Option(
        "--out-dir",
        help="Where to write the run's files (default: a new temp dir).",
        file_okay=False,
        metavar="DIR",
    ),
]
TypedSchema = Annotated[
    bool,
    typer.Option(
        "--typed-schema/--no-typed-schema",
        help="Voucherify defines a typed customer metadata schema (number, boolean, date, "
        'datetime, string array, constraints) and the traits are loosely typed ("34", '
        '"true", naive date-times, a lone string for an array): every value must be '
        "converted to land. Default: on.",
    ),
]


def demo(
    profiles: Profiles = 3000,
    segment_rate: SegmentRate = 250,
    seed: Seed = 1,
    out_dir: DemoOutDir = None,
    metadata: Metadata = None,
    source: SourceOption = None,
    typed_schema: TypedSchema = True,
) -> None:
    """Migrate a local sandbox of both APIs and verify every customer. Needs no credentials.

    With --source profiles-sync the profiles are loaded into a throwaway Postgres (the
    pgserver wheel: pip install -e '.[sandbox]') and read from Profiles Sync views.
    """
    from migrator_sandbox.demo import run_demo, run_demo_profiles_sync
    from migrator_sandbox.settings import SandboxSettings

    _setup_logging(CommandReport(None, "demo"), None, False, ())
    target = out_dir or Path(tempfile.mkdtemp(prefix="migrator-demo-"))
    sandbox = SandboxSettings(
        profiles=profiles,
        seed=seed,
        segment_rate=segment_rate,
        latency_min_ms=20,
        latency_max_ms=80,
        typed_schema=typed_schema,
        loose_metadata=typed_schema,
    )
    warehouse = source == SourceName.profiles_sync
    _announce(sandbox, warehouse, target)
    mode = (metadata or MetadataMode.metadata).value
    demo_run = run_demo_profiles_sync if warehouse else run_demo
    try:
        result = execute(
            ProgressView(profiles),
            lambda view: demo_run(sandbox, target, mode, on_start=view.attach),
        )
    except Interrupted:
        errors.print("interrupted", markup=False)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except ConfigError as exc:  # no pgserver for --source profiles-sync, a port taken...
        errors.print(f"error: {exc}", markup=False)
        raise typer.Exit(EXIT_CONFIG) from None
    show_summary(result.run, "migrator demo")
    show_demo(result)
    raise typer.Exit(0 if result.ok else 1)


def _announce(sandbox: SandboxSettings, warehouse: bool, target: Path) -> None:
    where = (
        "Profiles Sync views in a local Postgres"
        if warehouse
        else f"Segment limit {sandbox.segment_rate} requests/s"
    )
    typed = (
        "; a typed metadata schema in Voucherify, loosely typed traits in Segment"
        if sandbox.typed_schema
        else ""
    )
    console.print(
        f"sandbox: {sandbox.profiles} generated profiles, {where}, Voucherify 2,000 "
        f"requests/min{typed}; files in {target}",
        markup=False,
    )


mapping_app = typer.Typer(
    help="Shape the mapping with a file, and check it against a sample before anything is sent.",
    no_args_is_help=True,
)


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
    with reporting(None, "mapping check") as rep:
        settings = _settings(rep, env_file, source, None)
        _setup_logging(rep, None, False, settings.secrets)
        options = _options(rep, settings, None, env_file, metadata, mapping, schema_policy, False)
        try:
            result = execute(ProgressView(), lambda view: check_mapping(settings, options, sample))
        except ConfigError as exc:
            fail(rep, EXIT_CONFIG, "config_error", exc)
        if as_json:
            console.print_json(json.dumps(result.as_dict()))
        else:
            show_mapping_check(result)


def sandbox(ctx: typer.Context) -> None:
    """Serve the sandbox of both APIs and print the variables that point `migrator run` at it.

    Knobs: --profiles N --port P --segment-rate R --voucherify-rate R --latency-ms MIN,MAX
    --fault-5xx X ... (run `migrator sandbox --help` for the whole list).
    """
    from migrator_sandbox.server import serve
    from migrator_sandbox.settings import parse_args

    options = parse_args(list(ctx.args), prog="migrator sandbox")
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C stops the server
    try:
        serve(
            options.settings,
            options.host,
            options.port,
            access_log=options.access_log,
            profiles_sync=options.profiles_sync,
        )
    except (KeyboardInterrupt, Interrupted):
        raise typer.Exit(0) from None
    except ConfigError as exc:
        errors.print(f"error: {exc}", markup=False)
        raise typer.Exit(EXIT_CONFIG) from None
