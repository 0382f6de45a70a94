"""What --out-dir holds, read without the lock: `migrator status`, and the options stored
with the state (which fill in what a command was not given)."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from migrator.exceptions import ConfigError
from migrator.lock import holder
from migrator.state import STATE_FILE, Checkpoint, StateStore


def stored_options(out_dir: Path) -> dict[str, Any] | None:
    """The options stored for `out_dir` (None: no state, or none stored yet).

    Read without the lock, to fill in the options a command was not given; the run checks
    them again under the lock.
    """
    if not _has_state(out_dir):
        return None
    try:
        with StateStore(out_dir) as state:
            return stored_or_inferred(state.options(), state.checkpoint())
    except (OSError, sqlite3.Error, ConfigError):
        return None  # unusable or damaged here: the run itself says why


def stored_or_inferred(
    options: Mapping[str, Any] | None, saved: Checkpoint | None
) -> dict[str, Any] | None:
    if options is not None:
        return dict(options)
    if saved is not None:  # a checkpoint from before options were stored: its source only
        return {"source": saved.source}
    return None


def _has_state(out_dir: Path) -> bool:
    try:
        return (out_dir / STATE_FILE).is_file()
    except OSError:  # a path no file system takes (too long, ...): no state there
        return False


def status(out_dir: Path) -> dict[str, Any]:
    """`migrator status`: what the state store says, without taking the lock."""
    if not _has_state(out_dir):
        return {
            "state_file": None,
            "running_pid": None,
            "in_progress": None,
            "runs": [],
            "checkpoint": None,
            "options": None,
            "customers_confirmed": 0,
            "failures_pending": 0,
            "profiles_without_identifier": 0,
            "duplicate_identifiers": 0,
        }
    running_pid = holder(out_dir)
    with StateStore(out_dir) as state:
        checkpoint = state.checkpoint()
        runs = state.recent_runs(10)
        in_progress = None
        if running_pid is None:
            # Nobody holds the directory: a run still marked running was killed (the next
            # run records it so; say it now).
            for run in runs:
                if run["outcome"] == "running":
                    run["outcome"] = "killed"
        else:
            live = next((r for r in runs if r["outcome"] == "running"), None)
            if live is not None:
                in_progress = {"run_id": live["id"], "command": live["command"]}
        return {
            "state_file": str(state.path.absolute()),
            "running_pid": running_pid,
            "in_progress": in_progress,
            "runs": runs,
            "checkpoint": None
            if checkpoint is None
            else {
                "cursor": checkpoint.cursor,
                "run_id": checkpoint.run_id,
                "source": checkpoint.source,
            },
            "options": stored_or_inferred(state.options(), checkpoint),
            "customers_confirmed": state.confirmed_count(),
            "failures_pending": state.failure_count(),
            "profiles_without_identifier": state.no_identifier_count(),
            "duplicate_identifiers": state.duplicate_count(),
        }
