"""The lists of profiles accounted for outside Voucherify, kept in the state store: the
failure ledger, the owner of each source_id and the profiles that share it, customers of
merged-away profiles, and profiles without the identifier."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

#: `WHERE key IN (SELECT value FROM json_each(?))`: any number of keys as one parameter.
IN_JSON = "(SELECT value FROM json_each(?))"


def in_json(keys: Collection[str]) -> str:
    """`IN_JSON`'s parameter. orjson writes it in ~4 against ~29 µs for a chunk's 200 keys
    with `json.dumps` (three a chunk: ~4% of a warehouse dry run's event-loop thread,
    py-spy); text it refuses (a lone surrogate) goes to `json.dumps`, as before."""
    try:
        return orjson.dumps(list(keys)).decode()
    except TypeError:
        return json.dumps(list(keys))


#: Rows held back at most (`ListsMixin._owners_due`, `_no_identifier_due`): a source read
#: profile by profile has no chunks, so its rows go out at the next commit or at this many.
OWNERS_DUE_MAX = 1000
_LIST_NO_IDENTIFIER = (
    "INSERT OR IGNORE INTO no_identifier (segment_id, run_id, seen_at) VALUES (?, ?, ?)"
)


@dataclass(frozen=True)
class Failure:
    segment_id: str
    source_id: str | None
    error: str
    payload: dict[str, Any] | None

    def as_record(self) -> dict[str, Any]:
        return {
            "segment_id": self.segment_id,
            "source_id": self.source_id,
            "error": self.error,
            "payload": self.payload,
        }


@dataclass
class Prefetched:
    """What the state store holds about the next few profiles, read in one query per table
    (`StateStore.prefetch`) instead of one statement per profile and table.

    Measured on a 100,000-profile dry run: SQLite statements were the largest single cost
    of a warehouse profile after the read (five per profile in a backfill), and each
    releases the GIL, so the reader thread took it for a switch interval every time.
    Every write through the store keeps these in step; a key not prefetched is read as
    before.
    """

    #: source_id -> (owner segment_id, seen) or None: no owner.
    owners: dict[str, tuple[str, str] | None] = field(default_factory=dict)
    #: source_id -> (segment_id, fingerprints) last confirmed, or None: never written.
    written: dict[str, tuple[str, dict[str, str]] | None] = field(default_factory=dict)
    #: The segment_ids asked about, and which of them are listed where.
    segments: frozenset[str] = frozenset()
    no_identifier: set[str] = field(default_factory=set)
    duplicates: set[str] = field(default_factory=set)

    def absent(self, listed: set[str], segment_id: str) -> bool:
        """Known not to be in that list (so there is nothing to delete)."""
        return segment_id in self.segments and segment_id not in listed


class ListsMixin:
    """Part of `StateStore` (which owns the connection and the schema)."""

    _db: sqlite3.Connection
    _prefetched: Prefetched
    #: Whether a table may hold rows (False: known empty, nothing to look up or delete).
    _listed: dict[str, bool]
    #: Owners claimed and not yet in the table: source_id -> (segment_id, seen).
    #:
    #: Written behind, one `executemany` per chunk, before any statement reads the table
    #: and before every commit: a backfill claims an owner for nearly every profile, and a
    #: statement each was the largest state-store cost of a warehouse dry run (py-spy).
    #: With the other changes of 8b64cc0: 222k -> 188k instructions a profile (callgrind).
    _owners_due: dict[str, tuple[str, str]]
    #: Profiles newly without the identifier, not yet in the table: `(segment_id, run_id,
    #: seen_at)`, written behind the same way (a statement each was 12.5 µs, measured on
    #: a 100,000-profile dry run with 7,822 of them). Only a profile known not to be
    #: listed waits here; any other is inserted at once.
    _no_identifier_due: list[tuple[str, int, float]]

    def _flush_due(self) -> None:
        """Write what is held back; called before a statement reads or changes those
        tables, and before every commit."""
        if self._owners_due:
            self._db.executemany(
                "INSERT OR REPLACE INTO owners (source_id, segment_id, seen) VALUES (?, ?, ?)",
                [(source_id, *owner) for source_id, owner in self._owners_due.items()],
            )
            self._owners_due.clear()
        if self._no_identifier_due:
            self._db.executemany(_LIST_NO_IDENTIFIER, self._no_identifier_due)
            self._no_identifier_due.clear()

    def _prefetch_lists(self, segment_ids: Collection[str], source_ids: Collection[str]) -> None:
        self._flush_due()
        found = self._prefetched
        found.owners = dict.fromkeys(source_ids)
        for source_id, segment_id, seen in self._db.execute(
            f"SELECT source_id, segment_id, seen FROM owners WHERE source_id IN {IN_JSON}",
            (in_json(source_ids),),
        ):
            found.owners[source_id] = (segment_id, seen)
        found.segments = frozenset(segment_ids)
        keys = (in_json(segment_ids),)
        found.duplicates, found.no_identifier = set(), set()
        if self._listed["duplicates"]:  # an empty list (the usual case): no query
            found.duplicates = self._listed_of("duplicates", keys)
        if self._listed["no_identifier"]:
            found.no_identifier = self._listed_of("no_identifier", keys)

    def _listed_of(self, table: str, keys: tuple[str]) -> set[str]:
        query = f"SELECT segment_id FROM {table} WHERE segment_id IN {IN_JSON}"
        return {r[0] for r in self._db.execute(query, keys)}

    def _owner(self, source_id: str) -> tuple[str, str] | None:
        due = self._owners_due.get(source_id)
        if due is not None:
            return due
        owners = self._prefetched.owners
        if source_id in owners:
            return owners[source_id]
        row = self._db.execute(
            "SELECT segment_id, seen FROM owners WHERE source_id = ?", (source_id,)
        ).fetchone()
        return None if row is None else (row[0], row[1])

    # -- failures ---------------------------------------------------------------------

    def record_failure(self, failure: Failure, run_id: int) -> None:
        self._listed["failures"] = True
        self._db.execute(
            "INSERT OR REPLACE INTO failures (segment_id, source_id, error, payload, run_id, "
            "failed_at) VALUES (?, ?, ?, ?, ?, ?)",
            (
                failure.segment_id,
                failure.source_id,
                failure.error,
                json.dumps(failure.payload, ensure_ascii=False)
                if failure.payload is not None
                else None,
                run_id,
                time.time(),
            ),
        )

    def clear_failure(self, segment_id: str) -> None:
        if not self._listed["failures"]:
            return  # no failure recorded: no statement per profile
        self._db.execute("DELETE FROM failures WHERE segment_id = ?", (segment_id,))

    def failures(self) -> Iterator[Failure]:
        for segment_id, source_id, error, payload in self._db.execute(
            "SELECT segment_id, source_id, error, payload FROM failures "
            "ORDER BY failed_at, segment_id"
        ):
            yield Failure(segment_id, source_id, error, json.loads(payload) if payload else None)

    def failure_count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM failures").fetchone()[0])

    # -- one owner per source_id ------------------------------------------------------

    def claim(
        self, source_id: str, segment_id: str, seen_key: Callable[[], str], run_id: int
    ) -> str:
        """Record that `segment_id` resolves to `source_id`; returns the owner's segment_id.

        The owner is the profile that got the identifier first (`seen_key()` sorts by
        instant), ties by segment_id: the same answer whatever order the profiles are read
        in. The key is computed only when there is something to decide.
        """
        row = self._owner(source_id)
        if row is not None and row[0] == segment_id:
            return segment_id  # the usual case on a rerun: nothing to write
        seen = seen_key()
        if row is None or (seen, segment_id) < (row[1], row[0]):
            self._owners_due[source_id] = (segment_id, seen)
            if len(self._owners_due) >= OWNERS_DUE_MAX:
                self._flush_due()
            found = self._prefetched
            if source_id in found.owners:
                found.owners[source_id] = (segment_id, seen)
            if not found.absent(found.duplicates, segment_id):
                self._db.execute("DELETE FROM duplicates WHERE segment_id = ?", (segment_id,))
                found.duplicates.discard(segment_id)
            if row is not None and row[0] != segment_id:
                # The previous owner and everyone it owned now point at the new owner.
                self._db.execute(
                    "UPDATE duplicates SET owner_segment_id = ? WHERE source_id = ?",
                    (segment_id, source_id),
                )
                self._add_duplicate(row[0], source_id, segment_id, run_id)
            return segment_id
        self._add_duplicate(segment_id, source_id, row[0], run_id)
        return str(row[0])

    def _add_duplicate(self, segment_id: str, source_id: str, owner: str, run_id: int) -> None:
        self._prefetched.duplicates.add(segment_id)
        self._listed["duplicates"] = True
        self._db.execute(
            "INSERT INTO duplicates (segment_id, source_id, owner_segment_id, run_id) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (segment_id) DO UPDATE SET "
            "source_id = excluded.source_id, owner_segment_id = excluded.owner_segment_id",
            (segment_id, source_id, owner, run_id),
        )

    def transfer_owner(self, segment_id: str, survivor: str) -> None:
        """`segment_id` was merged into `survivor`: what it owned, the survivor owns."""
        self._flush_due()
        self._db.execute(
            "UPDATE owners SET segment_id = ? WHERE segment_id = ?", (survivor, segment_id)
        )
        self._db.execute("DELETE FROM duplicates WHERE segment_id = ?", (segment_id,))
        self._prefetched = Prefetched()  # owners changed by segment_id: forget them all

    def duplicates(self) -> Iterator[tuple[str, str, str]]:
        yield from self._db.execute(
            "SELECT source_id, segment_id, owner_segment_id FROM duplicates "
            "ORDER BY source_id, segment_id"
        )

    def duplicate_count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM duplicates").fetchone()[0])

    # -- customers whose profile was merged away --------------------------------------

    def add_merged(self, segment_id: str, canonical: str, source_id: str, run_id: int) -> bool:
        """True when not listed yet (so the CSV gets it once)."""
        cur = self._db.execute(
            "INSERT OR IGNORE INTO merged_profiles (segment_id, canonical_segment_id, source_id, "
            "run_id) VALUES (?, ?, ?, ?)",
            (segment_id, canonical, source_id, run_id),
        )
        return cur.rowcount == 1

    def merged(self) -> Iterator[tuple[str, str, str]]:
        yield from self._db.execute(
            "SELECT segment_id, canonical_segment_id, source_id FROM merged_profiles "
            "ORDER BY run_id, segment_id"
        )

    # -- profiles without the identifier ----------------------------------------------

    def add_no_identifier(self, segment_id: str, run_id: int) -> bool:
        """True when the profile was not listed yet (so the CSV gets it once)."""
        found = self._prefetched
        if not self._listed["no_identifier"] or found.absent(found.no_identifier, segment_id):
            self._no_identifier_due.append((segment_id, run_id, time.time()))
            if len(self._no_identifier_due) >= OWNERS_DUE_MAX:
                self._flush_due()
            added = True
        else:
            self._flush_due()
            cur = self._db.execute(_LIST_NO_IDENTIFIER, (segment_id, run_id, time.time()))
            added = cur.rowcount == 1
        self._listed["no_identifier"] = True
        found.no_identifier.add(segment_id)
        return added

    def remove_no_identifier(self, segment_id: str) -> bool:
        found = self._prefetched
        if not self._listed["no_identifier"] or found.absent(found.no_identifier, segment_id):
            return False  # not listed: no statement per profile
        self._flush_due()
        cur = self._db.execute("DELETE FROM no_identifier WHERE segment_id = ?", (segment_id,))
        found.no_identifier.discard(segment_id)
        return cur.rowcount == 1

    def no_identifier_ids(self) -> Iterator[str]:
        self._flush_due()
        for (segment_id,) in self._db.execute(
            "SELECT segment_id FROM no_identifier ORDER BY seen_at, segment_id"
        ):
            yield segment_id

    def no_identifier_count(self) -> int:
        self._flush_due()
        return int(self._db.execute("SELECT COUNT(*) FROM no_identifier").fetchone()[0])
