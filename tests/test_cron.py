"""Issue 14: what a nightly cron job needs from exit codes, reports, files and messages.

Each test names the point of the issue it covers. They run the real CLI against the sandbox
as cron does: no terminal, `--no-input`, sometimes no stdin at all.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from migrator.config import RunOptions, load_settings, read_environment
from migrator.exceptions import ConfigError, OptionsChanged
from migrator.mapping import MetadataMode
from migrator.outputs import DRY_RUN_FILE, FAILURES_FILE, NO_IDENTIFIER_FILE
from migrator.runner import run_migration
from migrator.shape import OutputShape, stored_defaults
from migrator.state import STATE_FILE
from migrator.status import stored_options
from migrator_sandbox.oracle import verify
from migrator_sandbox.server import ThreadedSandbox
from tests.conftest import FAST_ENV
from tests.helpers import ledger, settings_for
from tests.test_faults import (
    MIGRATOR_VARS,
    checkpoint_of,
    child_env,
    cli,
    read_state,
    set_knobs,
    wait_for,
)

#: Slow enough to be caught mid-run.
SLOW = {"SEGMENT_RATE_LIMIT": "250"}


def bare_env(**extra: str) -> dict[str, str]:
    """An environment with none of the migrator's variables: settings come from a file."""
    base = {k: v for k, v in os.environ.items() if k not in MIGRATOR_VARS}
    return base | {"COLUMNS": "80"} | extra


def write_env_file(path: Path, sb: ThreadedSandbox, **extra: str) -> Path:
    values = sb.env() | FAST_ENV | extra
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()), encoding="utf-8")
    return path


def start(
    args: list[str], *, cwd: Path, env: dict[str, str], stdin: Any = subprocess.DEVNULL
) -> subprocess.Popen[str]:
    """`migrator ARGS` as cron starts it: no terminal; SIGINT not inherited as ignored."""
    return subprocess.Popen(
        [sys.executable, "-m", "migrator.entry", *args],  # as the console script
        cwd=cwd,
        env=env,
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for child in started:
        if child.poll() is None:
            child.kill()
        child.communicate()


def quiet(stderr: str) -> None:
    """No traceback, no asyncio complaint: an operator's console sees plain lines only."""
    for sign in ("Traceback", "never awaited", "Task exception", "Exception in callback"):
        assert sign not in stderr, stderr


def report_of(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text(encoding="utf-8")))


# -- 2. the stored options, a complete resume command, from any folder -------------------------


def test_the_printed_resume_command_runs_from_another_folder_with_the_runs_options(
    make_sandbox: Any, tmp_path: Path
) -> None:
    """Issue 14.2: run as printed from another folder, the resume command used to start a
    fresh state and rewrite customers in the default metadata shape."""
    sb = make_sandbox(profiles=400)
    here, elsewhere = tmp_path / "cron", tmp_path / "elsewhere"
    here.mkdir()
    elsewhere.mkdir()
    env_file = write_env_file(here / "migrator.env", sb, SEGMENT_RATE_LIMIT="200", MAX_ATTEMPTS="2")
    child = start(
        ["run", "--no-input", "--metadata", "all", "--env-file", "migrator.env"]
        + ["--out-dir", "out"],
        cwd=here,
        env=bare_env(),
    )
    try:
        wait_for(lambda: (checkpoint_of(here / "out") or {}).get("cursor") is not None, 30, "page")
        set_knobs(sb, fault_5xx=1.0)
        _, stderr = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    assert child.returncode == 3, stderr
    match = re.search(r"Resume with:\n\s+(migrator run .+)$", stderr, re.MULTILINE)
    assert match, stderr
    command = shlex.split(match.group(1))
    out = here / "out"
    for option, value in (
        ("--out-dir", str(out)),
        ("--env-file", str(env_file)),
        ("--metadata", "all"),
        ("--offset", checkpoint_of(out)["cursor"]),  # type: ignore[index]
    ):
        assert command[command.index(option) + 1] == value, command

    set_knobs(sb, fault_5xx=0.0)
    resumed = cli([*command[1:], "--no-input"], cwd=elsewhere, env=bare_env())
    assert resumed.returncode == 0, resumed.stderr
    read = re.search(r"profiles read\s*\W\s*(\d+)", resumed.stdout)
    assert read and int(read.group(1)) < 400, resumed.stdout  # from the offset on
    assert not (elsewhere / STATE_FILE).exists()  # the same state, not a fresh one
    assert sb.wait_idle()
    check = verify(sb.sandbox, "user_id", "all")
    assert check.ok, check.summary()

    # A plain run (the cron line) from anywhere keeps the stored shape: nothing to resend.
    report = elsewhere / "report.json"
    plain = cli(
        ["run", "--no-input", "--out-dir", str(out), "--env-file", str(env_file)]
        + ["--report", str(report)],
        cwd=elsewhere,
        env=bare_env(),
    )
    assert plain.returncode == 0, plain.stderr
    data = report_of(report)
    assert data["options"]["metadata"] == "all"
    assert data["counts"]["customers_sent"] == 0
    assert data["counts"]["unchanged"] == check.expected


