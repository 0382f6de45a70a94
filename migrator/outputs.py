"""The files a run leaves for people: the no-identifier list, the failure ledger, dry-run.

During a run they are appended as things happen, so they can be watched. The state store
is the source of truth: at the end of every run both lists are rewritten from it
atomically, so a run killed mid-way and resumed never leaves a profile listed twice.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

NO_IDENTIFIER_FILE = "profiles-without-identifier.csv"
FAILURES_FILE = "failed-customers.jsonl"
DRY_RUN_FILE = "dry-run.jsonl"
MERGED_FILE = "merged-profiles.csv"
MERGED_HEADER = ("segment_id", "canonical_segment_id", "source_id")
DUPLICATES_FILE = "duplicate-identifiers.csv"
DUPLICATES_HEADER = ("source_id", "segment_id", "owner_segment_id")


def _json_line(record: Any) -> str:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"


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

    def append_no_identifier(self, segment_id: str) -> None:
        if self._no_identifier_writer is None:  # opened once: a run may list many
            new = not self.no_identifier.exists()
            self._no_identifier_handle = self.no_identifier.open("a", newline="", encoding="utf-8")
            self._no_identifier_writer = csv.writer(self._no_identifier_handle)
            if new:
                self._no_identifier_writer.writerow(["segment_id"])
        self._no_identifier_writer.writerow([segment_id])
        self._no_identifier_handle.flush()  # watchable as it grows

    def append_merged(self, segment_id: str, canonical: str, source_id: str) -> None:
        new = not self.merged.exists()
        with self.merged.open("a", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            if new:
                writer.writerow(MERGED_HEADER)
            writer.writerow([segment_id, canonical, source_id])

    def append_failure(self, record: dict[str, Any]) -> None:
        with self.failures.open("a", encoding="utf-8") as handle:
            handle.write(_json_line(record))

    def start_dry_run(self) -> None:
        self._dry_run_handle = self.dry_run.open("w", encoding="utf-8")

    def append_dry_run(self, payload: dict[str, Any]) -> None:
        self._dry_run_handle.write(_json_line(payload))

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
        with tmp.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["segment_id"])
            for segment_id in no_identifier:
                writer.writerow([segment_id])
        os.replace(tmp, self.no_identifier)
        tmp = self.failures.with_suffix(".jsonl.tmp")
        with tmp.open("w", encoding="utf-8") as handle:
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
    with tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    os.replace(tmp, path)
