"""A Profiles Sync warehouse for the sandbox: Segment's three views, loaded from the
generator, changed and merged the way Segment changes them, and checked independently.

The views are plain tables here (Segment maintains them as materialized views; the
migrator only reads them). Storage follows docs/profiles-sync.md: a string trait is
stored as its text; objects, arrays, numbers and booleans as their JSON text; a trait set
to null is a row with a NULL value. Rows are loaded with COPY, so 100,000 profiles (about
two million trait rows) load in seconds.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Index, MetaData, create_engine, text
from sqlalchemy.schema import CreateSchema

from migrator.exceptions import ConfigError
from migrator.sources import profiles_sync_sql as views_sql
from migrator.sources.profiles_sync import engine_url
from migrator_sandbox.generator import GeneratedProfile
from migrator_sandbox.metadata_rules import comparable
from migrator_sandbox.oracle import expected_customer

#: When the newest rows were loaded. Profiles are spread over the `SYNC_HOURS` hourly syncs
#: before it, as a space that has been syncing for a month would be, so the default
#: one-hour overlap of an incremental run re-reads only the last sync's profiles.
LOADED_AGO = timedelta(days=2)
SYNC_HOURS = 720


def stored_text(value: Any) -> str | None:
    """How a trait value is stored in `user_traits.value`."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def as_read(stored: str | None) -> Any:
    """What a reader of the views makes of a stored value (the documented rule, written
    here independently of the migrator's)."""
    if stored is None:
        return None
    if stored in ("true", "false"):
        return stored == "true"
    if stored.startswith(("{", "[")):
        try:
            return json.loads(stored)
        except ValueError:
            return stored
    return stored


def _instant(created_at: Any) -> datetime | None:
    if not isinstance(created_at, str):
        return None
    try:
        parsed = datetime.fromisoformat(created_at)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def create_views(engine: Engine, schema: str) -> None:
    """The schema and its three views (as tables, with the indexes a reader relies on)."""
    v = views_sql.views(schema)
    meta: MetaData = v.traits.metadata
    for table in (v.traits, v.identifiers, v.merges):
        Index(f"{table.name}_id", table.c.canonical_segment_id)
        Index(f"{table.name}_ts", table.c.uuid_ts)
    with engine.begin() as conn:
        conn.execute(CreateSchema(schema, if_not_exists=True))
        meta.drop_all(conn)
        meta.create_all(conn)


def load(
    engine: Engine,
    schema: str,
    profiles: Iterable[GeneratedProfile],
    loaded_at: datetime | None = None,
) -> int:
    """Load generated profiles as a month of hourly syncs would leave them; returns how many."""
    newest = loaded_at or datetime.now(UTC) - LOADED_AGO
    count = 0
    identifier_rows: list[tuple[Any, ...]] = []  # small: buffered while traits stream
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        with cur.copy(  # type: ignore[attr-defined]
            f'COPY "{schema}".user_traits (canonical_segment_id, name, value, seq, '
            "received_at, uuid_ts) FROM STDIN"
        ) as traits:
            for profile in profiles:
                at = newest - timedelta(hours=profile.index % SYNC_HOURS)
                for seq, (name, value) in enumerate(profile.traits.items()):
                    traits.write_row((profile.segment_id, name, stored_text(value), seq, at, at))
                for entry in profile.external_ids:
                    value = entry.get("id")
                    if value is None or isinstance(value, bool | dict | list):
                        continue
                    identifier_rows.append(
                        (
                            profile.segment_id,
                            entry.get("type"),
                            str(value),
                            0,
                            _instant(entry.get("created_at")),
                            at,
                        )
                    )
                count += 1
        with cur.copy(  # type: ignore[attr-defined]
            f'COPY "{schema}".user_identifiers (canonical_segment_id, type, value, seq, '
            "received_at, uuid_ts) FROM STDIN"
        ) as idents:
            for row in identifier_rows:
                idents.write_row(row)
            loaded = {row[0]: row[5] for row in identifier_rows}
        with cur.copy(  # type: ignore[attr-defined]
            f'COPY "{schema}".profile_merges (canonical_segment_id, segment_id, seq, '
            "received_at, uuid_ts) FROM STDIN"
        ) as merges:
            for segment_id, at in sorted(loaded.items()):
                merges.write_row((segment_id, segment_id, 0, at, at))
        raw.commit()
    finally:
        raw.close()
    with engine.begin() as conn:
        conn.execute(text(f'ANALYZE "{schema}".user_traits'))
        conn.execute(text(f'ANALYZE "{schema}".user_identifiers'))
    return count


