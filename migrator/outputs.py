"""The files a run leaves for people: the no-identifier list, the failure ledger, dry-run.

During a run they are appended as things happen, so they can be watched. The state store
is the source of truth: at the end of every run both lists are rewritten from it
atomically, so a run killed mid-way and resumed never leaves a profile listed twice.

Every file here holds customer data: each is created readable by its owner only (0600),
and a new output directory is 0700, whatever the umask.
"""

from __future__ import annotations

import csv
import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

import orjson

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700

NO_IDENTIFIER_FILE = "profiles-without-identifier.csv"
FAILURES_FILE = "failed-customers.jsonl"
DRY_RUN_FILE = "dry-run.jsonl"
#: profiles-without-identifier.csv is flushed at most this often while a run lists.
LIST_FLUSH_SECONDS = 1.0
#: Bytes buffered before dry-run.jsonl is written (`OutputFiles.start_dry_run`).
DRY_RUN_BUFFER = 1 << 20
MERGED_FILE = "merged-profiles.csv"
MERGED_HEADER = ("segment_id", "canonical_segment_id", "source_id")
DUPLICATES_FILE = "duplicate-identifiers.csv"
DUPLICATES_HEADER = ("source_id", "segment_id", "owner_segment_id")


def make_private_dir(path: Path) -> None:
    """Create the output directory if it is missing: 0700 (its parents as the umask says).

    An existing directory keeps its mode: the operator chose it.
    """
    if path.is_dir():
        return
    try:
        path.mkdir(mode=PRIVATE_DIR, parents=True)
    except FileExistsError:
        if path.is_dir():
            return  # created meanwhile by someone else: theirs
        raise
    os.chmod(path, PRIVATE_DIR)  # the umask may have taken bits from mkdir's mode


def make_private(path: Path) -> None:
    """Create `path` empty if missing, and make it 0600 either way (a file of an older
    version may be 0644)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE)
    try:
        _restrict(fd)
    finally:
        os.close(fd)


def open_private(path: Path, mode: str, *, newline: str | None = None) -> IO[str]:
    """`open(path, mode)` for text ("w" or "a"), the file being 0600."""
    fd = _open_private_fd(path, mode)
    try:
        return open(fd, mode, newline=newline, encoding="utf-8")  # noqa: SIM115 - returned
    except BaseException:
        os.close(fd)
        raise


def open_private_bytes(path: Path, mode: str, buffering: int = -1) -> IO[bytes]:
    """`open(path, mode + "b", buffering)` ("w" or "a"), the file being 0600."""
    fd = _open_private_fd(path, mode)
    try:
        return open(fd, mode + "b", buffering)  # noqa: SIM115 - returned
    except BaseException:
        os.close(fd)
        raise


def _open_private_fd(path: Path, mode: str) -> int:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if mode == "a" else os.O_TRUNC)
    fd = os.open(path, flags, PRIVATE_FILE)
    try:
        _restrict(fd)
    except BaseException:
        os.close(fd)
        raise
    return fd


def make_files_private(out_dir: Path) -> None:
    """Make the files an older version left world-readable (0644) private."""
    for name in (NO_IDENTIFIER_FILE, FAILURES_FILE, DRY_RUN_FILE, MERGED_FILE, DUPLICATES_FILE):
        if (out_dir / name).is_file():
            make_private(out_dir / name)


def _restrict(fd: int) -> None:
    try:
        if os.fstat(fd).st_mode & 0o777 != PRIVATE_FILE:
            os.fchmod(fd, PRIVATE_FILE)
    except PermissionError:
        pass  # another user's file that we may write: leave its mode to its owner


#: `json.dumps(value, ensure_ascii=False, separators=(",", ":"))` with one encoder for
#: every call: `dumps` with options builds a new encoder each time, a few percent of a
#: warehouse dry run, which writes one line per profile (measured).
compact_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def json_bytes(value: Any) -> bytes:
    """`compact_json(value).encode()`: a request body, or a dry-run line without its newline.

    orjson writes it about ten times faster (4.6 -> 0.4 µs for a customer, measured on the
    sandbox's profiles), and a dry run writes one per profile, a run one per customer. It
    refuses what Python's encoder takes (ints past 64 bits, keys that are not text), and
    then that encoder writes it. The one difference in the text: a float such as 1e-07 is
    written 1e-7, the same number.
    """
    try:
        return orjson.dumps(value)
    except TypeError:
        return compact_json(value).encode()


def json_line(value: Any) -> bytes:
    """`json_bytes(value) + b"\\n"`, the newline written by orjson (no copy of the line)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_APPEND_NEWLINE)
    except TypeError:
        return compact_json(value).encode() + b"\n"