def test_other_options_than_the_stored_ones_exit_2_naming_restart_and_full(
    make_sandbox: Any, tmp_path: Path
) -> None:
    sb = make_sandbox(profiles=120)
    out = tmp_path / "out"
    first = cli(
        ["run", "--no-input", "--metadata", "all", "--out-dir", str(out)],
        cwd=tmp_path,
        env=child_env(sb),
    )
    assert first.returncode == 0, first.stderr
    sb.wait_idle()
    bulk = sb.sandbox.stats_json()["bulk_requests"]
    bodies = len(sb.sandbox.bodies)

    other = cli(
        ["run", "--no-input", "--metadata", "none", "--out-dir", str(out)],
        cwd=tmp_path,
        env=child_env(sb),
    )
    assert other.returncode == 2, other.stderr
    assert other.stderr.count("\n") == 1 and other.stderr.startswith("error: ")
    assert "--metadata none (stored: all)" in other.stderr
    assert "--restart" in other.stderr and "--full" in other.stderr
    assert sb.sandbox.stats_json()["bulk_requests"] == bulk  # nothing sent

    # An identifier other than the stored one is refused the same way.
    ident = cli(
        ["run", "--no-input", "--out-dir", str(out)],
        cwd=tmp_path,
        env=child_env(sb, IDENTIFIER_SAVED_AS_SOURCE_ID="anonymous_id"),
    )
    assert ident.returncode == 2
    assert "IDENTIFIER_SAVED_AS_SOURCE_ID anonymous_id (stored: user_id)" in ident.stderr

    # Said explicitly, the new shape is sent to everyone and stored.
    full = cli(
        ["run", "--no-input", "--metadata", "none", "--full", "--out-dir", str(out)],
        cwd=tmp_path,
        env=child_env(sb),
    )
    assert full.returncode == 0, full.stderr
    sb.wait_idle()
    sent = [item for body in sb.sandbox.bodies[bodies:] for item in body]
    assert len(sent) == verify(sb.sandbox).expected
    # No metadata is sent; the keys this tool wrote under `all` are cleared (null), as any
    # value it wrote and no longer sends (--keep-removed would leave them).
    metadata = [item["metadata"] for item in sent if "metadata" in item]
    assert metadata and all(v is None for m in metadata for v in m.values())
    assert stored_options(out) == OutputShape(metadata="none").as_dict()


