"""End-to-end runs of the pipeline against the sandbox: every profile accounted for, field by
field; schema-valid bodies with no null; reruns that send only what changed."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from migrator.outputs import DRY_RUN_FILE
from migrator.pipeline import RunOptions
from migrator.result import RunResult
from migrator.runner import retry_failed, run_migration
from migrator.status import status
from migrator_sandbox.oracle import verify
from tests.helpers import assert_valid_bodies, has_null, ledger, listed, settings_for


def migrate(
    sandbox: Any, out: Path, *, offset: str | None = None, restart: bool = False, **options: Any
) -> RunResult:
    env = options.pop("env", {})
    return asyncio.run(
        run_migration(
            settings_for(sandbox, **env), out, RunOptions(**options), offset=offset, restart=restart
        )
    )


@pytest.mark.parametrize("mode", ["metadata", "all", "none"])
def test_every_profile_arrives_correct_to_the_last_field(
    make_sandbox: Any, tmp_path: Path, mode: str
) -> None:
    sandbox = make_sandbox(profiles=400)
    result = migrate(sandbox, tmp_path, metadata_mode=mode)
    assert result.exit_code == 0, result.outcome
    sandbox.wait_idle()
    check = verify(sandbox.sandbox, "user_id", mode)
    assert check.ok, check.summary()
    assert check.expected > 300
    # Profiles without the identifier: listed once each, none sent.
    assert sorted(listed(tmp_path)) == sorted(check.no_identifier)
    assert check.no_identifier
    assert ledger(tmp_path) == []
    assert assert_valid_bodies(sandbox) == check.expected
    counts = result.counts
    assert counts.profiles_read == 400
    assert counts.confirmed == check.expected
    assert counts.no_identifier == len(check.no_identifier)


def test_long_tail_profiles_read_every_page(make_sandbox: Any, tmp_path: Path) -> None:
    """Profiles with 300 traits and user_id on a later external_ids page still arrive whole."""
    sandbox = make_sandbox(profiles=120, long_tail=1.0)
    result = migrate(sandbox, tmp_path, metadata_mode="all", env={"SEGMENT_TRAITS_LIMIT": "50"})
    assert result.exit_code == 0
    sandbox.wait_idle()
    check = verify(sandbox.sandbox, "user_id", "all")
    assert check.ok, check.summary()
    stats = sandbox.sandbox.stats_json()
    # 201..300 traits at 50 a page: at least 5 traits calls per profile.
    assert stats["segment_requests"] >= 120 * 6


def test_another_identifier_type_as_source_id(make_sandbox: Any, tmp_path: Path) -> None:
    sandbox = make_sandbox(profiles=200)
    result = migrate(sandbox, tmp_path, env={"IDENTIFIER_SAVED_AS_SOURCE_ID": "anonymous_id"})
    assert result.exit_code == 0
    sandbox.wait_idle()
    check = verify(sandbox.sandbox, "anonymous_id", "metadata")
    assert check.ok, check.summary()
    assert_valid_bodies(sandbox)


def test_dry_run_sends_nothing_and_writes_what_it_would(sandbox: Any, tmp_path: Path) -> None:
    result = migrate(sandbox, tmp_path, dry_run=True)
    assert result.exit_code == 0
    assert sandbox.sandbox.stats_json()["bulk_requests"] == 0
    lines = (tmp_path / DRY_RUN_FILE).read_text(encoding="utf-8").splitlines()
    check = verify(sandbox.sandbox)
    assert len(lines) == check.expected == result.counts.would_send
    assert all(not has_null(json.loads(line)) for line in lines)
    assert status(tmp_path)["customers_confirmed"] == 0


def test_rerun_of_an_unchanged_space_sends_nothing(sandbox: Any, tmp_path: Path) -> None:
    first = migrate(sandbox, tmp_path)
    assert first.exit_code == 0
    sandbox.wait_idle()
    before = sandbox.sandbox.stats_json()["bulk_requests"]
    second = migrate(sandbox, tmp_path)
    assert second.exit_code == 0
    assert sandbox.sandbox.stats_json()["bulk_requests"] == before
    assert second.counts.customers_sent == 0
    assert second.counts.unchanged == first.counts.confirmed
    assert listed(tmp_path) == sorted(set(listed(tmp_path)), key=listed(tmp_path).index)


def test_rerun_sends_only_changed_customers_and_fields(sandbox: Any, tmp_path: Path) -> None:
    assert migrate(sandbox, tmp_path).exit_code == 0
    sandbox.wait_idle()
    check = verify(sandbox.sandbox)
    # Pick three migrated profiles and change one field each.
    targets = [sid for sid in sandbox.sandbox.segment_ids() if sid not in check.no_identifier][:3]
    sandbox.call(sandbox.sandbox.set_trait, targets[0], "email", "changed@example.com")
    sandbox.call(sandbox.sandbox.set_trait, targets[1], "city", "Reykjavík")
    sandbox.call(sandbox.sandbox.set_trait, targets[2], "metadata", {"tier": "platinum"})
    sent_before = len(sandbox.sandbox.bodies)
    result = migrate(sandbox, tmp_path)
    assert result.exit_code == 0
    sandbox.wait_idle()
    items = [item for body in sandbox.sandbox.bodies[sent_before:] for item in body]
    assert len(items) == 3
    keys = sorted(tuple(sorted(item)) for item in items)
    assert ("email", "source_id") in keys
    assert ("metadata", "source_id") in keys
    # An address change sends the whole address object, not just the city.
    address_item = next(item for item in items if "address" in item)
    assert set(address_item) == {"source_id", "address"}
    assert address_item["address"]["city"] == "Reykjavík"
    assert verify(sandbox.sandbox).ok


def test_a_field_edited_in_voucherify_survives_a_rerun(sandbox: Any, tmp_path: Path) -> None:
    assert migrate(sandbox, tmp_path).exit_code == 0
    sandbox.wait_idle()
    source_id, customer = next(iter(sandbox.sandbox.customers.items()))

    def edit() -> None:
        sandbox.sandbox.customers[source_id]["description"] = "edited by the marketing team"

    sandbox.call(edit)
    assert migrate(sandbox, tmp_path).exit_code == 0
    sandbox.wait_idle()
    assert sandbox.sandbox.customers[source_id]["description"] == "edited by the marketing team"
    # --full sends everything again, and Segment's value wins.
    assert migrate(sandbox, tmp_path, full=True).exit_code == 0
    sandbox.wait_idle()
    assert sandbox.sandbox.customers[source_id].get("description") == customer.get("description")


def test_customer_errors_go_to_the_ledger_and_retry_failed_clears_them(
    make_sandbox: Any, tmp_path: Path
) -> None:
    sandbox = make_sandbox(profiles=300, fault_customer_error=0.1)
    result = migrate(sandbox, tmp_path)
    assert result.exit_code == 1
    failures = ledger(tmp_path)
    assert failures and len(failures) == result.counts.failed
    for record in failures:
        assert set(record) == {"segment_id", "source_id", "error", "payload"}
        assert record["payload"]["source_id"] == record["source_id"]
    sandbox.wait_idle()
    check = verify(sandbox.sandbox)
    assert len(check.missing) == len(failures)  # nothing lost: each missing one is in the ledger
    assert {r["source_id"] for r in failures} == set(check.missing)

    sandbox.call(setattr, sandbox.sandbox.settings, "fault_customer_error", 0.0)
    retried = asyncio.run(retry_failed(settings_for(sandbox), tmp_path, RunOptions()))
    assert retried.exit_code == 0
    assert ledger(tmp_path) == []
    sandbox.wait_idle()
    assert verify(sandbox.sandbox).ok
    assert status(tmp_path)["failures_pending"] == 0


def test_failed_async_actions_are_resent(make_sandbox: Any, tmp_path: Path) -> None:
    sandbox = make_sandbox(profiles=400, fault_action_failed=0.3)
    result = migrate(sandbox, tmp_path)
    sandbox.wait_idle()
    assert result.counts.batches_resent > 0
    check = verify(sandbox.sandbox)
    # Each missing customer is in the ledger (batches failed three times in a row), none lost.
    assert {r["source_id"] for r in ledger(tmp_path)} == set(check.missing)
    assert result.exit_code == (1 if check.missing else 0)


def test_status_reports_runs_and_confirmed_customers(sandbox: Any, tmp_path: Path) -> None:
    assert status(tmp_path)["runs"] == []
    result = migrate(sandbox, tmp_path)
    data = status(tmp_path)
    assert data["checkpoint"] is None
    assert data["customers_confirmed"] == result.counts.confirmed
    assert data["runs"][0]["outcome"] == "completed"
    assert data["profiles_without_identifier"] == result.counts.no_identifier


def test_retry_failed_that_stops_keeps_the_whole_ledger(make_sandbox: Any, tmp_path: Path) -> None:
    sandbox = make_sandbox(profiles=200, fault_customer_error=0.1)
    assert migrate(sandbox, tmp_path).exit_code == 1
    before = sorted(r["segment_id"] for r in ledger(tmp_path))
    assert before
    wrong_key = settings_for(sandbox, VOUCHERIFY_SECRET_KEY="not-the-key")
    stopped = asyncio.run(retry_failed(wrong_key, tmp_path, RunOptions()))
    assert stopped.exit_code == 3 and stopped.stopped is not None and stopped.stopped.account
    assert sorted(r["segment_id"] for r in ledger(tmp_path)) == before
    assert status(tmp_path)["failures_pending"] == len(before)


def test_allow_defined_only_drops_undefined_keys_not_the_customer(
    make_sandbox: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 12: under `allow_defined_only` undefined keys are dropped (and summarised once
    per key at warning level), so no customer is rejected for them."""
    schema = {"tier": {"type": "string", "array": False, "optional": True}}
    sandbox = make_sandbox(profiles=200, allow_defined_only=True, metadata_schema=schema)
    with caplog.at_level("WARNING", logger="migrator"):
        result = migrate(sandbox, tmp_path)
    sandbox.wait_idle()
    assert result.exit_code == 0
    assert ledger(tmp_path) == []
    assert any("undefined, dropped" in r.message for r in caplog.records)
    stored = sandbox.sandbox.customers
    assert stored and all(set(c.get("metadata") or {}) <= {"tier"} for c in stored.values())
    undefined = sum(t.get("undefined", 0) for t in result.counts.metadata_schema.values())
    assert undefined > 0, "generated metadata has keys beyond `tier`"
