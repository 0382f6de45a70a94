"""The command line as a user (or cron) meets it: configuration errors in one line and exit 2,
the report, the log file, dry runs, help and status; and no secret anywhere it writes.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from migrator.outputs import DRY_RUN_FILE
from migrator.state import StateStore
from migrator.status import status
from migrator_sandbox.oracle import verify
from migrator_sandbox.server import ThreadedSandbox
from tests.helpers import has_null, ledger
from tests.test_faults import (
    MIGRATOR_VARS,
    _second_page_cursor,
    assert_migrated_exactly,
    checkpoint_of,
    child_env,
    cli,
    set_knobs,
)

REQUIRED = (
    "SEGMENT_ACCESS_TOKEN",
    "SEGMENT_SPACE_ID",
    "VOUCHERIFY_APPLICATION_ID",
    "VOUCHERIFY_SECRET_KEY",
)
RUN_OPTIONS = (
    "--env-file",
    "--out-dir",
    "--offset",
    "--restart",
    "--full",
    "--dry-run",
    "--metadata",
    "--no-input",
    "--report",
    "--log-file",
    "--verbose",
)


def config_env(**changes: str | None) -> dict[str, str]:
    """A complete, valid configuration (pointing at nothing), with `changes` applied."""
    env = {k: v for k, v in os.environ.items() if k not in MIGRATOR_VARS}
    env |= {
        "SEGMENT_ACCESS_TOKEN": "token",
        "SEGMENT_SPACE_ID": "spa_x",
        "VOUCHERIFY_APPLICATION_ID": "app",
        "VOUCHERIFY_SECRET_KEY": "secret",
        "SEGMENT_API_URL": "http://127.0.0.1:9",
        "VOUCHERIFY_API_URL": "http://127.0.0.1:9",
        "COLUMNS": "80",
    }
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def assert_one_line_config_error(done: subprocess.CompletedProcess[str], name: str) -> None:
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr + done.stdout
    lines = done.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ") and name in lines[0], lines[0]


# -- configuration errors: exit 2, one line, no traceback ---------------------------------------


@pytest.mark.parametrize("name", REQUIRED)
@pytest.mark.parametrize("how", ["missing", "blank"])
def test_each_required_variable_missing_is_one_line_and_exit_2(
    tmp_path: Path, name: str, how: str
) -> None:
    env = config_env(**{name: None if how == "missing" else "   "})
    done = cli(["run", "--no-input", "--out-dir", str(tmp_path / "out")], cwd=tmp_path, env=env)
    assert_one_line_config_error(done, name)
    assert "is not set" in done.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SEGMENT_RATE_LIMIT", "0"),
        ("VOUCHERIFY_RATE_LIMIT", "-5"),
        ("MAX_ATTEMPTS", "1000"),
        ("SEGMENT_REQUEST_LIMIT", "101"),
        ("SEGMENT_TRAITS_LIMIT", "ten"),
        ("REQUEST_TIMEOUT", "nan"),
        ("SEGMENT_API_URL", "not a url"),
        ("VOUCHERIFY_API_URL", "https://"),
        ("SEGMENT_API_URL", "ftp://profiles.segment.com"),
        ("VOUCHERIFY_API_URL", "https://api.voucherify.io:port"),
        ("VOUCHERIFY_API_URL", "http://api.voucherify.io"),
        ("SEGMENT_API_URL", "http://10.1.2.3:8080"),
        ("IDENTIFIER_SAVED_AS_SOURCE_ID", "user id"),
    ],
)
def test_a_bad_value_is_one_line_and_exit_2(tmp_path: Path, name: str, value: str) -> None:
    done = cli(
        ["run", "--no-input", "--out-dir", str(tmp_path / "out")],
        cwd=tmp_path,
        env=config_env(**{name: value}),
    )
    assert_one_line_config_error(done, name)
    if value.startswith("http://"):
        assert "https://" in done.stderr


def test_a_missing_env_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    done = cli(
        ["run", "--env-file", str(tmp_path / "nope.env"), "--out-dir", str(tmp_path / "out")],
        cwd=tmp_path,
        env=config_env(),
    )
    assert_one_line_config_error(done, "--env-file")


def test_the_env_file_supplies_what_the_environment_lacks(
    make_sandbox: Any, tmp_path: Path
) -> None:
    sb = make_sandbox(profiles=50)
    env = child_env(sb)
    secret = env.pop("VOUCHERIFY_SECRET_KEY")
    env_file = tmp_path / "migrator.env"
    env_file.write_text(f"VOUCHERIFY_SECRET_KEY={secret}\n", encoding="utf-8")
    done = cli(
        ["run", "--no-input", "--env-file", str(env_file), "--out-dir", str(tmp_path / "out")],
        cwd=tmp_path,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert_migrated_exactly(sb, tmp_path / "out")


# -- report, log file, dry run, help, status ---------------------------------------------------


def test_report_log_file_and_status_of_a_run(make_sandbox: Any, tmp_path: Path) -> None:
    sb = make_sandbox(profiles=200)
    out, report, log = tmp_path / "out", tmp_path / "r" / "report.json", tmp_path / "run.log"
    # No state there (yet, or a mistyped path): status says so and exits 2, not "0, no runs".
    before = cli(["status", "--out-dir", str(out)], cwd=tmp_path, env=config_env())
    assert before.returncode == 2, before.stderr
    assert before.stderr.startswith(f"error: no migrator state in {out}")

    done = cli(
        ["run", "--no-input", "--out-dir", str(out), "--report", str(report)]
        + ["--log-file", str(log)],
        cwd=tmp_path,
        env=child_env(sb),
    )
    assert done.returncode == 0, done.stderr
    assert_migrated_exactly(sb, out)
    check = verify(sb.sandbox)

    data = json.loads(report.read_text(encoding="utf-8"))
    assert data["outcome"] == "completed"
    assert data["exit_code"] == 0
    assert data["command"] == "run"
    counts = data["counts"]
    assert counts["profiles_read"] == 200
    assert counts["confirmed"] == check.expected
    assert counts["no_identifier"] == len(check.no_identifier)
    assert counts["failed"] == 0
    assert data["resume_command"] is None and data["stopped_because"] is None

    lines = log.read_text(encoding="utf-8").splitlines()
    requests = [line for line in lines if " migrator.http " in line]
    base = sb.env()["SEGMENT_API_URL"]
    segment = [
        line
        for line in requests
        if re.search(rf" segment GET {base}/v1/\S+ 200 \d+ms request_id=[0-9a-f]{{32}}$", line)
    ]
    # Full URLs: a list page names its path and query, not an empty path.
    assert any("/collections/users/profiles?limit=100 200 " in line for line in segment)
    # Voucherify answers a success without a request id: none is invented ("None").
    bulk = [
        line
        for line in requests
        if re.search(rf" voucherify POST {base}/v1/customers/bulk/async 202 \d+ms$", line)
    ]
    assert not [line for line in lines if "request_id=None" in line]
    # One line per request: the list pages, and traits and external ids of every profile.
    assert len(segment) >= 2 * 200 + 2
    assert len(segment) == sb.sandbox.stats_json()["segment_requests"]
    assert len(bulk) == sb.sandbox.stats_json()["bulk_requests"] >= 2
    # The run's start (with its options) and its end (with the outcome) are in the file.
    started = [line for line in lines if re.search(r" INFO migrator run 1 started ", line)]
    assert len(started) == 1
    assert f"migrator run --metadata metadata --out-dir {out}" in started[0]
    assert "source profile-api, identifier user_id" in started[0]
    ended = [line for line in lines if " INFO migrator run 1 ended: " in line]
    assert len(ended) == 1 and "ended: completed, exit 0; read 200," in ended[0]

    shown = cli(["status", "--out-dir", str(out)], cwd=tmp_path, env=config_env())
    assert shown.returncode == 0, shown.stderr
    assert "checkpoint: none (the last run finished)" in shown.stdout
    assert f"customers confirmed: {check.expected}" in shown.stdout
    assert "failures pending: 0" in shown.stdout
    assert f"profiles without identifier: {len(check.no_identifier)}" in shown.stdout
    as_json = cli(["status", "--json", "--out-dir", str(out)], cwd=tmp_path, env=config_env())
    assert json.loads(as_json.stdout)["customers_confirmed"] == check.expected


def test_dry_run_exits_0_and_sends_nothing(make_sandbox: Any, tmp_path: Path) -> None:
    sb = make_sandbox(profiles=200)
    out = tmp_path / "out"
    done = cli(
        ["run", "--dry-run", "--no-input", "--out-dir", str(out)], cwd=tmp_path, env=child_env(sb)
    )
    assert done.returncode == 0, done.stderr
    stats = sb.sandbox.stats_json()
    # Nothing is written; the one call reads the metadata schema the dry run checks against.
    assert stats["bulk_requests"] == 0
    assert stats["voucherify_endpoints"] == {"voucherify.metadata_schema": 1}
    assert sb.sandbox.customers == {}
    lines = (out / DRY_RUN_FILE).read_text(encoding="utf-8").splitlines()
    assert len(lines) == verify(sb.sandbox).expected
    assert not any(has_null(json.loads(line)) for line in lines)
    data = status(out)
    assert data["customers_confirmed"] == 0
    assert data["checkpoint"] is None


def test_help_mentions_the_commands_and_options(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "migrator"
    top = subprocess.run(
        [str(script), "--help"], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert top.returncode == 0, top.stderr
    for command in ("run", "status", "retry-failed"):
        assert re.search(rf"\b{command}\b", top.stdout), command
    run = cli(["run", "--help"], cwd=tmp_path, env=config_env())
    assert run.returncode == 0, run.stderr
    for option in RUN_OPTIONS:
        assert option in run.stdout, option


# -- no secret anywhere -------------------------------------------------------------------------

SEGMENT_SECRET = "tok-LEAKCHECK-seg-7f3a"
VOUCHERIFY_SECRET = "key-LEAKCHECK-vc-91b2"
WRONG_SECRET = "key-LEAKCHECK-wrong-5e6d"


def _needles() -> list[bytes]:
    """Each secret as text and as the Basic credentials that carry the Segment token."""
    needles = [s.encode() for s in (SEGMENT_SECRET, VOUCHERIFY_SECRET, WRONG_SECRET)]
    needles.append(base64.b64encode(f"{SEGMENT_SECRET}:".encode()))
    return needles


def _emails(sb: ThreadedSandbox) -> set[str]:
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, str) and re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", value.strip()):
            found.add(value.strip())
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    for segment_id in sb.sandbox.segment_ids():
        traits, external_ids = sb.sandbox.profile(segment_id)
        walk(traits)
        walk([e.get("id") for e in external_ids])
    return found


def test_no_secret_in_any_output_or_file(make_sandbox: Any, tmp_path: Path) -> None:
    sb = make_sandbox(
        profiles=200,
        segment_token=SEGMENT_SECRET,
        secret_key=VOUCHERIFY_SECRET,
        fault_customer_error=0.1,
    )
    assert sb.env()["SEGMENT_ACCESS_TOKEN"] == SEGMENT_SECRET
    out, log = tmp_path / "out", tmp_path / "logs" / "run.log"
    texts: list[tuple[str, str]] = []

    def run(name: str, **env: str) -> int:
        report = tmp_path / "reports" / f"{name}.json"
        done = cli(
            ["run", "--no-input", "-v", "--out-dir", str(out), "--report", str(report)]
            + ["--log-file", str(log)],
            cwd=tmp_path,
            env=child_env(sb, **env),
        )
        texts.extend([(f"{name} stdout", done.stdout), (f"{name} stderr", done.stderr)])
        assert "Traceback" not in done.stderr
        assert json.loads(report.read_text())["exit_code"] == done.returncode
        return done.returncode

    # Success with failures recorded: the ledger has lines, the report and the log are written.
    assert run("success") == 1
    assert ledger(out), "the ledger should hold the customers the sandbox refused"
    # Failure paths: a wrong secret (an account error), then retries exhausted.
    assert run("wrong-secret", VOUCHERIFY_SECRET_KEY=WRONG_SECRET) == 3
    set_knobs(sb, fault_5xx=1.0)
    assert run("exhausted", MAX_ATTEMPTS="2") == 3

    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name.endswith(".sqlite3") for p in files)
    assert log in files
    for needle in _needles():
        for name, text in texts:
            assert needle.decode() not in text, f"secret in {name}"
        for path in files:
            assert needle not in path.read_bytes(), f"secret in {path.relative_to(tmp_path)}"

    # Warnings name profiles by segment_id, never by an email address.
    log_text = log.read_text(encoding="utf-8")
    warnings = [line for line in log_text.splitlines() if " WARNING " in line]
    failed = [line for line in warnings if "customer failed for " in line]
    assert failed
    ids = set(sb.sandbox.segment_ids())
    for line in failed:
        match = re.search(r"customer failed for (\S+):", line)
        assert match and match.group(1) in ids, line
    emails = _emails(sb)
    assert emails
    everything_logged = log_text + "".join(text for name, text in texts if "stderr" in name)
    leaked = sorted(e for e in emails if e in everything_logged)
    assert not leaked, leaked[:5]


@pytest.mark.parametrize("cursor", ["opaque[/i]cursor", "a:thumbs_up:b[bold]c"])
def test_an_offset_segment_refuses_is_exit_2_and_the_checkpoint_stays(
    make_sandbox: Any, tmp_path: Path, cursor: str
) -> None:
    """Issue 14.1: a typo in --offset used to become the checkpoint, and every later cron
    run exited 3 with `Resume with: migrator run --offset garbage`. Now: exit 2, one line
    naming the cursor as it is (never read as markup) and how to start over; the checkpoint
    is untouched and the next plain run goes on from it."""
    sb = make_sandbox(profiles=250)
    out = tmp_path / "out"
    report = tmp_path / "report.json"
    good = _second_page_cursor(sb)
    with StateStore(out_dir(out)) as state:  # a stopped run's checkpoint
        state.set_checkpoint(good, state.start_run("run", None))
    # The sandbox, as Segment, answers 400 to a cursor it did not issue.
    typo = cli(
        ["run", "--no-input", "--offset", cursor, "--out-dir", str(out), "--report", str(report)],
        cwd=tmp_path,
        env=child_env(sb),
    )
    assert typo.returncode == 2, typo.stderr
    assert "Traceback" not in typo.stderr
    errors = [line for line in typo.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, typo.stderr
    assert f"cannot start at {cursor!r}: Segment refused the cursor" in errors[0]
    assert f"migrator run --offset {good} --out-dir {out}" in errors[0]  # resume it
    assert (
        f"To start over from the first page: migrator run --restart --out-dir {out}" in (errors[0])
    )
    assert checkpoint_of(out) == {"cursor": good, "run_id": 1, "source": "profile-api"}
    data = json.loads(report.read_text())
    assert (data["outcome"], data["exit_code"], data["resume_command"]) == ("usage_error", 2, None)
    assert data["stopped_because"] == errors[0].removeprefix("error: ")

    again = cli(["run", "--no-input", "--out-dir", str(out)], cwd=tmp_path, env=child_env(sb))
    assert again.returncode == 0, again.stderr
    assert re.search(rf"resumed from\s*\W\s*{re.escape(good)}\s*\W", again.stdout), again.stdout
    assert status(out)["checkpoint"] is None


def test_an_offset_that_cannot_be_a_cursor_is_refused_before_any_request(
    make_sandbox: Any, tmp_path: Path
) -> None:
    sb = make_sandbox(profiles=50)
    out = tmp_path / "out"
    done = cli(
        ["run", "--no-input", "--offset", "two words", "--out-dir", str(out)],
        cwd=tmp_path,
        env=child_env(sb),
    )
    assert done.returncode == 2, done.stderr
    assert "cannot start at 'two words': it is not a Segment list cursor" in done.stderr
    assert sb.sandbox.stats_json()["segment_requests"] == 0
    assert checkpoint_of(out) is None  # none before, none after
    # Nothing was saved: the cron line's plain run starts at the first page.
    plain = cli(["run", "--no-input", "--out-dir", str(out)], cwd=tmp_path, env=child_env(sb))
    assert plain.returncode == 0, plain.stderr


def out_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
