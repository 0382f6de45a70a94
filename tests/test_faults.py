"""The fault matrix: whatever the network and the APIs do, a run ends with Voucherify holding
exactly the customers of a fault-free run, every no-identifier profile listed once, an empty
failure ledger and exit 0. Account errors stop at once; exhausted retries stop resumably.

Also the shared helpers of the end-to-end reliability tests (test_durability, test_cli).
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import re
import shlex
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from migrator.pipeline import RunOptions, RunStopped
from migrator.result import RunResult
from migrator.runner import run_migration
from migrator.segment import SegmentClient
from migrator.state import STATE_FILE
from migrator.status import status
from migrator_sandbox.faults import FaultInjector
from migrator_sandbox.oracle import verify
from migrator_sandbox.server import ThreadedSandbox
from tests.conftest import FAST_ENV, sandbox_settings
from tests.helpers import assert_valid_bodies, ledger, listed, settings_for

PROFILES = 300

#: Every variable `migrator` reads: stripped from the inherited environment of a child.
MIGRATOR_VARS = (
    "SEGMENT_ACCESS_TOKEN",
    "SEGMENT_SPACE_ID",
    "VOUCHERIFY_APPLICATION_ID",
    "VOUCHERIFY_SECRET_KEY",
    "SEGMENT_API_URL",
    "VOUCHERIFY_API_URL",
    "SEGMENT_RATE_LIMIT",
    "VOUCHERIFY_RATE_LIMIT",
    "REQUEST_TIMEOUT",
    "MAX_ATTEMPTS",
    "SEGMENT_REQUEST_LIMIT",
    "SEGMENT_TRAITS_LIMIT",
    "IDENTIFIER_SAVED_AS_SOURCE_ID",
)


# -- helpers shared by the end-to-end reliability tests --------------------------------------


def migrate(
    sb: ThreadedSandbox,
    out: Path,
    *,
    offset: str | None = None,
    restart: bool = False,
    on_start: Callable[[Any], None] | None = None,
    **env: str,
) -> RunResult:
    """`migrator run` in this process against the sandbox."""
    return asyncio.run(
        run_migration(
            settings_for(sb, **env),
            out,
            RunOptions(),
            offset=offset,
            restart=restart,
            on_start=on_start,
        )
    )


def child_env(sb: ThreadedSandbox, **extra: str) -> dict[str, str]:
    """The environment of a `migrator` child: the sandbox's, nothing inherited that it reads."""
    base = {k: v for k, v in os.environ.items() if k not in MIGRATOR_VARS}
    return base | sb.env() | FAST_ENV | {"COLUMNS": "80"} | extra


def cli(
    args: list[str],
    *,
    cwd: Path,
    env: dict[str, str],
    timeout: float = 60.0,
) -> subprocess.CompletedProcess[str]:
    """`migrator ARGS` in a child process (the module entry point, as the console script)."""
    return subprocess.run(
        [sys.executable, "-m", "migrator.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def assert_migrated_exactly(
    sb: ThreadedSandbox, out: Path, expected_customers: dict[str, dict[str, Any]] | None = None
) -> None:
    """The issue's bar: every customer right, no-identifier listed once each, no failure."""
    assert sb.wait_idle(), "the sandbox still has unfinished async actions"
    check = verify(sb.sandbox, "user_id", "metadata")
    assert check.ok, check.summary()
    names = listed(out)
    assert len(names) == len(set(names)), "a profile is listed twice"
    assert set(names) == check.no_identifier
    assert check.no_identifier
    assert ledger(out) == []
    assert assert_valid_bodies(sb) >= check.expected
    if expected_customers is not None:
        assert sb.sandbox.customers == expected_customers


def set_knobs(sb: ThreadedSandbox, **knobs: Any) -> None:
    """Change sandbox knobs while it serves.

    The per-request fault shares are read once, when the FaultInjector is built, so a bare
    `setattr` on the settings does not reach them: build a new injector as well.
    """

    def apply() -> None:
        settings = sb.sandbox.settings
        for name, value in knobs.items():
            setattr(settings, name, value)
        injector = FaultInjector(settings)
        sb.sandbox.faults = injector
        sb.sandbox.actions.faults = injector

    sb.call(apply)


def read_state(out: Path, sql: str) -> list[tuple[Any, ...]]:
    """Query the state store of a run in another process (read-only, never creates it)."""
    path = out / STATE_FILE
    if not path.exists():
        return []
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2.0)
        try:
            return db.execute(sql).fetchall()
        finally:
            db.close()
    except sqlite3.OperationalError:
        return []  # not created yet, or its schema not written yet


