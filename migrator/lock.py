"""One run at a time per output directory.

An advisory `flock` is released by the kernel when its process dies, even by `kill -9`, so
a lock left by a dead process is simply taken over; the pid written inside only serves to
name the holder in the message.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from migrator.exceptions import LockedError

LOCK_FILE = "migrator.lock"


class RunLock:
    """`with RunLock(out_dir):` holds the directory for the duration of a command."""

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / LOCK_FILE
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise LockedError(
                f"another migrator run (pid {holder}) is using {self.path.parent}; "
                "wait for it to finish or use another --out-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def holder(out_dir: Path) -> int | None:
    """The pid of the process holding `out_dir`, or None.

    Read without taking the lock, so that `migrator status` never makes a run starting at
    the same moment exit 4. On Linux the kernel's own table of locks says who holds it, so
    a pid reused by another process after a kill is not mistaken for a run; elsewhere the
    pid in the file is checked to be alive.
    """
    path = out_dir / LOCK_FILE
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    held = _flock_holders(path)
    if held is not None:
        return pid if held else None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, but another user's
    return pid


def _flock_holders(path: Path) -> list[int] | None:
    """Pids holding a flock on `path`, from /proc/locks; None where it cannot be read."""
    try:
        st = path.stat()
        table = Path("/proc/locks").read_text()
    except OSError:
        return None
    device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    pids = []
    for line in table.splitlines():
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 12345 fd:01:1234 0 EOF" (blocked waiters: "-> FLOCK")
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == device:
            pids.append(int(fields[4]))
    return pids
