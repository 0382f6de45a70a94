"""Smoke check of benchmarks/throughput.py: every scenario runs end to end and is verified.

`--quick` uses a few hundred profiles per scenario and applies no timed target, so this
asserts only that the harness works (sandbox and migrator processes, stats, the oracle's
verdict, the table), never a speed.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "throughput.py"


def load_benchmark() -> Any:
    spec = importlib.util.spec_from_file_location("throughput", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.e2e
def test_quick_benchmark_runs_every_scenario_and_prints_the_table() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split()[:3] == ["scenario", "profiles", "elapsed"]
    rows = {line.split()[0]: line for line in lines[2:] if line and not line.startswith(" ")}
    bench = load_benchmark()
    assert set(rows) == set(bench.SCENARIOS)
    for name, row in rows.items():
        assert row.split()[-2:] == ["yes", "met"], f"{name}: {row}"


def test_markdown_table_has_a_row_per_result() -> None:
    bench = load_benchmark()
    result = bench.Result(bench.SCENARIOS["r100"], 200, elapsed=4.0, profiles_per_s=50.0)
    result.verified = True
    broken = bench.Result(bench.SCENARIOS["nolimit"], 300, error="RuntimeError: boom")
    text = bench.render([result, broken], markdown=True)
    lines = text.splitlines()
    assert lines[0].startswith("| scenario | profiles |")
    assert lines[2].startswith("| r100 | 200 | 4.0 | 50.0 |")
    assert lines[2].endswith("| yes | met |")
    assert lines[3].endswith("| no | ERROR |")
    assert "- nolimit: ERROR RuntimeError: boom" in text


@pytest.mark.e2e
def test_quick_profiles_sync_benchmark_runs_every_scenario() -> None:
    """benchmarks/profiles_sync.py end to end on small warehouses (no timed target)."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "profiles_sync.py"), "--quick", "--repeat", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {
        line.split()[0]: line.split() for line in done.stdout.splitlines() if line.startswith("ps-")
    }
    assert set(rows) == {"ps-dry-0k", "ps-dry-3k", "ps-writes", "ps-unchanged"}
    assert rows["ps-writes"][-2:] == ["yes", "met"]
    assert rows["ps-unchanged"][5] == "0"  # no bulk write on an unchanged rerun
    runs = [line for line in done.stdout.splitlines() if line.startswith("- ps-dry-3k: runs:")]
    assert len(runs) == 1 and runs[0].count("/s (host ms") == 2 and "median" in runs[0]
