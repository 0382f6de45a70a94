"""`migrator mapping init|check` and `--mapping` against the sandbox (issue 12)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from migrator_sandbox.oracle import verify
from tests.test_faults import child_env, cli


def test_mapping_init_writes_a_file_that_maps_exactly_as_no_file(
    make_sandbox: Any, tmp_path: Path
) -> None:
    done = cli(
        ["mapping", "init", str(tmp_path / "mapping.toml")], cwd=tmp_path, env={**os.environ}
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "mapping.toml").read_text(encoding="utf-8").startswith("# How a Segment")
    again = cli(
        ["mapping", "init", str(tmp_path / "mapping.toml")], cwd=tmp_path, env={**os.environ}
    )
    assert again.returncode == 2 and "--force" in again.stderr

    sb = make_sandbox(profiles=150)
    out = tmp_path / "out"
    run = cli(
        ["run", "--no-input", "--out-dir", str(out), "--mapping", str(tmp_path / "mapping.toml")],
        cwd=tmp_path,
        env=child_env(sb),
    )
    assert run.returncode == 0, run.stderr
    sb.wait_idle()
    assert verify(sb.sandbox).ok  # the oracle implements the built-in rules independently


def test_a_mapping_file_shapes_the_customers(make_sandbox: Any, tmp_path: Path) -> None:
    (tmp_path / "m.toml").write_text(
        'metadata_mode = "none"\n'
        "[customer]\n"
        'email = { from = "email", as = "lower" }\n'
        "[metadata]\n"
        'segment = { from = "missing_trait", default = "imported" }\n',
        encoding="utf-8",
    )
    sb = make_sandbox(profiles=80)
    out = tmp_path / "out"
    env = child_env(sb, MAPPING_FILE=str(tmp_path / "m.toml"))
    run = cli(["run", "--no-input", "--out-dir", str(out)], cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr
    sb.wait_idle()
    customers = sb.sandbox.customers.values()
    assert customers
    for customer in customers:
        assert set(customer) <= {"source_id", "email", "metadata"}
        assert customer["metadata"] == {"segment": "imported"}
        if "email" in customer:
            assert customer["email"] == customer["email"].lower()


def test_a_bad_mapping_file_is_one_line_and_exit_2(make_sandbox: Any, tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text('[customer]\nemail = { as = "shout" }\n', encoding="utf-8")
    sb = make_sandbox(profiles=10)
    run = cli(
        ["run", "--no-input", "--out-dir", str(tmp_path / "o"), "--mapping", "bad.toml"],
        cwd=tmp_path,
        env=child_env(sb),
    )
    assert run.returncode == 2
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "bad.toml" in lines[0], run.stderr
    assert sb.sandbox.stats_json()["voucherify_requests"] == 0


def test_mapping_check_counts_per_field_and_sends_nothing(
    make_sandbox: Any, tmp_path: Path
) -> None:
    schema = {
        "points": {"type": "string", "optional": True},
        "opt_in": {"type": "number", "optional": True},
        "loyalty_tier": {"type": "string", "optional": True, "eq": ["gold"]},
    }
    sb = make_sandbox(profiles=200, metadata_schema=schema)
    done = cli(["mapping", "check", "--sample", "60", "--json"], cwd=tmp_path, env=child_env(sb))
    assert done.returncode == 0, done.stderr
    check = json.loads(done.stdout)
    assert check["profiles"] == 60 and check["schema_checked"] is True
    fields = check["fields"]
    assert fields["email"]["filled"] > 0
    # numbers become strings for a string key: coerced, not dropped
    assert fields["metadata.points"]["coerced"] == fields["metadata.points"]["filled"] > 0
    # a boolean cannot be a number, a tier outside `eq` cannot be sent: dropped, with why
    assert fields["metadata.opt_in"]["dropped"] > 0 and fields["metadata.opt_in"]["why"]
    assert fields["metadata.loyalty_tier"]["dropped"] > 0
    stats = sb.sandbox.stats_json()
    assert stats["bulk_requests"] == 0 and sb.sandbox.customers == {}

    table = cli(["mapping", "check", "--sample", "20"], cwd=tmp_path, env=child_env(sb))
    assert table.returncode == 0, table.stderr
    assert "0 would be rejected" in table.stdout  # the summary line is never wrapped
    assert "metadata.po" in table.stdout  # the table fits the terminal
