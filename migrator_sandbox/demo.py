"""`migrator demo`: a full migration against an in-process sandbox, verified field by field.

It needs no credentials and no `.env`: the sandbox serves both APIs on a free local port,
the real pipeline migrates every generated profile, and the oracle (an independent
implementation of docs/mapping.md) checks every customer Voucherify ended up with, the
no-identifier list and the failure ledger.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from migrator.config import RunOptions, Settings, load_settings
from migrator.mapping import MetadataMode
from migrator.outputs import DUPLICATES_FILE, FAILURES_FILE, NO_IDENTIFIER_FILE
from migrator.result import RunResult
from migrator.runner import OnStart, run_migration
from migrator_sandbox.generator import ProfileGenerator
from migrator_sandbox.metadata_rules import live_definitions
from migrator_sandbox.oracle import Verification, verify
from migrator_sandbox.server import SandboxServer
from migrator_sandbox.settings import SandboxSettings
from migrator_sandbox.warehouse import WarehouseCheck

#: The demo's Voucherify plan: Organization (2,000 requests/minute).
DEMO_VOUCHERIFY_RATE = 2000


@dataclass
class DemoResult:
    run: RunResult
    verification: Verification | WarehouseCheck
    listed_without_identifier: int
    listed_correctly: bool
    ledger_lines: int
    segment_429: int
    listed_duplicates: int = 0
    duplicates_listed_correctly: bool = True
    #: Keys in the typed metadata schema Voucherify applied (0: none defined).
    schema_keys: int = 0
    #: Metadata values the migrator converted to their schema type before sending.
    coerced: int = 0
    #: Customers the sandbox's Voucherify rejected for their metadata.
    schema_rejections: int = 0

    @property
    def ok(self) -> bool:
        return (
            self.run.exit_code == 0
            and self.verification.ok
            and self.listed_correctly
            and self.duplicates_listed_correctly
            and self.ledger_lines == 0
            and self.schema_rejections == 0
        )


async def run_demo(
    sandbox_settings: SandboxSettings,
    out_dir: Path,
    metadata_mode: str = "metadata",
    on_start: OnStart | None = None,
) -> DemoResult:
    async with SandboxServer(sandbox_settings) as server:
        settings, result = await _migrate(server, {}, out_dir, metadata_mode, on_start)
        verification = verify(server.sandbox, settings.identifier, metadata_mode)
        stats = server.sandbox.stats_json()
    return _outcome(result, verification, out_dir, stats, sandbox_settings)


async def _migrate(
    server: SandboxServer,
    source: dict[str, str],
    out_dir: Path,
    metadata_mode: str,
    on_start: OnStart | None,
) -> tuple[Settings, RunResult]:
    """`migrator run --restart` against the sandbox (on the demo's plan), settled."""
    env = server.env() | source
    env.setdefault("VOUCHERIFY_RATE_LIMIT", str(DEMO_VOUCHERIFY_RATE))
    settings = load_settings(env)
    result = await run_migration(
        settings,
        out_dir,
        RunOptions(metadata_mode=MetadataMode(metadata_mode)),
        restart=True,
        on_start=on_start,
    )
    await server.sandbox.wait_idle()
    return settings, result


def _outcome(
    result: RunResult,
    verification: Verification | WarehouseCheck,
    out_dir: Path,
    stats: dict[str, Any],
    sandbox_settings: SandboxSettings,
) -> DemoResult:
    """The run, the oracle's verdict, and what the files and the sandbox say about the rest."""
    listed = _listed(out_dir / NO_IDENTIFIER_FILE)
    duplicates = _duplicates(out_dir / DUPLICATES_FILE)
    ledger = out_dir / FAILURES_FILE
    ledger_lines = len(ledger.read_text(encoding="utf-8").splitlines()) if ledger.exists() else 0
    return DemoResult(
        run=result,
        verification=verification,
        listed_without_identifier=len(listed),
        listed_correctly=sorted(listed) == sorted(verification.no_identifier),
        ledger_lines=ledger_lines,
        segment_429=int(stats.get("segment_429", 0)),
        schema_keys=len(live_definitions(sandbox_settings.schema)),
        coerced=sum(k.get("coerced", 0) for k in result.counts.metadata_schema.values()),
        schema_rejections=int(stats.get("metadata_rejections", 0)),
        listed_duplicates=len(duplicates),
        # The warehouse check does not list duplicates; its demo data has none.
        duplicates_listed_correctly=sorted(duplicates)
        == sorted(getattr(verification, "duplicates", [])),
    )


def _listed(path: Path) -> list[str]:
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return [row["segment_id"] for row in csv.DictReader(handle)]


#: The schema of the demo's Profiles Sync views.
DEMO_SCHEMA = "segment_profiles"


async def run_demo_profiles_sync(
    sandbox_settings: SandboxSettings,
    out_dir: Path,
    metadata_mode: str = "metadata",
    on_start: OnStart | None = None,
    database_url: str | None = None,
) -> DemoResult:
    """The demo with the Profiles Sync source: the generated profiles are loaded into a
    real Postgres (a throwaway `pgserver` unless `database_url` is given), the run reads
    the views, and an independent reader of the views checks what Voucherify holds."""
    import asyncio

    from migrator_sandbox.warehouse import Postgres, create_views, load, verify_warehouse

    with Postgres.serve(database_url) as postgres:
        engine = postgres.engine()
        await asyncio.to_thread(create_views, engine, DEMO_SCHEMA)
        await asyncio.to_thread(load, engine, DEMO_SCHEMA, ProfileGenerator(sandbox_settings))
        async with SandboxServer(sandbox_settings) as server:
            source = {
                "MIGRATOR_SOURCE": "profiles-sync",
                "PROFILES_SYNC_URL": postgres.url,
                "PROFILES_SYNC_SCHEMA": DEMO_SCHEMA,
            }
            settings, result = await _migrate(server, source, out_dir, metadata_mode, on_start)
            check = await asyncio.to_thread(
                verify_warehouse,
                engine,
                DEMO_SCHEMA,
                server.sandbox.customers,
                settings.identifier,
                metadata_mode,
                metadata_schema=sandbox_settings.schema,
            )
            stats = server.sandbox.stats_json()
        engine.dispose()
    return _outcome(result, check, out_dir, stats, sandbox_settings)


def _duplicates(path: Path) -> list[tuple[str, str, str]]:
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return [
            (row["source_id"], row["segment_id"], row["owner_segment_id"])
            for row in csv.DictReader(handle)
        ]
