"""The run's durable state: SQLite (WAL) in the output directory.

It holds the runs, the checkpoint, what was last confirmed as written per customer (field
fingerprints, not the data itself), the failure ledger and the profiles without the
identifier. The checkpoint moves only when every customer before it is settled, so a run
killed at any moment resumes from it and loses nothing. Credentials are never stored.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from migrator.exceptions import ConfigError
from migrator.outputs import json_bytes
from migrator.state_lists import IN_JSON, Failure, ListsMixin, Prefetched, in_json

__all__ = ["STATE_FILE", "Checkpoint", "Failure", "StateDamaged", "StateStore"]

STATE_FILE = "migrator-state.sqlite3"
SCHEMA_VERSION = 2
#: SQLite's page cache, KiB (its default: 2,000). The owners' index is written at random
#: keys; at 100,000 profiles it outgrew 2 MB, and pages went out and back in: a dry run
#: made 21,232 pread and 27,978 pwrite calls; with 8 MiB, 4,439 and 14,282 (strace), peak
#: RSS unchanged (95.4-95.8 MB), -0.4% of the run's instructions (callgrind).
CACHE_KIB = 8192


class StateDamaged(ConfigError):
    """The state file cannot be opened or read (exit code 2)."""

    def __init__(self, path: Path, cause: BaseException | None, reason: str | None = None) -> None:
        why = reason or f"it cannot be read ({cause})"
        super().__init__(
            f"the state file {path} is damaged: {why}. Move it aside and run again: a full "
            "rerun is safe, because Voucherify upserts customers by source_id."
        )


SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    command TEXT NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL,
    outcome TEXT NOT NULL DEFAULT 'running',
    start_cursor TEXT,
    counts TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS customers (
    source_id TEXT PRIMARY KEY,
    segment_id TEXT NOT NULL,
    fingerprints TEXT NOT NULL,
    confirmed_at REAL NOT NULL,
    run_id INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS failures (
    segment_id TEXT PRIMARY KEY,
    source_id TEXT,
    error TEXT NOT NULL,
    payload TEXT,
    run_id INTEGER NOT NULL,
    failed_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS merged_profiles (
    segment_id TEXT PRIMARY KEY,
    canonical_segment_id TEXT NOT NULL,
    source_id TEXT NOT NULL,
    run_id INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS owners (
    source_id TEXT PRIMARY KEY,
    segment_id TEXT NOT NULL,
    seen TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS duplicates (
    segment_id TEXT PRIMARY KEY,
    source_id TEXT NOT NULL,
    owner_segment_id TEXT NOT NULL,
    run_id INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS sent_batches (
    action_id TEXT PRIMARY KEY,
    run_id INTEGER NOT NULL,
    sent_at REAL NOT NULL,
    items TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS no_identifier (
    segment_id TEXT PRIMARY KEY,
    run_id INTEGER NOT NULL,
    seen_at REAL NOT NULL
);
"""


@dataclass(frozen=True)
class Checkpoint:
    """Where an unfinished run resumes: the source's position after the last settled page."""

    cursor: str | None
    run_id: int
    source: str = "profile-api"


def _sorted_json(fingerprints: dict[str, Any]) -> str:
    """A customer's hashes as stored (text and nested text only, which orjson always
    takes): `json.dumps(sort_keys=True)` of them was ~5% of a real backfill's CPU (py-spy);
    with the sent batches also by orjson, the run's CPU went 27.1 -> 22.5 s."""
    return orjson.dumps(fingerprints, option=orjson.OPT_SORT_KEYS).decode()