def test_with_a_checkpoint_only_restart_accepts_other_options(
    make_sandbox: Any, tmp_path: Path
) -> None:
    """In process: the runner decides; --full alone would mix two shapes in one pass."""
    sb = make_sandbox(profiles=200, fault_5xx=1.0)
    settings = settings_for(sb, MAX_ATTEMPTS="1")
    all_traits = RunOptions(metadata_mode=MetadataMode.all)
    stopped = asyncio.run(run_migration(settings, tmp_path, all_traits))
    assert stopped.exit_code == 3 and checkpoint_of(tmp_path) is not None

    for options in (RunOptions(), RunOptions(full=True)):
        with pytest.raises(OptionsChanged) as info:
            asyncio.run(run_migration(settings, tmp_path, options))
        assert "--restart" in str(info.value)
        assert info.value.differences == ["--metadata metadata (stored: all)"]
    set_knobs(sb, fault_5xx=0.0)
    restarted = asyncio.run(run_migration(settings_for(sb), tmp_path, RunOptions(), restart=True))
    assert restarted.exit_code == 0
    assert stored_options(tmp_path) == OutputShape().as_dict()
    # A dry run may preview any shape, and changes nothing stored.
    dry = RunOptions(metadata_mode=MetadataMode.none, dry_run=True)
    preview = asyncio.run(run_migration(settings_for(sb), tmp_path, dry))
    assert preview.exit_code == 0
    assert stored_options(tmp_path) == OutputShape().as_dict()


