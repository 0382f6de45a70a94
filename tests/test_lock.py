"""Tests of migrator.lock: one run per output directory, taken over after a kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import migrator
from migrator import lock
from migrator.exceptions import LockedError
from migrator.lock import LOCK_FILE, RunLock

PROJECT = Path(migrator.__file__).resolve().parent.parent

HOLDER = """
import sys, time
from pathlib import Path
from migrator.lock import RunLock
with RunLock(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(60)
"""


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """A child process that holds the lock on tmp_path until it is killed."""
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "locked"
        yield child
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(timeout=10)
        if child.stdout is not None:
            child.stdout.close()


def test_second_lock_in_same_process_names_the_holder(tmp_path: Path) -> None:
    with RunLock(tmp_path):
        with pytest.raises(LockedError) as info, RunLock(tmp_path):
            pass
        assert f"pid {os.getpid()}" in str(info.value)
        assert str(tmp_path) in str(info.value)
    with RunLock(tmp_path) as lock:
        assert lock.path == tmp_path / LOCK_FILE


def test_lock_file_holds_the_pid_only_while_held(tmp_path: Path) -> None:
    with RunLock(tmp_path):
        assert (tmp_path / LOCK_FILE).read_text() == f"{os.getpid()}\n"
    assert (tmp_path / LOCK_FILE).read_text() == ""


@pytest.mark.parametrize("ending", ["exits-normally", "killed-9"])
def test_lock_of_another_process(
    tmp_path: Path, holder: subprocess.Popen[str], ending: str
) -> None:
    with pytest.raises(LockedError, match=rf"\(pid {holder.pid}\)"), RunLock(tmp_path):
        pass
    if ending == "killed-9":
        os.kill(holder.pid, signal.SIGKILL)
        assert holder.wait(timeout=10) == -signal.SIGKILL
        assert (tmp_path / LOCK_FILE).read_text() == f"{holder.pid}\n"
    else:
        holder.terminate()
        holder.wait(timeout=10)
    with RunLock(tmp_path):
        assert (tmp_path / LOCK_FILE).read_text() == f"{os.getpid()}\n"


def test_holder_names_the_live_process_only(tmp_path: Path) -> None:
    assert lock.holder(tmp_path) is None  # never locked
    with RunLock(tmp_path):
        assert lock.holder(tmp_path) == os.getpid()
    assert lock.holder(tmp_path) is None  # released: the file is empty


def test_holder_of_a_killed_process_is_none(tmp_path: Path, holder: subprocess.Popen[str]) -> None:
    assert lock.holder(tmp_path) == holder.pid
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=10)
    assert (tmp_path / LOCK_FILE).read_text() == f"{holder.pid}\n"  # left behind
    assert lock.holder(tmp_path) is None


def test_status_trusts_the_lock_not_a_live_pid(tmp_path: Path) -> None:
    """A killed run's pid, reused by another process, is not shown as a running migrator."""
    (tmp_path / LOCK_FILE).write_text(f"{os.getppid()}\n")  # alive, but holds no lock
    assert lock.holder(tmp_path) is None
    with RunLock(tmp_path):
        assert lock.holder(tmp_path) == os.getpid()
    assert lock.holder(tmp_path) is None
