"""What the commands share: their options, their settings (the environment over `.env` over
what --out-dir stored) and logging. Typer and rich only; no business logic."""

from __future__ import annotations

import logging
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, cast

import typer

from migrator.cli_exec import CommandReport, fail
from migrator.config import (
    RunOptions,
    Settings,
    SourceName,
    env_file_read,
    load_settings,
    read_environment,
)
from migrator.exceptions import ConfigError
from migrator.logs import ConsoleFilter, RedactingFilter
from migrator.mapping import METADATA_MODES, MetadataMode
from migrator.mapping_file import load_mapping
from migrator.outputs import make_private
from migrator.result import EXIT_CONFIG
from migrator.schema import SchemaPolicy
from migrator.shape import stored_defaults
from migrator.views import make_console_handler

EnvFile = Annotated[
    Path | None,
    typer.Option(
        "--env-file",
        help="Read settings from this file instead of ./.env.",
        dir_okay=False,
        metavar="FILE",
    ),
]
OutDir = Annotated[
    Path,
    typer.Option(
        "--out-dir",
        help="Where the state, the lists and the ledger are written (holds customer data: "
        "a new one is created 0700).",
        file_okay=False,
        metavar="DIR",
    ),
]
NoInput = Annotated[
    bool,
    typer.Option("--no-input", help="Never prompt (for cron); exit 3 if stopped.", metavar=""),
]
Report = Annotated[
    Path | None,
    typer.Option(
        "--report",
        help="Write a JSON summary here on every exit (outcome, exit code, stop reason, "
        "resume command).",
        dir_okay=False,
        metavar="FILE",
    ),
]
LogFile = Annotated[
    Path | None,
    typer.Option(
        "--log-file",
        help="Append a detailed log here: run start and end, one line per request.",
        dir_okay=False,
        metavar="FILE",
    ),
]
Verbose = Annotated[
    bool,
    typer.Option(
        "--verbose", "-v", help="Show info lines and every retry, not only warnings.", metavar=""
    ),
]
SourceOption = Annotated[
    SourceName | None,
    typer.Option(
        "--source",
        help="Where to read profiles: profile-api (Segment's API, the default) or "
        "profiles-sync (the Profiles Sync views in your warehouse). Also MIGRATOR_SOURCE. "
        "Default: the source stored in --out-dir.",
        case_sensitive=False,
        show_default=False,
        metavar="[profile-api|profiles-sync]",
    ),
]
Metadata = Annotated[
    MetadataMode | None,
    typer.Option(
        "--metadata",
        help="metadata: send the `metadata` trait; all: every trait not mapped to a field; "
        "none: no metadata. Default: the mode stored in --out-dir, else metadata.",
        case_sensitive=False,
        show_default=False,
        metavar="[metadata|all|none]",
    ),
]

KeepRemoved = Annotated[
    bool,
    typer.Option(
        "--keep-removed",
        help="Leave in Voucherify the fields and metadata keys this tool wrote earlier that "
        "Segment no longer has (default: clear them). Also MIGRATOR_KEEP_REMOVED=true.",
        metavar="",
    ),
]
MappingOption = Annotated[
    Path | None,
    typer.Option(
        "--mapping",
        help="A mapping file (TOML; `migrator mapping init` writes the built-in rules as "
        "one). Also MAPPING_FILE. Default: the file stored in --out-dir, else the built-in "
        "rules.",
        dir_okay=False,
        show_default=False,
        metavar="FILE",
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
        metavar="[drop_value|drop_customer|send]",
    ),
]


def _interactive() -> bool:
    """A person at a terminal: never true under cron (no TTY, maybe no stdin at all)."""
    return (
        sys.stdin is not None
        and sys.stdout is not None
        and sys.stdin.isatty()
        and sys.stdout.isatty()
    )