def set_traits(
    engine: Engine,
    schema: str,
    segment_id: str,
    traits: Mapping[str, Any],
    at: datetime | None = None,
) -> None:
    """Change (or, with None, remove) traits of one profile, as a sync an hour later would."""
    now = at or datetime.now(UTC)
    with engine.begin() as conn:
        for name, value in traits.items():
            stored = stored_text(value)
            updated = conn.execute(
                text(
                    f'UPDATE "{schema}".user_traits SET value = :v, uuid_ts = :t, '
                    "received_at = :t, seq = seq + 1 WHERE canonical_segment_id = :id AND name = :n"
                ),
                {"v": stored, "t": now, "id": segment_id, "n": name},
            )
            if updated.rowcount == 0:
                conn.execute(
                    text(
                        f'INSERT INTO "{schema}".user_traits (canonical_segment_id, name, value, '
                        "seq, received_at, uuid_ts) VALUES (:id, :n, :v, 0, :t, :t)"
                    ),
                    {"v": stored, "t": now, "id": segment_id, "n": name},
                )


def merge(
    engine: Engine, schema: str, merged: str, survivor: str, at: datetime | None = None
) -> None:
    """Segment's merge: the merged profile's rows move under the survivor (loaded now);
    where both have a trait, the most recently received wins."""
    now = at or datetime.now(UTC)
    q = f'"{schema}"'
    with engine.begin() as conn:
        conn.execute(
            text(
                f"DELETE FROM {q}.user_traits s USING {q}.user_traits m "
                "WHERE s.canonical_segment_id = :survivor AND m.canonical_segment_id = :merged "
                "AND s.name = m.name AND s.received_at <= m.received_at"
            ),
            {"survivor": survivor, "merged": merged},
        )
        conn.execute(
            text(
                f"DELETE FROM {q}.user_traits m USING {q}.user_traits s "
                "WHERE m.canonical_segment_id = :merged AND s.canonical_segment_id = :survivor "
                "AND s.name = m.name"
            ),
            {"survivor": survivor, "merged": merged},
        )
        for view in ("user_traits", "user_identifiers", "profile_merges"):
            conn.execute(
                text(
                    f"UPDATE {q}.{view} SET canonical_segment_id = :survivor, uuid_ts = :t "
                    "WHERE canonical_segment_id IN (:merged, :survivor)"
                ),
                {"survivor": survivor, "merged": merged, "t": now},
            )


# -- the independent check ---------------------------------------------------------------------


class Postgres:
    """A Postgres for the demo and the `sandbox --profiles-sync` command: a throwaway
    server from the `pgserver` wheel, or the database a URL names."""

    def __init__(self, url: str, server: Any = None, directory: Path | None = None) -> None:
        self.url = url
        self._server = server
        #: The socket directory of a throwaway server (None: a database a URL names).
        self.directory = directory

    @classmethod
    @contextlib.contextmanager
    def serve(cls, url: str | None = None) -> Iterator[Postgres]:
        if url:
            yield cls(url)
            return
        try:
            import pgserver
        except ImportError:
            raise ConfigError(
                "the Profiles Sync sandbox needs a Postgres: pip install -e '.[sandbox]' "
                "(the pgserver wheel), or set PROFILES_SYNC_URL to a database it may fill"
            ) from None
        directory = Path(tempfile.mkdtemp(prefix="migrator-warehouse-"))
        server = pgserver.get_server(directory, cleanup_mode="delete")
        try:
            yield cls(f"postgresql://postgres:@/postgres?host={directory}", server, directory)
        finally:
            server.cleanup()
            shutil.rmtree(directory, ignore_errors=True)

    def engine(self) -> Engine:
        return create_engine(engine_url(self.url))


