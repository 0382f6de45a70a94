"""Durability of `migrator run` as a process: killed at any moment (kill -9 included), it
resumes from its checkpoint and ends exactly where an uninterrupted run ends; one run per
output directory; `--restart`, `--offset` and `migrator status` say and do what they mean.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from migrator.lock import LOCK_FILE
from migrator.segment import SegmentClient
from migrator.status import status
from migrator_sandbox.oracle import expected_customer
from migrator_sandbox.server import ThreadedSandbox
from tests.helpers import listed, settings_for
from tests.test_faults import (
    assert_migrated_exactly,
    checkpoint_of,
    child_env,
    cli,
    confirmed_in,
    fault_free_customers,
    read_state,
    wait_for,
)

PROFILES = 400
#: Slow enough that a run lasts a few seconds and can be killed at chosen points.
SLOW = {"SEGMENT_RATE_LIMIT": "300"}


class Run:
    """`migrator run --no-input --out-dir OUT` in a child process we may kill."""

    def __init__(self, sb: ThreadedSandbox, cwd: Path, out: Path, *args: str, **env: str) -> None:
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "migrator.cli", "run", "--no-input", "--out-dir", str(out)]
            + list(args),
            cwd=cwd,
            env=child_env(sb, **env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            # As a terminal would: a suite started in the background (nohup, `&` in a
            # script) ignores SIGINT, the child would inherit that, and Ctrl-C do nothing.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        self.stdout = self.stderr = ""

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def kill(self, sig: signal.Signals = signal.SIGKILL) -> int:
        assert self.running(), "the run finished before it could be killed"
        self.process.send_signal(sig)
        return self.wait()

    def wait(self, timeout: float = 60.0) -> int:
        self.stdout, self.stderr = self.process.communicate(timeout=timeout)
        return self.process.returncode

    def close(self) -> None:
        if self.running():
            self.process.kill()
        self.process.communicate()


@pytest.fixture
def runs() -> Iterator[Callable[..., Run]]:
    """Start child runs; any still alive at the end is killed."""
    started: list[Run] = []

    def start(sb: ThreadedSandbox, cwd: Path, out: Path, *args: str, **env: str) -> Run:
        run = Run(sb, cwd, out, *args, **env)
        started.append(run)
        return run

    yield start
    for run in started:
        run.close()


def status_text(cwd: Path, out: Path, sb: ThreadedSandbox) -> str:
    done = cli(["status", "--out-dir", str(out)], cwd=cwd, env=child_env(sb))
    assert done.returncode == 0, done.stderr
    return done.stdout


def resumed_from(stdout: str) -> str | None:
    """The "resumed from" row of the summary table, if the run resumed."""
    match = re.search(r"resumed from\s*\W\s*(.+?)\s*\W\s*$", stdout, re.MULTILINE)
    return match.group(1) if match else None


# -- kill -9 (and SIGTERM) at chosen points, then resume ---------------------------------------


def _after(seconds: float) -> Callable[[Path, Run], bool]:
    return lambda out, run: time.monotonic() - run.started >= seconds


def _confirmed(out: Path, run: Run) -> bool:
    return confirmed_in(out) > 0


def _page_settled(out: Path, run: Run) -> bool:
    return (checkpoint_of(out) or {}).get("cursor") is not None


KILL_POINTS: list[Any] = [
    pytest.param(_after(0.5), signal.SIGKILL, id="kill9-after-0.5s"),
    pytest.param(_after(1.5), signal.SIGKILL, id="kill9-after-1.5s"),
    pytest.param(_confirmed, signal.SIGKILL, id="kill9-first-confirmed"),
    pytest.param(_page_settled, signal.SIGKILL, id="kill9-page-settled"),
    pytest.param(_confirmed, signal.SIGTERM, id="sigterm-first-confirmed"),
    pytest.param(_page_settled, signal.SIGINT, id="ctrl-c-page-settled"),
]


@pytest.mark.parametrize(("when", "sig"), KILL_POINTS)
def test_killed_run_resumes_to_the_same_end_as_an_uninterrupted_one(
    make_sandbox: Any,
    runs: Callable[..., Run],
    tmp_path: Path,
    when: Callable[[Path, Run], bool],
    sig: signal.Signals,
) -> None:
    expected = fault_free_customers(1, PROFILES)
    sb = make_sandbox(profiles=PROFILES)
    out = tmp_path / "out"
    first = runs(sb, tmp_path, out, **SLOW)
    wait_for(lambda: when(out, first), 20, "the kill point")
    code = first.kill(sig)
    if sig == signal.SIGKILL:
        assert code == -signal.SIGKILL
    else:
        assert code == 130, first.stderr
        assert "interrupted: the checkpoint is saved" in first.stderr
        assert "Traceback" not in first.stderr
    killed_at = checkpoint_of(out)
    assert confirmed_in(out) < len(expected), "the run was not interrupted"

    if killed_at is not None:
        shown = killed_at["cursor"] or "the first page"
        assert f"stopped; resumes at {shown}" in status_text(tmp_path, out, sb)
        now = status(out)
        assert now["checkpoint"] == killed_at
        assert now["running_pid"] is None
        assert now["runs"][0]["outcome"] != "running"  # a dead run is not shown as running

    second = runs(sb, tmp_path, out)
    assert second.wait() == 0, second.stderr
    assert "Traceback" not in second.stderr
    if killed_at is not None:
        assert resumed_from(second.stdout) == (killed_at["cursor"] or "the first page"), (
            second.stdout
        )
    else:
        assert resumed_from(second.stdout) is None  # killed before it had started a run

    assert_migrated_exactly(sb, out, expected)
    assert len(listed(out)) == len(set(listed(out)))
    assert "checkpoint: none (the last run finished)" in status_text(tmp_path, out, sb)
    data = status(out)
    assert data["checkpoint"] is None
    assert data["customers_confirmed"] == len(expected)
    outcomes = [r["outcome"] for r in data["runs"]]
    assert outcomes[0] == "completed"
    if killed_at is not None:
        assert outcomes[1] == ("killed" if sig == signal.SIGKILL else "interrupted")


# -- one run per output directory ---------------------------------------------------------------


def test_a_second_run_is_refused_and_a_killed_runs_lock_is_taken_over(
    make_sandbox: Any, runs: Callable[..., Run], tmp_path: Path
) -> None:
    sb = make_sandbox(profiles=PROFILES)
    out = tmp_path / "out"
    lock = out / LOCK_FILE
    # Slower than SLOW: the first run must outlive the checks below on a loaded machine.
    first = runs(sb, tmp_path, out, SEGMENT_RATE_LIMIT="80")
    wait_for(lambda: checkpoint_of(out) is not None, 20, "the first run to start")
    assert lock.read_text().strip() == str(first.pid)

    started = time.monotonic()
    second = runs(sb, tmp_path, out)
    assert second.wait(timeout=20) == 4, second.stderr
    assert time.monotonic() - started < 5
    assert f"pid {first.pid}" in second.stderr
    assert str(out) in second.stderr.replace("\n", "")
    assert "Traceback" not in second.stderr
    assert first.running(), "the refused run disturbed the first"
    assert f"in progress (pid {first.pid})" in status_text(tmp_path, out, sb)

    first.kill(signal.SIGKILL)
    assert lock.read_text().strip() == str(first.pid)  # a stale pid is left behind
    third = runs(sb, tmp_path, out)
    assert third.wait() == 0, third.stderr
    assert resumed_from(third.stdout) is not None
    assert lock.read_text() == ""  # released
    assert_migrated_exactly(sb, out, fault_free_customers(1, PROFILES))


# -- --restart and --offset ---------------------------------------------------------------------


def test_restart_ignores_the_checkpoint_and_reads_from_the_first_page(
    make_sandbox: Any, runs: Callable[..., Run], tmp_path: Path
) -> None:
    sb = make_sandbox(profiles=PROFILES)
    out = tmp_path / "out"
    first = runs(sb, tmp_path, out, **SLOW)
    wait_for(lambda: (checkpoint_of(out) or {}).get("cursor") is not None, 20, "a settled page")
    first.kill(signal.SIGKILL)
    assert (checkpoint_of(out) or {}).get("cursor")

    report = tmp_path / "report.json"
    again = runs(sb, tmp_path, out, "--restart", "--report", str(report))
    assert again.wait() == 0, again.stderr
    assert resumed_from(again.stdout) is None
    data = json.loads(report.read_text())
    assert data["resumed_from_checkpoint"] is False
    assert data["start_cursor"] is None
    assert data["counts"]["profiles_read"] == PROFILES  # every page, the first included
    assert data["counts"]["unchanged"] > 0  # the ones the killed run confirmed were not resent
    assert_migrated_exactly(sb, out, fault_free_customers(1, PROFILES))
    assert status(out)["checkpoint"] is None


def _second_page_cursor(sb: ThreadedSandbox) -> tuple[str, tuple[str, ...]]:
    """The list cursor of the second page, and the ids of the first (read as the client does)."""

    async def read() -> tuple[str, tuple[str, ...]]:
        async with SegmentClient(settings_for(sb)) as segment:
            async for page in segment.profile_pages():
                assert page.next_cursor is not None
                return page.next_cursor, page.segment_ids
        raise AssertionError("no page")

    return asyncio.run(read())


def test_offset_starts_at_the_given_cursor(
    make_sandbox: Any, runs: Callable[..., Run], tmp_path: Path
) -> None:
    sb = make_sandbox(profiles=PROFILES)
    cursor, skipped = _second_page_cursor(sb)
    out = tmp_path / "out"
    report = tmp_path / "report.json"
    run = runs(sb, tmp_path, out, "--offset", cursor, "--report", str(report))
    assert run.wait() == 0, run.stderr
    data = json.loads(report.read_text())
    assert data["start_cursor"] == cursor
    assert data["resumed_from_checkpoint"] is False
    assert data["counts"]["profiles_read"] == PROFILES - len(skipped)

    assert sb.wait_idle()
    expected: dict[str, dict[str, Any]] = {}
    without: set[str] = set()
    for segment_id in sb.sandbox.segment_ids():
        if segment_id in skipped:
            continue
        customer = expected_customer(segment_id, *sb.sandbox.profile(segment_id))
        if customer is None:
            without.add(segment_id)
        else:
            expected[customer["source_id"]] = customer
    assert sb.sandbox.customers == expected
    assert sorted(listed(out)) == sorted(without)
    assert status(out)["checkpoint"] is None


# -- kills between a batch's send and its confirmation (issue 11) -------------------------------


def _sent_unconfirmed(out: Path) -> int:
    rows = read_state(out, "SELECT COUNT(*) FROM sent_batches")
    return int(rows[0][0]) if rows else 0


def test_a_kill_after_the_send_never_resends_what_voucherify_accepted(
    make_sandbox: Any, runs: Callable[..., Run], tmp_path: Path
) -> None:
    """The batch's action id is recorded before the send returns; the next run follows it
    to DONE instead of sending the same customers again."""
    expected = fault_free_customers(1, PROFILES)
    sb = make_sandbox(profiles=PROFILES, async_delay=3.0)  # confirmations come late
    out = tmp_path / "out"
    first = runs(sb, tmp_path, out)
    wait_for(lambda: _sent_unconfirmed(out) > 0, 20, "a batch sent and not confirmed")
    first.kill(signal.SIGKILL)
    assert confirmed_in(out) == 0  # nothing was confirmed before the kill
    time.sleep(0.5)  # POSTs already on the wire when the run died still reach the sandbox
    received = sb.call(sb.sandbox.stats_json)["customers_received"]
    recorded = sum(
        len(json.loads(items)) for (items,) in read_state(out, "SELECT items FROM sent_batches")
    )
    assert recorded > 0

    second = runs(sb, tmp_path, out)
    assert second.wait() == 0, second.stderr
    assert_migrated_exactly(sb, out, expected)
    assert _sent_unconfirmed(out) == 0
    # The second run sent every customer except those of the recorded batches. (A POST
    # still on the wire at the kill has no action id yet: its customers are sent again.)
    after = sb.call(sb.sandbox.stats_json)["customers_received"]
    assert after == received + len(expected) - recorded


def test_repeated_kills_always_make_progress(
    make_sandbox: Any, runs: Callable[..., Run], tmp_path: Path
) -> None:
    """SIGKILL at random moments across 6 runs, then a final run: complete, correct, and
    Voucherify received at most 1.15 bulk items per customer."""
    expected = fault_free_customers(1, 1000)
    sb = make_sandbox(profiles=1000, async_delay=1.0)
    out = tmp_path / "out"
    rng = random.Random(11)
    for _ in range(6):
        run = runs(sb, tmp_path, out, **SLOW)
        time.sleep(rng.uniform(0.8, 2.5))
        if run.running():
            run.kill(signal.SIGKILL)
    final = runs(sb, tmp_path, out)
    assert final.wait() == 0, final.stderr
    assert_migrated_exactly(sb, out, expected)
    assert sb.call(sb.sandbox.stats_json)["customers_received"] <= 1.15 * len(expected)


def test_a_damaged_state_file_is_one_line_and_exit_2_and_nothing_is_sent(
    make_sandbox: Any, tmp_path: Path
) -> None:
    sb = make_sandbox(profiles=20)
    out = tmp_path / "out"
    out.mkdir()
    (out / "migrator-state.sqlite3").write_bytes(b"this is not a database" * 100)
    done = cli(["run", "--no-input", "--out-dir", str(out)], cwd=tmp_path, env=child_env(sb))
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "migrator-state.sqlite3" in lines[0], done.stderr
    assert "Move it aside" in lines[0]
    assert sb.call(sb.sandbox.stats_json)["bulk_requests"] == 0
    status_done = cli(["status", "--out-dir", str(out)], cwd=tmp_path, env=child_env(sb))
    assert status_done.returncode == 2 and "Traceback" not in status_done.stderr


def test_an_output_file_that_cannot_be_written_stops_resumably(
    make_sandbox: Any, tmp_path: Path
) -> None:
    """Issue 11: exit 3 with the real cause and the resume command, never a traceback."""
    sb = make_sandbox(profiles=PROFILES)
    out = tmp_path / "out"
    out.mkdir()
    (out / "profiles-without-identifier.csv").mkdir()  # unwritable, even for root
    done = cli(["run", "--no-input", "--out-dir", str(out)], cwd=tmp_path, env=child_env(sb))
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr
    assert "profiles-without-identifier.csv" in done.stderr
    assert "Resume with:" in done.stderr
    (out / "profiles-without-identifier.csv").rmdir()
    again = cli(["run", "--no-input", "--out-dir", str(out)], cwd=tmp_path, env=child_env(sb))
    assert again.returncode == 0, again.stderr
    assert_migrated_exactly(sb, out, fault_free_customers(1, PROFILES))