def test_the_stored_identifier_and_source_fill_in_what_the_environment_leaves_unset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in (*MIGRATOR_VARS, "MIGRATOR_SOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    stored = OutputShape(identifier="email", metadata="all").as_dict()
    required = {
        "SEGMENT_ACCESS_TOKEN": "t",
        "SEGMENT_SPACE_ID": "spa_1",
        "VOUCHERIFY_APPLICATION_ID": "a",
        "VOUCHERIFY_SECRET_KEY": "s",
    }
    env = read_environment(None, stored_defaults(stored)) | required
    settings = load_settings(env)
    assert (settings.identifier, settings.source) == ("email", "profile-api")
    monkeypatch.setenv("IDENTIFIER_SAVED_AS_SOURCE_ID", "user_id")  # said: it wins
    assert load_settings(read_environment(None, stored_defaults(stored)) | required).identifier == (
        "user_id"
    )


def test_the_mapping_file_is_stored_and_a_plain_run_keeps_using_it(
    make_sandbox: Any, tmp_path: Path
) -> None:
    """A cron line without --mapping goes on with the stored file; another file is refused."""
    sb = make_sandbox(profiles=60)
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    elsewhere.mkdir()
    made = cli(["mapping", "init", str(tmp_path / "m.toml")], cwd=tmp_path, env=child_env(sb))
    assert made.returncode == 0, made.stderr
    text = (tmp_path / "m.toml").read_text(encoding="utf-8")
    (tmp_path / "other.toml").write_text(text, encoding="utf-8")
    first = cli(
        ["run", "--no-input", "--mapping", "m.toml", "--out-dir", str(out)],
        cwd=tmp_path,
        env=child_env(sb),
    )
    assert first.returncode == 0, first.stderr
    stored = stored_options(out)
    assert stored is not None and stored["mapping"] == str(tmp_path / "m.toml")

    report = tmp_path / "report.json"
    plain = cli(
        ["run", "--no-input", "--out-dir", str(out), "--report", str(report)],
        cwd=elsewhere,  # the stored path is absolute
        env=child_env(sb),
    )
    assert plain.returncode == 0, plain.stderr
    assert report_of(report)["options"]["mapping"] == str(tmp_path / "m.toml")
    assert report_of(report)["counts"]["customers_sent"] == 0

    other = cli(
        ["run", "--no-input", "--mapping", "other.toml", "--out-dir", str(out)],
        cwd=tmp_path,
        env=child_env(sb),
    )
    assert other.returncode == 2, other.stderr
    assert "--mapping" in other.stderr and "--restart" in other.stderr


# -- 3. retry-failed resends in the stored shape -----------------------------------------------


def test_retry_failed_resends_in_the_stored_metadata_mode(
    make_sandbox: Any, tmp_path: Path
) -> None:
    sb = make_sandbox(profiles=200, fault_customer_error=0.1)
    out = tmp_path / "out"
    first = cli(
        ["run", "--no-input", "--metadata", "all", "--out-dir", str(out)],
        cwd=tmp_path,
        env=child_env(sb),
    )
    assert first.returncode == 1, first.stderr
    assert ledger(out)
    set_knobs(sb, fault_customer_error=0.0)

    other = cli(
        ["retry-failed", "--metadata", "none", "--out-dir", str(out)],
        cwd=tmp_path,
        env=child_env(sb),
    )
    assert other.returncode == 2, other.stderr
    assert "retry-failed resends customers in the shape stored" in other.stderr

    retried = cli(["retry-failed", "--out-dir", str(out)], cwd=tmp_path, env=child_env(sb))
    assert retried.returncode == 0, retried.stderr
    assert ledger(out) == []
    assert sb.wait_idle()
    check = verify(sb.sandbox, "user_id", "all")
    assert check.ok, check.summary()

    report = tmp_path / "report.json"
    rerun = cli(
        ["run", "--no-input", "--out-dir", str(out), "--report", str(report)],
        cwd=tmp_path,
        env=child_env(sb),
    )
    assert rerun.returncode == 0, rerun.stderr
    assert report_of(report)["counts"]["customers_sent"] == 0  # nothing to rewrite


# -- 4. the report on every exit ---------------------------------------------------------------


def test_a_report_after_sigterm_replaces_last_nights_success(
    make_sandbox: Any, tmp_path: Path, children: list[subprocess.Popen[str]]
) -> None:
    sb = make_sandbox(profiles=600)
    out, report = tmp_path / "out", tmp_path / "last-run.json"
    report.write_text(json.dumps({"outcome": "completed", "exit_code": 0}), encoding="utf-8")
    child = start(
        ["run", "--no-input", "--out-dir", str(out), "--report", str(report)],
        cwd=tmp_path,
        env=child_env(sb, **SLOW),
    )
    children.append(child)
    wait_for(lambda: (checkpoint_of(out) or {}).get("cursor") is not None, 30, "a settled page")
    child.send_signal(signal.SIGTERM)
    _, stderr = child.communicate(timeout=60)
    assert child.returncode == 130, stderr
    quiet(stderr)
    data = report_of(report)
    assert (data["outcome"], data["exit_code"]) == ("interrupted", 130)
    assert data["stopped_because"] == "interrupted (Ctrl-C or SIGTERM)"
    cursor = checkpoint_of(out)["cursor"]  # type: ignore[index]
    assert data["resume_cursor"] == cursor
    assert data["resume_command"] == f"migrator run --offset {cursor} --out-dir {out}"
    assert f"Resume with:\n  {data['resume_command']}" in stderr
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []  # atomic

    resumed = cli(
        [*shlex.split(data["resume_command"])[1:], "--no-input", "--report", str(report)],
        cwd=tmp_path,
        env=child_env(sb),
    )
    assert resumed.returncode == 0, resumed.stderr
    assert report_of(report)["outcome"] == "completed"


@pytest.mark.parametrize("exit_code", [2, 4])
def test_a_report_is_written_when_a_run_cannot_start(
    make_sandbox: Any, tmp_path: Path, exit_code: int
) -> None:
    sb = make_sandbox(profiles=20)
    out, report = tmp_path / "out", tmp_path / "report.json"
    report.write_text(json.dumps({"outcome": "completed", "exit_code": 0}), encoding="utf-8")
    env = child_env(sb)
    if exit_code == 2:
        env.pop("VOUCHERIFY_SECRET_KEY")
        expected = ("config_error", "VOUCHERIFY_SECRET_KEY is not set")
    else:
        from migrator.lock import RunLock

        out.mkdir()
        holder = RunLock(out).__enter__()
        expected = ("locked", "another migrator run")
    try:
        done = cli(
            ["run", "--no-input", "--out-dir", str(out), "--report", str(report)],
            cwd=tmp_path,
            env=env,
        )
    finally:
        if exit_code == 4:
            holder.__exit__(None, None, None)
    assert done.returncode == exit_code, done.stderr
    data = report_of(report)
    assert (data["outcome"], data["exit_code"]) == (expected[0], exit_code)
    assert expected[1] in data["stopped_because"]
    # A command line that does not parse is an exit 2 with a report too.
    bad = cli(["run", "--no-such-option", "--report", str(report)], cwd=tmp_path, env=env)
    assert bad.returncode == 2
    assert (report_of(report)["outcome"], report_of(report)["exit_code"]) == ("usage_error", 2)


# -- 5. files holding customer data are private ------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_customer_data_is_0600_and_a_new_out_dir_0700_whatever_the_umask(
    make_sandbox: Any, tmp_path: Path
) -> None:
    sb = make_sandbox(profiles=150, fault_customer_error=0.1)
    out, log = tmp_path / "new" / "out", tmp_path / "logs" / "migrator.log"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "migrator.cli", "run", "--no-input", "--out-dir", str(out)]
            + ["--log-file", str(log), *args],
            cwd=tmp_path,
            env=child_env(sb),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            preexec_fn=lambda: os.umask(0),  # the most permissive umask there is
        )

    assert run().returncode == 1
    assert run("--dry-run").returncode == 0
    assert _mode(out) == 0o700
    private = [FAILURES_FILE, NO_IDENTIFIER_FILE, DRY_RUN_FILE, STATE_FILE]
    for name in private:
        assert _mode(out / name) == 0o600, name
    for companion in out.glob(f"{STATE_FILE}-*"):  # the WAL and its index, when present
        assert _mode(companion) == 0o600, companion.name
    assert _mode(log) == 0o600
    assert ledger(out)

    # Files of an older version (0644) are made private by the next run.
    for name in private:
        os.chmod(out / name, 0o644)
    assert run().returncode == 0
    for name in private:
        assert _mode(out / name) == 0o600, name