@dataclass
class WarehouseCheck:
    expected: int = 0
    correct: int = 0
    no_identifier: set[str] = field(default_factory=set)
    missing: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.wrong or self.unexpected)

    @property
    def arrived(self) -> int:
        return self.expected - len(self.missing)

    def summary(self) -> str:
        return (
            f"expected={self.expected} correct={self.correct} missing={len(self.missing)} "
            f"wrong={len(self.wrong)} unexpected={len(self.unexpected)}"
        )


def expected_profiles(
    engine: Engine, schema: str, identifier: str = "user_id"
) -> dict[str, tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Every canonical profile as a reader of the views sees it: decoded traits, and its
    earliest identifier (by received_at, then seq, then value) as a one-entry id list."""
    q = f'"{schema}"'
    profiles: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
    best: dict[str, tuple[Any, ...]] = {}
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                f"SELECT canonical_segment_id, name, value FROM {q}.user_traits "
                "ORDER BY canonical_segment_id, seq, received_at"
            )
        )
        for segment_id, name, value in rows:
            traits = profiles.setdefault(segment_id, ({}, []))[0]
            read = as_read(value)
            if read is None:
                traits.pop(name, None)
            else:
                traits[name] = read
        rows = conn.execute(
            text(
                f"SELECT canonical_segment_id, value, seq, received_at FROM {q}.user_identifiers "
                "WHERE type = :type"
            ),
            {"type": identifier},
        )
        for segment_id, value, seq, received in rows:
            profiles.setdefault(segment_id, ({}, []))
            key = (received is None, received, seq, value)
            if segment_id not in best or key < best[segment_id]:
                best[segment_id] = key
    for segment_id, key in best.items():
        received = key[1]
        profiles[segment_id][1].append(
            {
                "type": identifier,
                "id": key[3],
                "created_at": received.isoformat() if received else None,
            }
        )
    return profiles


def verify_warehouse(
    engine: Engine,
    schema: str,
    customers: Mapping[str, dict[str, Any]],
    identifier: str = "user_id",
    metadata_mode: str = "metadata",
    kept: Iterable[str] = (),
    metadata_schema: dict[str, dict[str, Any]] | None = None,
) -> WarehouseCheck:
    """Compare what Voucherify holds with the expected customer of every profile in the
    views. `kept`: source_ids a run listed in merged-profiles.csv (kept, not expected);
    `metadata_schema`: the typed schema Voucherify applied (values compared as typed)."""
    check = WarehouseCheck()
    # One owner per source_id: the profile that got it first (received_at), then the
    # smallest segment_id; the others are duplicates, not expected in Voucherify.
    owners: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {}
    for segment_id, (traits, ids) in expected_profiles(engine, schema, identifier).items():
        expected = expected_customer(
            segment_id, traits, ids, identifier, metadata_mode, metadata_schema
        )
        if expected is None:
            check.no_identifier.add(segment_id)
            continue
        received = ids[0]["created_at"]
        key = (received is None, received or "", segment_id)
        source_id = expected["source_id"]
        if source_id not in owners or key < owners[source_id][0]:
            owners[source_id] = (key, expected)
    seen = set(owners)
    for source_id, (_, expected) in sorted(owners.items()):
        check.expected += 1
        stored = customers.get(source_id)
        if stored is None:
            check.missing.append(source_id)
        elif _without_nulls(stored, metadata_schema or {}) != expected:
            check.wrong.append(source_id)
        else:
            check.correct += 1
    check.unexpected = sorted(set(customers) - seen - set(kept))
    return check


def _without_nulls(
    customer: Mapping[str, Any], metadata_schema: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """A stored null is a cleared value: absent. Typed date-times compare as instants."""
    out: dict[str, Any] = {}
    for key, value in customer.items():
        if value is None:
            continue
        if key in ("address", "metadata") and isinstance(value, dict):
            value = {k: v for k, v in value.items() if v is not None}
            if not value:
                continue
            if key == "metadata":
                value = comparable(value, metadata_schema)
        out[key] = value
    return out
