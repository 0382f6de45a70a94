"""Issue 11 against the Profile API sandbox: one owner per source_id, and removals that
reach Voucherify (or do not, with --keep-removed)."""

from __future__ import annotations

import asyncio
import csv
from pathlib import Path
from typing import Any

from migrator.config import RunOptions
from migrator.result import RunResult
from migrator.runner import run_migration
from migrator_sandbox.oracle import verify
from tests.helpers import settings_for


def migrate(sb: Any, out: Path, **options: Any) -> RunResult:
    return asyncio.run(run_migration(settings_for(sb), out, RunOptions(**options)))


def received(sb: Any) -> int:
    return int(sb.sandbox.stats_json()["customers_received"])


def test_shared_identifiers_have_one_owner_listed_once_and_settle(
    make_sandbox: Any, tmp_path: Path
) -> None:
    sb = make_sandbox(profiles=300, shared_identifier=0.1)
    assert migrate(sb, tmp_path).exit_code == 0
    assert sb.wait_idle()
    check = verify(sb.sandbox)
    assert check.ok, check.summary()
    assert check.duplicates
    with (tmp_path / "duplicate-identifiers.csv").open(newline="", encoding="utf-8") as handle:
        rows = [
            (r["source_id"], r["segment_id"], r["owner_segment_id"]) for r in csv.DictReader(handle)
        ]
    assert sorted(rows) == sorted(check.duplicates)
    sent = received(sb)
    again = migrate(sb, tmp_path)
    assert again.exit_code == 0 and received(sb) == sent  # an unchanged space sends nothing
    with (tmp_path / "duplicate-identifiers.csv").open(newline="", encoding="utf-8") as handle:
        assert len(list(csv.DictReader(handle))) == len(rows)  # no line twice across runs


def test_removed_traits_are_cleared(make_sandbox: Any, tmp_path: Path) -> None:
    sb = make_sandbox(profiles=200, merge_objects=True)  # the strict case: objects merge
    assert migrate(sb, tmp_path).exit_code == 0
    assert sb.wait_idle()
    changed = sb.mutate(remove=["phone", "metadata.loyalty_tier"], count=5)
    assert changed
    assert migrate(sb, tmp_path).exit_code == 0
    assert sb.wait_idle()
    check = verify(sb.sandbox)
    assert check.ok, check.summary()


def test_keep_removed_leaves_what_was_written(make_sandbox: Any, tmp_path: Path) -> None:
    sb = make_sandbox(profiles=200)
    assert migrate(sb, tmp_path).exit_code == 0
    assert sb.wait_idle()
    before = {k: dict(v) for k, v in sb.sandbox.customers.items()}
    changed = sb.mutate(remove=["phone"], count=5)
    assert migrate(sb, tmp_path, keep_removed=True).exit_code == 0
    assert sb.wait_idle()
    kept = [s for s, c in before.items() if c.get("phone")]
    assert all(sb.sandbox.customers[s].get("phone") == before[s]["phone"] for s in kept)
    assert changed