# -- 6. every exit one of README's codes, one line, no traceback -------------------------------


@pytest.mark.parametrize("where", ["proc", "under-a-file", "read-only"])
def test_an_out_dir_that_cannot_be_used_is_one_line_and_exit_2(
    make_sandbox: Any, tmp_path: Path, where: str
) -> None:
    if where == "proc":
        out = Path("/proc/self")
    elif where == "under-a-file":
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "out"
    elif os.geteuid() == 0:
        # Root writes into a read-only directory; a name no file system takes fails for
        # root too, in the same place (creating the directory).
        out = tmp_path / ("x" * 300)
    else:
        out = tmp_path / "ro"
        out.mkdir(mode=0o500)
    sb = make_sandbox(profiles=10)
    done = cli(["run", "--no-input", "--out-dir", str(out)], cwd=tmp_path, env=child_env(sb))
    assert done.returncode == 2, done.stderr
    quiet(done.stderr)
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"error: --out-dir {out} cannot be used: ")


def test_credentials_in_an_api_url_are_a_config_error_that_never_echoes_them(
    tmp_path: Path,
) -> None:
    env = bare_env(
        SEGMENT_ACCESS_TOKEN="t",
        SEGMENT_SPACE_ID="spa_1",
        VOUCHERIFY_APPLICATION_ID="a",
        VOUCHERIFY_SECRET_KEY="s",
        SEGMENT_API_URL="https://user:pa55word@profiles.segment.com",
    )
    done = cli(["run", "--no-input", "--out-dir", str(tmp_path / "o")], cwd=tmp_path, env=env)
    assert done.returncode == 2
    quiet(done.stderr)
    assert done.stderr.startswith("error: SEGMENT_API_URL holds credentials")
    assert "pa55word" not in done.stderr


