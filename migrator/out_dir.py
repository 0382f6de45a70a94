"""The output directory: locked for one run at a time, private (0700, its files 0600), and a
directory that cannot be used is a usage error (exit 2), not a crash."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from migrator.exceptions import ConfigError
from migrator.lock import RunLock
from migrator.outputs import make_files_private, make_private, make_private_dir
from migrator.state import STATE_FILE, StateStore


@contextmanager
def _out_dir_errors(out_dir: Path) -> Iterator[None]:
    """An output directory that cannot be written is a usage error (exit 2), not a crash."""
    try:
        yield
    except (OSError, sqlite3.OperationalError) as exc:  # cannot open or write, not damage
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(
            f"--out-dir {out_dir.absolute()} cannot be used: {reason}; expected a directory "
            "this user can write"
        ) from None


@contextmanager
def open_out_dir(out_dir: Path) -> Iterator[StateStore]:
    """Lock the output directory and open its state store (0600 files in a 0700 dir)."""
    with ExitStack() as stack:
        with _out_dir_errors(out_dir):
            make_private_dir(out_dir)
            stack.enter_context(RunLock(out_dir))
            state_file = out_dir / STATE_FILE
            make_private(state_file)  # SQLite gives its -wal and -shm files the same mode
            for suffix in ("-wal", "-shm"):
                companion = state_file.with_name(state_file.name + suffix)
                if companion.exists():
                    make_private(companion)
            make_files_private(out_dir)
            state = stack.enter_context(StateStore(out_dir))
        yield state