class StateStore(ListsMixin):
    """One SQLite file per output directory; used from the event loop's thread only."""

    _db: sqlite3.Connection

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / STATE_FILE
        self._prefetched = Prefetched()
        self._owners_due = {}
        self._no_identifier_due = []
        try:
            self._db = sqlite3.connect(self.path)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
            self._db.executescript(SCHEMA)
            self._migrate()
            self._db.commit()
            self._listed = {
                table: bool(
                    self._db.execute(f"SELECT EXISTS (SELECT 1 FROM {table})").fetchone()[0]
                )
                for table in ("no_identifier", "duplicates", "customers", "failures")
            }
        except sqlite3.DatabaseError as exc:
            raise StateDamaged(self.path, exc) from None

    def _migrate(self) -> None:
        """Bring an older state file up to `SCHEMA_VERSION`.

        1 -> 2: new tables (owners, duplicates, sent batches, merged profiles), created
        above; customers' fingerprints gain per-key hashes of address and metadata as they
        are next written (`changes.diff` still reads the old whole-object hashes).
        """
        row = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        version = int(row[0]) if row else 1
        if version > SCHEMA_VERSION:
            raise StateDamaged(
                self.path, None, f"it was written by a newer migrator (schema {version})"
            )
        if version < SCHEMA_VERSION:
            self._db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )

    def close(self) -> None:
        self.commit()
        self._db.close()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def commit(self) -> None:
        self._flush_due()
        self._db.commit()

    # -- runs -------------------------------------------------------------------------

    def start_run(self, command: str, start_cursor: str | None) -> int:
        cur = self._db.execute(
            "INSERT INTO runs (command, started_at, start_cursor) VALUES (?, ?, ?)",
            (command, time.time(), start_cursor),
        )
        self.commit()
        return int(cur.lastrowid or 0)

    def finish_run(self, run_id: int, outcome: str, counts: dict[str, Any]) -> None:
        self._db.execute(
            "UPDATE runs SET ended_at = ?, outcome = ?, counts = ? WHERE id = ?",
            (time.time(), outcome, json.dumps(counts), run_id),
        )
        self.commit()

    def recent_runs(self, limit: int = 10) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT id, command, started_at, ended_at, outcome, counts FROM runs "
            "ORDER BY id DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [
            {
                "id": r[0],
                "command": r[1],
                "started_at": r[2],
                "ended_at": r[3],
                "outcome": r[4],
                "counts": json.loads(r[5]),
            }
            for r in rows
        ]

    def close_abandoned_runs(self) -> None:
        """Runs still 'running' belong to a process that died (we hold the lock now)."""
        self._db.execute(
            "UPDATE runs SET outcome = 'killed' WHERE outcome = 'running' AND ended_at IS NULL"
        )
        self.commit()

    # -- checkpoint -------------------------------------------------------------------

    def checkpoint(self) -> Checkpoint | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'checkpoint'").fetchone()
        if row is None:
            return None
        value = json.loads(row[0])
        return Checkpoint(value["cursor"], value["run_id"], value.get("source", "profile-api"))

    def set_checkpoint(self, cursor: str | None, run_id: int, source: str = "profile-api") -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('checkpoint', ?)",
            (json.dumps({"cursor": cursor, "run_id": run_id, "source": source}),),
        )
        self.commit()

    # -- watermark: where the next incremental read starts, moved only by a completed run --

    def watermark(self, source: str) -> str | None:
        row = self._db.execute(
            "SELECT value FROM meta WHERE key = ?", (f"watermark:{source}",)
        ).fetchone()
        return str(row[0]) if row else None

    def set_watermark(self, source: str, value: str | None) -> None:
        if value is None:
            self._db.execute("DELETE FROM meta WHERE key = ?", (f"watermark:{source}",))
        else:
            self._db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                (f"watermark:{source}", value),
            )
        self.commit()

    def clear_checkpoint(self) -> None:
        self._db.execute("DELETE FROM meta WHERE key = 'checkpoint'")
        self.commit()

    # -- the options that shape what is written (source, metadata, identifier, mapping) --
    # Stored with the checkpoint and kept after it, for the next run and retry-failed.

    def options(self) -> dict[str, Any] | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'options'").fetchone()
        return dict(json.loads(row[0])) if row else None

    def set_options(self, options: dict[str, Any] | None) -> None:
        if options is None:
            self._db.execute("DELETE FROM meta WHERE key = 'options'")
        else:
            self._db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('options', ?)",
                (json.dumps(options, sort_keys=True),),
            )
        self.commit()

    # -- customers --------------------------------------------------------------------

    def fingerprints(self, source_id: str) -> dict[str, str] | None:
        row = self._db.execute(
            "SELECT fingerprints FROM customers WHERE source_id = ?", (source_id,)
        ).fetchone()
        return json.loads(row[0]) if row else None

    def prefetch(self, segment_ids: Collection[str], source_ids: Collection[str]) -> None:
        """Read what `claim`, `written`, `remove_no_identifier` will ask about these
        profiles and customers, one query per table (see `Prefetched` for why). Replaces
        what was prefetched before."""
        self._prefetch_lists(segment_ids, source_ids)
        written: dict[str, tuple[str, dict[str, str]] | None] = dict.fromkeys(source_ids)
        self._prefetched.written = written
        if not self._listed["customers"]:
            return  # nothing written yet (a first backfill, or any dry run of one)
        for source_id, segment_id, prints in self._db.execute(
            f"SELECT source_id, segment_id, fingerprints FROM customers WHERE source_id IN "
            f"{IN_JSON}",
            (in_json(source_ids),),
        ):
            written[source_id] = (segment_id, json.loads(prints))

    def written(self, source_id: str) -> tuple[str, dict[str, str]] | None:
        """`(segment_id, fingerprints)` of what was last confirmed for this customer."""
        cached = self._prefetched.written
        if source_id in cached:
            return cached[source_id]
        row = self._db.execute(
            "SELECT segment_id, fingerprints FROM customers WHERE source_id = ?", (source_id,)
        ).fetchone()
        return (row[0], json.loads(row[1])) if row else None

    def customers_of(self, segment_id: str) -> list[str]:
        """The source_ids last written for this profile."""
        return [
            r[0]
            for r in self._db.execute(
                "SELECT source_id FROM customers WHERE segment_id = ?", (segment_id,)
            )
        ]

    def set_owner(self, source_id: str, segment_id: str) -> None:
        """The customer now comes from `segment_id` (a merge moved it to the survivor)."""
        self._db.execute(
            "UPDATE customers SET segment_id = ? WHERE source_id = ?", (segment_id, source_id)
        )
        cached = self._prefetched.written.get(source_id)
        if cached is not None:
            self._prefetched.written[source_id] = (segment_id, cached[1])

    def confirm(self, rows: list[tuple[str, str, dict[str, str]]], run_id: int) -> None:
        """Remember `(source_id, segment_id, fingerprints)` as written; clear their failures."""
        now = time.time()
        self._listed["customers"] = True
        for source_id, _, _ in rows:
            self._prefetched.written.pop(source_id, None)  # read afresh when asked
        self._db.executemany(
            "INSERT OR REPLACE INTO customers (source_id, segment_id, fingerprints, confirmed_at, "
            "run_id) VALUES (?, ?, ?, ?, ?)",
            [(s, seg, _sorted_json(fp), now, run_id) for s, seg, fp in rows],
        )
        if self._listed["failures"]:  # none recorded (the usual case): no statement per row
            self._db.executemany(
                "DELETE FROM failures WHERE segment_id = ?", [(r[1],) for r in rows]
            )

    def confirmed_count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM customers").fetchone()[0])

    # -- batches sent and not settled yet: a killed run's successor follows them ------

    def record_sent(self, action_id: str, items: list[dict[str, Any]], run_id: int) -> None:
        """Durable before the send returns: a resumed run confirms instead of resending."""
        self._db.execute(
            "INSERT OR REPLACE INTO sent_batches (action_id, run_id, sent_at, items) "
            "VALUES (?, ?, ?, ?)",
            (action_id, run_id, time.time(), json_bytes(items).decode()),
        )
        self.commit()

    def forget_sent(self, action_id: str) -> None:
        self._db.execute("DELETE FROM sent_batches WHERE action_id = ?", (action_id,))

    def sent_batches(self) -> list[tuple[str, list[dict[str, Any]]]]:
        return [
            (action_id, json.loads(items))
            for action_id, items in self._db.execute(
                "SELECT action_id, items FROM sent_batches ORDER BY sent_at"
            )
        ]