@pytest.mark.parametrize(
    "when",
    [0.2, 0.6, "first-confirmed", "page-settled", "twice"],
    ids=["while-starting", "at-0.4s", "first-confirmed", "page-settled", "twice"],
)
def test_ctrl_c_of_a_resumed_run_at_any_moment_exits_130_quietly(
    make_sandbox: Any,
    tmp_path: Path,
    children: list[subprocess.Popen[str]],
    when: float | str,
) -> None:
    sb = make_sandbox(profiles=600)
    out, report = tmp_path / "out", tmp_path / "report.json"
    first = start(
        ["run", "--no-input", "--out-dir", str(out)], cwd=tmp_path, env=child_env(sb, **SLOW)
    )
    children.append(first)
    wait_for(lambda: (checkpoint_of(out) or {}).get("cursor") is not None, 30, "a settled page")
    first.kill()
    first.communicate()

    resumed = start(
        ["run", "--no-input", "--out-dir", str(out), "--report", str(report)],
        cwd=tmp_path,
        env=child_env(sb, **SLOW),
    )
    children.append(resumed)
    began = time.monotonic()
    if isinstance(when, float):
        time.sleep(when)
    else:
        confirmed = read_state(out, "SELECT COUNT(*) FROM customers")[0][0]
        cursor = checkpoint_of(out)["cursor"]  # type: ignore[index]
        if when == "first-confirmed":
            wait_for(
                lambda: read_state(out, "SELECT COUNT(*) FROM customers")[0][0] > confirmed,
                30,
                "a confirmation",
            )
        else:
            wait_for(lambda: (checkpoint_of(out) or {}).get("cursor") != cursor, 30, "a page")
    resumed.send_signal(signal.SIGINT)
    if when == "twice":
        time.sleep(0.02)
        if resumed.poll() is None:
            resumed.send_signal(signal.SIGINT)
    _, stderr = resumed.communicate(timeout=60)
    assert resumed.returncode in (130, -signal.SIGINT), stderr  # -2: the shell's 130 too
    assert time.monotonic() - began < 30
    quiet(stderr)
    lines = [line for line in stderr.splitlines() if not line.startswith("progress:")]
    assert any(line.startswith("interrupted") for line in lines), stderr
    assert report_of(report)["exit_code"] == 130

    again = cli(["run", "--no-input", "--out-dir", str(out)], cwd=tmp_path, env=child_env(sb))
    assert again.returncode == 0, again.stderr
    assert sb.wait_idle()
    assert verify(sb.sandbox).ok


@pytest.mark.parametrize("stdin", ["devnull", "closed"])
def test_a_cron_run_without_tty_or_stdin_stops_without_asking(
    make_sandbox: Any, tmp_path: Path, stdin: str
) -> None:
    """No --no-input: with no terminal the run never prompts; a stop exits 3 at once."""
    sb = make_sandbox(profiles=150, fault_5xx=1.0)
    out, report = tmp_path / "out", tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, "-m", "migrator.cli", "run", "--out-dir", str(out)]
        + ["--report", str(report)],
        cwd=tmp_path,
        env=child_env(sb, MAX_ATTEMPTS="2"),
        stdin=subprocess.DEVNULL if stdin == "devnull" else None,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        preexec_fn=None if stdin == "devnull" else lambda: os.close(0),
    )
    assert done.returncode == 3, done.stderr
    quiet(done.stderr)
    assert "Resume from offset" not in done.stdout + done.stderr
    assert [line for line in done.stderr.splitlines() if line.startswith("stopped:")]
    assert report_of(report)["outcome"] == "stopped"


# -- 7. status ---------------------------------------------------------------------------------