def _json_line(record: Any) -> str:
    return compact_json(record) + "\n"


class OutputFiles:
    """Appends to the three output files; rewrites the two lists from the state store."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.no_identifier = out_dir / NO_IDENTIFIER_FILE
        self.failures = out_dir / FAILURES_FILE
        self.dry_run = out_dir / DRY_RUN_FILE
        self.merged = out_dir / MERGED_FILE
        self._dry_run_handle: Any = None
        self._no_identifier_handle: Any = None
        self._no_identifier_writer: Any = None
        self._no_identifier_flushed = 0.0

    def append_no_identifier(self, segment_id: str) -> None:
        if self._no_identifier_writer is None:  # opened once: a run may list many
            new = not self.no_identifier.exists()
            self._no_identifier_handle = open_private(self.no_identifier, "a", newline="")
            self._no_identifier_writer = csv.writer(self._no_identifier_handle)
            if new:
                self._no_identifier_writer.writerow(["segment_id"])
        self._no_identifier_writer.writerow([segment_id])
        # Watchable as it grows, a second behind at most: a flush (a write(2)) per line
        # was 7,822 system calls in a 100,000-profile dry run.
        now = time.monotonic()
        if now - self._no_identifier_flushed >= LIST_FLUSH_SECONDS:
            self._no_identifier_handle.flush()
            self._no_identifier_flushed = now

    def append_merged(self, segment_id: str, canonical: str, source_id: str) -> None:
        new = not self.merged.exists()
        with open_private(self.merged, "a", newline="") as handle:
            writer = csv.writer(handle)
            if new:
                writer.writerow(MERGED_HEADER)
            writer.writerow([segment_id, canonical, source_id])

    def append_failure(self, record: dict[str, Any]) -> None:
        with open_private(self.failures, "a") as handle:
            handle.write(_json_line(record))

    def start_dry_run(self) -> None:
        # Written in 1 MiB blocks, not 8 KiB: a line per profile made a write(2) every
        # ~15 profiles, each a switch of the interpreter lock to the reader threads.
        self._dry_run_handle = open_private_bytes(self.dry_run, "w", DRY_RUN_BUFFER)

    def append_dry_run(self, payload: dict[str, Any]) -> None:
        self._dry_run_handle.write(json_line(payload))

    def close(self) -> None:
        if self._dry_run_handle is not None:
            self._dry_run_handle.close()
            self._dry_run_handle = None
        if self._no_identifier_handle is not None:
            self._no_identifier_handle.close()
            self._no_identifier_handle = self._no_identifier_writer = None

    def rewrite(
        self,
        no_identifier: Iterable[str],
        failures: Iterable[dict[str, Any]],
        merged: Iterable[tuple[str, str, str]] = (),
        duplicates: Iterable[tuple[str, str, str]] = (),
    ) -> None:
        """Replace the lists with exactly what the state store holds."""
        tmp = self.no_identifier.with_suffix(".csv.tmp")
        with open_private(tmp, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["segment_id"])
            for segment_id in no_identifier:
                writer.writerow([segment_id])
        os.replace(tmp, self.no_identifier)
        tmp = self.failures.with_suffix(".jsonl.tmp")
        with open_private(tmp, "w") as handle:
            for record in failures:
                handle.write(_json_line(record))
        os.replace(tmp, self.failures)
        _rewrite_csv(self.merged, MERGED_HEADER, merged)
        _rewrite_csv(self.out_dir / DUPLICATES_FILE, DUPLICATES_HEADER, duplicates)


def _rewrite_csv(path: Path, header: tuple[str, ...], rows: Iterable[tuple[str, ...]]) -> None:
    """Replace `path` atomically; a list that never had a row is not created."""
    rows = list(rows)
    if not rows and not path.exists():
        return
    tmp = path.with_suffix(".csv.tmp")
    with open_private(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    os.replace(tmp, path)