def checkpoint_of(out: Path) -> dict[str, Any] | None:
    rows = read_state(out, "SELECT value FROM meta WHERE key = 'checkpoint'")
    return json.loads(rows[0][0]) if rows else None


def confirmed_in(out: Path) -> int:
    rows = read_state(out, "SELECT COUNT(*) FROM customers")
    return int(rows[0][0]) if rows else 0


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def fault_free_customers(seed: int, profiles: int) -> dict[str, dict[str, Any]]:
    """What Voucherify holds after an uninterrupted, fault-free run of an identical sandbox."""
    key = (seed, profiles)
    if key not in _BASELINES:
        with (
            ThreadedSandbox(sandbox_settings(profiles=profiles, seed=seed)) as sb,
            tempfile.TemporaryDirectory() as tmp,
        ):
            result = migrate(sb, Path(tmp))
            assert result.exit_code == 0, result.outcome
            assert_migrated_exactly(sb, Path(tmp))
            _BASELINES[key] = copy.deepcopy(sb.sandbox.customers)
    return _BASELINES[key]


_BASELINES: dict[tuple[int, int], dict[str, dict[str, Any]]] = {}


def seed_whose_first_action_fails(share: float) -> int:
    """A seed whose sandbox fails its first async action, so the fault surely happens."""
    for seed in range(1, 10_000):
        if FaultInjector(sandbox_settings(seed=seed, fault_action_failed=share)).action_fails():
            return seed
    raise AssertionError("no seed fails an action")  # pragma: no cover


# -- the matrix ---------------------------------------------------------------------------------

ACTION_FAILED_SEED = seed_whose_first_action_fails(0.05)

MATRIX: list[Any] = [
    pytest.param({"fault_5xx": 0.05}, {}, "5xx", 1, id="5xx-both-apis"),
    pytest.param({"fault_429_burst": 0.05}, {}, "429_burst", 1, id="429-bursts"),
    pytest.param(
        {"fault_hang": 0.02, "hang_cap_s": 3.0}, {"REQUEST_TIMEOUT": "1"}, "hang", 1, id="hangs"
    ),
    pytest.param({"fault_reset": 0.03}, {}, "reset", 1, id="connection-resets"),
    pytest.param({"fault_malformed": 0.03}, {}, "malformed", 1, id="malformed-bodies"),
    pytest.param(
        {"fault_action_failed": 0.05},
        {},
        "action_failed",
        ACTION_FAILED_SEED,
        id="async-actions-failed",
    ),
]


@pytest.mark.parametrize(("knobs", "env", "fault", "seed"), MATRIX)
def test_faults_change_nothing_in_the_outcome(
    make_sandbox: Any,
    tmp_path: Path,
    knobs: dict[str, Any],
    env: dict[str, str],
    fault: str,
    seed: int,
) -> None:
    expected = fault_free_customers(seed, PROFILES)
    sb = make_sandbox(profiles=PROFILES, seed=seed, **knobs)
    result = migrate(sb, tmp_path, **env)
    assert result.exit_code == 0, (result.outcome, str(result.stopped), ledger(tmp_path)[:3])
    assert result.outcome == "completed"
    stats = sb.sandbox.stats_json()
    assert stats["faults_injected"].get(fault, 0) > 0, stats["faults_injected"]
    if fault == "action_failed":
        assert result.counts.batches_resent > 0
    assert_migrated_exactly(sb, tmp_path, expected)
    assert result.counts.failed == 0
    assert status(tmp_path)["checkpoint"] is None


# -- account errors: stop at once, no retry storm ----------------------------------------------


def test_wrong_segment_token_stops_at_once(make_sandbox: Any, tmp_path: Path) -> None:
    sb = make_sandbox(profiles=PROFILES)
    started = time.monotonic()
    result = migrate(sb, tmp_path, SEGMENT_ACCESS_TOKEN="not-the-token")
    assert time.monotonic() - started < 5
    assert result.exit_code == 3
    assert isinstance(result.stopped, RunStopped)
    assert result.stopped.account
    assert "segment" in str(result.stopped) and "credentials" in str(result.stopped)
    stats = sb.sandbox.stats_json()
    assert stats["segment_requests"] <= 3, stats["segment_requests"]
    assert stats["voucherify_requests"] <= 1  # at most a credentials preflight
    assert sb.sandbox.customers == {}