def _confirm(question: str) -> bool:
    """Ask once; anything but yes (end of input included) is no. Ctrl-C is an interrupt."""
    try:
        answer = input(f"{question} [y/N]: ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


# -- settings and logging -----------------------------------------------------------------------


def _settings(
    rep: CommandReport,
    env_file: Path | None,
    source: SourceName | None,
    stored: dict[str, Any] | None,
) -> Settings:
    """The environment over `.env` over the options stored in --out-dir; `--source` over all."""
    try:
        env = read_environment(env_file, stored_defaults(stored))
        if source is not None:
            env["MIGRATOR_SOURCE"] = source.value
        return load_settings(env)
    except ConfigError as exc:
        fail(rep, EXIT_CONFIG, "config_error", exc)


def _metadata(flag: MetadataMode | None, stored: dict[str, Any] | None) -> MetadataMode | None:
    """The flag, else the stored mode; None: the mapping file's mode, else `metadata`."""
    if flag is not None:
        return flag
    value = (stored or {}).get("metadata")
    return MetadataMode(value) if value in METADATA_MODES else None


def _setup_logging(
    rep: CommandReport, log_file: Path | None, verbose: bool, secrets: tuple[str, ...]
) -> None:
    """Warnings on the console (retries summarised; every line with -v); details in the file."""
    logger = logging.getLogger("migrator")
    logger.handlers.clear()
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    redact = RedactingFilter(secrets)
    handler = make_console_handler()
    handler.setLevel(logging.INFO)
    handler.addFilter(redact)
    handler.addFilter(ConsoleFilter(handler, verbose=verbose))
    logger.addHandler(handler)
    if log_file is not None:
        try:
            log_file.parent.mkdir(parents=True, exist_ok=True)
            make_private(log_file)  # it names profiles: owner only
            file_handler = logging.FileHandler(log_file, encoding="utf-8")
        except OSError as exc:
            fail(
                rep,
                EXIT_CONFIG,
                "config_error",
                f"--log-file {log_file} cannot be written: {exc.strerror or exc}",
            )
        file_handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
        )
        file_handler.setLevel(logging.DEBUG)
        file_handler.addFilter(redact)
        logger.addHandler(file_handler)


def _options(
    rep: CommandReport,
    settings: Settings,
    stored: dict[str, Any] | None,
    env_file: Path | None,
    metadata: MetadataMode | None,
    mapping: Path | None,
    schema_policy: SchemaPolicyName | None,
    keep_removed: bool,
    **flags: bool,
) -> RunOptions:
    """The run's options: flags over the environment over what --out-dir stored."""
    path = mapping or (Path(settings.mapping_file) if settings.mapping_file else None)
    if path is None and stored and isinstance(stored.get("mapping"), str):
        path = Path(stored["mapping"])
    try:
        spec = load_mapping(path) if path is not None else None
    except ConfigError as exc:
        fail(rep, EXIT_CONFIG, "config_error", exc)
    policy = schema_policy.value if schema_policy else settings.schema_policy
    return RunOptions(
        metadata_mode=_metadata(metadata, stored),
        mapping=spec,
        mapping_path=None if path is None else str(path.absolute()),
        schema_policy=cast(SchemaPolicy, policy),
        keep_removed=keep_removed or settings.keep_removed,
        env_file=env_file_read(env_file),
        **flags,
    )


# -- run's own options -----------------------------------------------------------------------

Offset = Annotated[
    str | None,
    typer.Option(
        "--offset",
        help="Start at this position (a Segment list cursor, or a Profiles Sync position "
        "from a resume command); overrides the checkpoint.",
        metavar="CURSOR",
    ),
]
Restart = Annotated[
    bool,
    typer.Option(
        "--restart",
        help="Ignore the checkpoint; start at the first page (also: accept options that "
        "differ from the stored ones).",
        metavar="",
    ),
]
Full = Annotated[
    bool,
    typer.Option(
        "--full",
        help="Send every customer, changed or not (also: accept options that differ from "
        "the stored ones).",
        metavar="",
    ),
]
DryRun = Annotated[
    bool,
    typer.Option("--dry-run", help="Read and map; write dry-run.jsonl; send nothing.", metavar=""),
]
