"""What the commands share: their options, logging, settings and how a command's coroutine
runs (progress, signals, one-line errors). Typer and rich only; no business logic."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
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
from migrator.mapping_file import load_mapping
from migrator.memory import pin_mmap_threshold
from migrator.runner import (
    EXIT_CONFIG,
    EXIT_INTERRUPTED,
    EXIT_LOCKED,
    RunResult,
)
from migrator.schema import SchemaPolicy
from migrator.views import (
    ProgressView,
    errors,
)

T = TypeVar("T")

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