def test_wrong_voucherify_secret_stops_at_once(make_sandbox: Any, tmp_path: Path) -> None:
    sb = make_sandbox(profiles=PROFILES)
    started = time.monotonic()
    result = migrate(sb, tmp_path, VOUCHERIFY_SECRET_KEY="not-the-secret")
    assert time.monotonic() - started < 5
    assert result.exit_code == 3
    assert isinstance(result.stopped, RunStopped)
    assert result.stopped.account
    assert "voucherify" in str(result.stopped) and "credentials" in str(result.stopped)
    stats = sb.sandbox.stats_json()
    # The preflight, or the bulk requests in flight when the first 401 came back; none retried.
    assert stats["voucherify_requests"] <= 4, stats["voucherify_requests"]
    assert stats["bulk_accepted"] == 0
    assert stats["segment_requests"] <= 3, stats["segment_requests"]
    assert ledger(tmp_path) == []  # an account error is not a customer's failure
    assert status(tmp_path)["customers_confirmed"] == 0


@pytest.mark.parametrize(
    ("variable", "api"),
    [("SEGMENT_ACCESS_TOKEN", "segment"), ("VOUCHERIFY_SECRET_KEY", "voucherify")],
)
def test_account_error_on_the_command_line_says_what_to_check(
    make_sandbox: Any, tmp_path: Path, variable: str, api: str
) -> None:
    sb = make_sandbox(profiles=PROFILES)
    out = tmp_path / "out"
    started = time.monotonic()
    done = cli(
        ["run", "--no-input", "--out-dir", str(out)],
        cwd=tmp_path,
        env=child_env(sb, **{variable: "wrong-credential"}),
        timeout=30,
    )
    assert time.monotonic() - started < 10
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    stopped = [line for line in done.stderr.splitlines() if line.startswith("stopped:")]
    assert len(stopped) == 1, done.stderr
    assert api in stopped[0] and "credentials were refused" in stopped[0]
    assert "check the credentials" in done.stderr
    assert "Resume with:" in done.stderr
    assert "wrong-credential" not in done.stderr + done.stdout


# -- retries exhausted: a resumable stop ---------------------------------------------------------


