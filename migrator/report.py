"""The `--report` file, written atomically on every exit (0 to 130), so that monitoring never
reads the last run's success after a run that failed to start or was killed.

Standard library only: the entry point uses it for an interrupt that comes before the
command line is even parsed.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: Commands that take `--report`.
REPORTING_COMMANDS = ("run", "retry-failed")

_written = False


def written() -> bool:
    """Whether this process wrote its report already."""
    return _written


def iso(moment: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(moment))


def write_report(path: Path, data: dict[str, Any]) -> str | None:
    """Replace `path` with `data` as JSON, atomically; the error text if it cannot be."""
    global _written
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        return f"the report could not be written to {path}: {exc.strerror or exc}"
    _written = True
    return None


def report_path(argv: Sequence[str]) -> tuple[str, Path] | None:
    """`(command, --report PATH)` read from a command line that was not parsed (yet)."""
    command = next((a for a in argv if not a.startswith("-")), None)
    if command not in REPORTING_COMMANDS:
        return None
    for i, arg in enumerate(argv):
        if arg == "--report" and i + 1 < len(argv):
            return command, Path(argv[i + 1])
        if arg.startswith("--report="):
            return command, Path(arg.split("=", 1)[1])
    return None


def report_early_exit(argv: Sequence[str], exit_code: int, outcome: str, reason: str) -> None:
    """The report of a command that ended before it could write its own (an interrupt while
    starting, a command line that does not parse)."""
    if _written:
        return
    found = report_path(argv)
    if found is None:
        return
    command, path = found
    now = time.time()
    write_report(
        path,
        {
            "command": command,
            "outcome": outcome,
            "exit_code": exit_code,
            "stopped_because": reason,
            "resume_command": None,
            "counts": None,
            "started_at": iso(now),
            "ended_at": iso(now),
            "pid": os.getpid(),
        },
    )