def test_status_during_a_dry_run_says_so(
    make_sandbox: Any, tmp_path: Path, children: list[subprocess.Popen[str]]
) -> None:
    sb = make_sandbox(profiles=600)
    out = tmp_path / "out"
    assert (
        cli(
            ["run", "--no-input", "--out-dir", str(out)], cwd=tmp_path, env=child_env(sb)
        ).returncode
        == 0
    )
    dry = start(
        ["run", "--no-input", "--dry-run", "--out-dir", str(out)],
        cwd=tmp_path,
        env=child_env(sb, **SLOW),
    )
    children.append(dry)
    wait_for(
        lambda: read_state(out, "SELECT COUNT(*) FROM runs WHERE outcome = 'running'")[0][0] > 0,
        30,
        "the dry run to start",
    )
    shown = cli(["status", "--out-dir", str(out)], cwd=tmp_path, env=bare_env())
    assert shown.returncode == 0, shown.stderr
    assert "checkpoint: none (a dry run keeps none)" in shown.stdout, shown.stdout
    assert f"in progress: dry run 2 (pid {dry.pid})" in shown.stdout, shown.stdout
    assert "the last run finished" not in shown.stdout
    dry.send_signal(signal.SIGINT)
    _, stderr = dry.communicate(timeout=60)
    assert dry.returncode == 130
    # An interrupted dry run does not claim that `migrator run` resumes it.
    assert "a dry run keeps no checkpoint" in stderr
    assert f"Run it again with:\n  migrator run --dry-run --out-dir {out}" in stderr
    assert "--offset" not in stderr


def test_status_of_a_path_without_state_exits_2(tmp_path: Path) -> None:
    for args in ([], ["--json"]):
        done = cli(
            ["status", "--out-dir", str(tmp_path / "typo"), *args], cwd=tmp_path, env=bare_env()
        )
        assert done.returncode == 2
        assert done.stderr.startswith(f"error: no migrator state in {tmp_path / 'typo'}")
    assert json.loads(done.stdout)["state_file"] is None  # --json still parses


def test_a_piped_status_table_is_not_truncated(make_sandbox: Any, tmp_path: Path) -> None:
    sb = make_sandbox(profiles=20)
    out = tmp_path / "out"
    for _ in range(2):
        assert (
            cli(
                ["run", "--no-input", "--out-dir", str(out)], cwd=tmp_path, env=child_env(sb)
            ).returncode
            == 0
        )
    shown = cli(["status", "--out-dir", str(out)], cwd=tmp_path, env=bare_env(COLUMNS="40"))
    assert "…" not in shown.stdout, shown.stdout
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", shown.stdout), shown.stdout
    assert "completed" in shown.stdout


# -- 9. retries summarised on the console, each in the log -------------------------------------


def test_retries_are_summarised_on_the_console_and_each_is_in_the_log(
    make_sandbox: Any, tmp_path: Path
) -> None:
    sb = make_sandbox(profiles=300, fault_5xx=0.05)
    out, log, report = tmp_path / "out", tmp_path / "run.log", tmp_path / "report.json"
    done = cli(
        ["run", "--no-input", "--out-dir", str(out), "--log-file", str(log)]
        + ["--report", str(report)],
        cwd=tmp_path,
        env=child_env(sb),
    )
    assert done.returncode == 0, done.stderr
    retries = report_of(report)["counts"]["retries"]
    assert retries >= 5, retries
    warnings = [
        line
        for line in done.stderr.splitlines()
        if " WARNING " in line and "dropped" not in line  # the mapping's own warnings
    ]
    assert len(warnings) == 1, warnings  # the first retry; the run lasts under a minute
    assert "retries are summarised here at most once a minute; -v shows each" in warnings[0]
    assert re.search(rf"retried requests\s*\W\s*{retries}\s*\W", done.stdout), done.stdout
    logged = [line for line in log.read_text().splitlines() if re.search(r"; retry \d+ in ", line)]
    assert len(logged) == retries
    assert all(" at 127.0.0.1:" in line for line in logged)  # errors name their host

    verbose = cli(
        ["run", "--no-input", "-v", "--out-dir", str(tmp_path / "v")],
        cwd=tmp_path,
        env=child_env(sb),
    )
    assert verbose.returncode == 0, verbose.stderr
    assert len(re.findall(r"; retry \d+ in ", verbose.stderr)) >= 2