def test_exhausted_retries_stop_with_a_resume_cursor_that_completes_the_run(
    make_sandbox: Any, tmp_path: Path
) -> None:
    profiles = 400
    expected = fault_free_customers(1, profiles)
    sb = make_sandbox(profiles=profiles)
    out = tmp_path / "out"
    env = child_env(sb, SEGMENT_RATE_LIMIT="200", MAX_ATTEMPTS="2")
    child = subprocess.Popen(
        [sys.executable, "-m", "migrator.cli", "run", "--no-input", "--out-dir", str(out)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Once a page is settled (the checkpoint has moved), every request starts failing.
        wait_for(lambda: (checkpoint_of(out) or {}).get("cursor") is not None, 20, "a page")
        set_knobs(sb, fault_5xx=1.0)
        stdout, stderr = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    assert child.returncode == 3, stderr
    assert "Traceback" not in stderr + stdout
    assert "check the credentials" not in stderr  # not an account error
    checkpoint = status(out)["checkpoint"]
    assert checkpoint is not None and checkpoint["cursor"]
    # The command is complete: the absolute --out-dir, so it runs from any folder.
    match = re.search(r"Resume with:\n\s+(migrator run --offset (\S+) --out-dir (\S+))\s*$", stderr)
    assert match, stderr
    assert match.group(2) == checkpoint["cursor"]
    assert match.group(3) == str(out.absolute())
    report_before = status(out)
    assert report_before["runs"][0]["outcome"] == "stopped"
    assert report_before["customers_confirmed"] < len(expected)

    set_knobs(sb, fault_5xx=0.0)
    resumed = cli([*shlex.split(match.group(1))[1:], "--no-input"], cwd=tmp_path, env=child_env(sb))
    assert resumed.returncode == 0, resumed.stderr
    assert_migrated_exactly(sb, out, expected)
    assert status(out)["checkpoint"] is None


def test_exhausted_retries_in_process_raise_nothing_and_keep_the_checkpoint(
    make_sandbox: Any, tmp_path: Path
) -> None:
    """Every request fails from the start: a stop before any page, resumable by `--restart`."""
    sb = make_sandbox(profiles=PROFILES, fault_5xx=1.0)
    result = migrate(sb, tmp_path, MAX_ATTEMPTS="2")
    assert result.exit_code == 3
    assert isinstance(result.stopped, RunStopped)
    assert not result.stopped.account
    assert result.resume_cursor is None
    assert result.report()["resume_command"] == f"migrator run --restart --out-dir {tmp_path}"
    stats = sb.sandbox.stats_json()
    # The first request of each API at most, tried twice each: no retry storm.
    assert stats["segment_requests"] + stats["voucherify_requests"] <= 4, stats

    set_knobs(sb, fault_5xx=0.0)
    again = migrate(sb, tmp_path)
    assert again.exit_code == 0
    assert again.resumed
    assert_migrated_exactly(sb, tmp_path, fault_free_customers(1, PROFILES))


def test_a_limit_set_above_the_spaces_stops_with_a_hint_to_lower_it(
    make_sandbox: Any, tmp_path: Path
) -> None:
    """SEGMENT_RATE_LIMIT far above what the space allows: 429s outlast the retries, and
    the stop says which setting to lower, not only that requests were rate limited."""
    profiles = 60  # the resume runs at the space's real limit: keep it short
    sb = make_sandbox(profiles=profiles, segment_rate=40)
    result = migrate(sb, tmp_path, SEGMENT_RATE_LIMIT="2000", MAX_ATTEMPTS="2")
    assert result.exit_code == 3
    assert isinstance(result.stopped, RunStopped)
    assert not result.stopped.account
    hint = result.stopped.hint
    assert hint is not None and "429" in hint and "Lower SEGMENT_RATE_LIMIT" in hint
    assert result.report()["hint"] == hint

    again = migrate(sb, tmp_path, SEGMENT_RATE_LIMIT="40")
    assert again.exit_code == 0
    assert again.resumed
    assert_migrated_exactly(sb, tmp_path, fault_free_customers(1, profiles))


def test_a_stop_that_a_setting_cannot_fix_has_no_hint(make_sandbox: Any, tmp_path: Path) -> None:
    sb = make_sandbox(profiles=PROFILES, fault_5xx=1.0)
    result = migrate(sb, tmp_path, MAX_ATTEMPTS="2")
    assert result.exit_code == 3 and result.stopped is not None
    assert result.stopped.hint is None
    assert result.report()["hint"] is None


def _second_page_cursor(sb: ThreadedSandbox) -> str:
    async def read() -> str:
        async with SegmentClient(settings_for(sb)) as segment:
            async for page in segment.profile_pages():
                assert page.next_cursor is not None
                return page.next_cursor
        raise AssertionError("no page")

    return asyncio.run(read())


def test_a_run_from_a_cursor_that_stops_at_once_still_resumes_at_that_cursor(
    make_sandbox: Any, tmp_path: Path
) -> None:
    """Stopped before its first page settles, a run started at a cursor (by `--offset` or
    from the checkpoint) must point back at that cursor, never at `--restart`."""
    sb = make_sandbox(profiles=PROFILES)
    cursor = _second_page_cursor(sb)
    set_knobs(sb, fault_5xx=1.0)

    by_offset = migrate(sb, tmp_path, offset=cursor, MAX_ATTEMPTS="2")
    assert by_offset.exit_code == 3
    assert status(tmp_path)["checkpoint"]["cursor"] == cursor
    assert by_offset.resume_cursor == cursor
    assert by_offset.report()["resume_command"] == (
        f"migrator run --offset {cursor} --out-dir {tmp_path}"
    )

    from_checkpoint = migrate(sb, tmp_path, MAX_ATTEMPTS="2")
    assert from_checkpoint.exit_code == 3
    assert from_checkpoint.resumed and from_checkpoint.start_cursor == cursor
    assert from_checkpoint.resume_cursor == cursor
    assert status(tmp_path)["checkpoint"]["cursor"] == cursor

    set_knobs(sb, fault_5xx=0.0)
    resumed = migrate(sb, tmp_path, offset=from_checkpoint.resume_cursor)
    assert resumed.exit_code == 0
    assert resumed.counts.profiles_read == PROFILES - 100