def test_when_the_api_goes_away_the_stop_cause_is_printed_once(
    make_sandbox: Any, tmp_path: Path
) -> None:
    sb = make_sandbox(profiles=300, fault_5xx=1.0)
    done = cli(
        ["run", "--no-input", "--out-dir", str(tmp_path / "out")],
        cwd=tmp_path,
        env=child_env(sb, MAX_ATTEMPTS="3"),
    )
    assert done.returncode == 3
    lines = [line for line in done.stderr.splitlines() if not line.startswith("progress:")]
    assert len([line for line in lines if line.startswith("stopped: ")]) == 1
    assert len([line for line in lines if " WARNING " in line]) <= 1, lines
    assert len(lines) <= 4, lines  # the summary line, stopped, resume lead and command


# -- 11. configuration, help -------------------------------------------------------------------


def test_every_missing_variable_is_named_at_once_and_an_empty_one_hides_nothing(
    tmp_path: Path,
) -> None:
    (tmp_path / ".env").write_text("VOUCHERIFY_SECRET_KEY=from-the-file\n", encoding="utf-8")
    done = cli(
        ["run", "--no-input", "--out-dir", str(tmp_path / "out")],
        cwd=tmp_path,
        env=bare_env(VOUCHERIFY_SECRET_KEY="", MAX_ATTEMPTS="0"),
    )
    assert done.returncode == 2
    named = re.findall(r"^error: (\w+)", done.stderr, re.MULTILINE)
    assert named == [
        "SEGMENT_ACCESS_TOKEN",
        "SEGMENT_SPACE_ID",
        "VOUCHERIFY_APPLICATION_ID",
        "MAX_ATTEMPTS",
    ], done.stderr
    with pytest.raises(ConfigError) as info:
        load_settings({"SEGMENT_RATE_LIMIT": "fast"})
    assert len(info.value.problems) == 5


def test_help_reads_cleanly(tmp_path: Path) -> None:
    for args in (["run", "--help"], ["retry-failed", "--help"], ["status", "--help"]):
        done = cli(args, cwd=tmp_path, env=bare_env())
        assert done.returncode == 0
        assert "<bool>" not in done.stdout and "<str>" not in done.stdout, done.stdout
    sandbox = cli(["sandbox", "--help"], cwd=tmp_path, env=bare_env())
    assert sandbox.returncode == 0
    for meaning in (
        "--fault-5xx SHARE     share of requests answered 500/502/503",
        "--segment-rate N      Segment requests per second",
        "--no-identifier SHARE",
    ):
        assert meaning in sandbox.stdout, sandbox.stdout


def test_a_signal_whose_exception_python_swallowed_still_stops_the_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A SIGINT landing in a weakref callback of the import machinery (seen in CI: the
    resumed run then went on to exit 0) is remembered and stops the run before it starts,
    and Python's "Exception ignored" traceback is not printed."""
    import gc

    from migrator import entry
    from migrator.cli_exec import execute
    from migrator.views import ProgressView

    monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)
    monkeypatch.setattr(entry, "_received", None)
    monkeypatch.setattr(signal, "signal", lambda *args: None)  # keep pytest's handlers
    entry.install_signal_handlers()

    class Dropped:
        def __del__(self) -> None:
            entry._interrupted(signal.SIGINT, None)

    Dropped()  # the exception is "ignored": only the unraisable hook sees it
    gc.collect()
    assert "Traceback" not in capsys.readouterr().err
    started = []

    async def work(view: ProgressView) -> None:
        started.append(True)

    with pytest.raises(entry.Interrupted):
        execute(ProgressView(), work)
    assert started == []
