"""The Profiles Sync source end to end, against a real Postgres the tests start (issue 10):
backfill correct to the last field, kill -9 then resume, unchanged reruns that send and read
nothing, 1% changed sends exactly those, merges listed, removals cleared, no Segment call,
and one clear line for every kind of bad configuration."""

from __future__ import annotations

import asyncio
import csv
import json
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import DateTime, Engine, bindparam, func, select, text
from sqlalchemy.dialects import registry
from sqlalchemy.dialects.postgresql.base import PGDialect

from migrator.config import RunOptions
from migrator.exceptions import ConfigError
from migrator.identity import seen_key
from migrator.mapping import STANDARD_TRAITS
from migrator.outputs import MERGED_FILE
from migrator.result import RunResult
from migrator.runner import run_migration
from migrator.sources import profiles_sync_sql as sql
from migrator.sources.profiles_sync import PAGE_SIZE, ProfilesSyncSource
from migrator.sources.profiles_sync_decode import decode
from migrator_sandbox.generator import ProfileGenerator
from migrator_sandbox.server import ThreadedSandbox
from migrator_sandbox.warehouse import (
    as_read,
    create_views,
    load,
    merge,
    set_traits,
    stored_text,
    verify_warehouse,
)
from tests.helpers import assert_valid_bodies, ledger, listed, settings_for
from tests.test_faults import child_env, read_state, wait_for

SCHEMA = "segment_ps"
PROFILES = 400


@dataclass
class Warehouse:
    url: str
    engine: Engine
    sandbox: ThreadedSandbox  # Voucherify's double (its Segment side is never called)

    def env(self, **extra: str) -> dict[str, str]:
        return {
            "MIGRATOR_SOURCE": "profiles-sync",
            "PROFILES_SYNC_URL": self.url,
            "PROFILES_SYNC_SCHEMA": SCHEMA,
            **extra,
        }

    def run(self, out: Path, **options: Any) -> RunResult:
        restart = options.pop("restart", False)
        env = options.pop("env", {})
        settings = settings_for(self.sandbox, **self.env(**env))
        return asyncio.run(run_migration(settings, out, RunOptions(**options), restart=restart))

    def check(self, out: Path | None = None) -> Any:
        assert self.sandbox.wait_idle()
        kept = []
        if out is not None and (out / MERGED_FILE).exists():
            with (out / MERGED_FILE).open(newline="", encoding="utf-8") as handle:
                kept = [row["source_id"] for row in csv.DictReader(handle)]
        return verify_warehouse(self.engine, SCHEMA, self.sandbox.sandbox.customers, kept=kept)

    def segment_calls(self) -> int:
        return int(self.sandbox.sandbox.stats_json()["segment_requests"])

    def bulk_items(self) -> int:
        return int(self.sandbox.sandbox.stats_json()["customers_received"])


@pytest.fixture
def warehouse(postgres: Any, make_sandbox: Any) -> Iterator[Warehouse]:
    url, engine = postgres.database()
    sb = make_sandbox(profiles=PROFILES, seed=3)
    create_views(engine, SCHEMA)
    load(engine, SCHEMA, ProfileGenerator(sb.sandbox.settings))
    yield Warehouse(url, engine, sb)
    engine.dispose()


def _profile_ids(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                f"SELECT DISTINCT canonical_segment_id FROM {SCHEMA}.user_identifiers "
                "WHERE type = 'user_id' ORDER BY 1"
            )
        )
        return [r[0] for r in rows]


# -- the storage rule ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["plain", "007", "1.0", "34", 34, 1.5, True, False, {"a": [1, None]}, [1, "x"], "", "[x"],
)
def test_trait_values_decode_as_documented(value: Any) -> None:
    stored = stored_text(value)
    assert decode(stored) == as_read(stored)  # the source and the sandbox agree
    if isinstance(value, str | dict | list | bool):
        assert decode(stored) == value
    else:
        assert decode(stored) == stored  # numbers stay text: lossless for string fields


# -- end to end --------------------------------------------------------------------------------


def test_backfill_is_correct_to_the_last_field_and_calls_no_segment_api(
    warehouse: Warehouse, tmp_path: Path
) -> None:
    result = warehouse.run(tmp_path)
    assert result.exit_code == 0, result.stopped
    check = warehouse.check()
    assert check.ok, check.summary()
    assert check.expected == result.counts.confirmed > 0
    assert set(listed(tmp_path)) == check.no_identifier
    assert ledger(tmp_path) == []
    assert assert_valid_bodies(warehouse.sandbox) >= check.expected
    assert warehouse.segment_calls() == 0


def test_an_unchanged_rerun_reads_almost_nothing_and_sends_nothing(
    warehouse: Warehouse, tmp_path: Path
) -> None:
    assert warehouse.run(tmp_path).exit_code == 0
    sent = warehouse.bulk_items()
    again = warehouse.run(tmp_path)
    assert again.exit_code == 0
    # Only the profiles of the last hourly sync, within the one-hour overlap, are read.
    assert 0 < again.counts.profiles_read <= PROFILES // 100
    assert again.counts.unchanged + again.counts.no_identifier == again.counts.profiles_read
    exact = warehouse.run(tmp_path, env={"PROFILES_SYNC_OVERLAP_SECONDS": "0"})
    assert exact.counts.profiles_read == 0  # the views say nothing changed since
    assert warehouse.bulk_items() == sent
    assert warehouse.check().ok


def test_one_percent_changed_sends_exactly_those(warehouse: Warehouse, tmp_path: Path) -> None:
    assert warehouse.run(tmp_path).exit_code == 0
    sent = warehouse.bulk_items()
    ids = _profile_ids(warehouse.engine)
    changed = random.Random(5).sample(ids, max(1, len(ids) // 100))
    for segment_id in changed:
        set_traits(warehouse.engine, SCHEMA, segment_id, {"email": f"{segment_id}@new.example"})
    again = warehouse.run(tmp_path, env={"PROFILES_SYNC_OVERLAP_SECONDS": "0"})
    assert again.exit_code == 0
    assert again.counts.profiles_read == len(changed)
    assert warehouse.bulk_items() - sent == len(changed)
    assert warehouse.check().ok


def test_the_overlap_rereads_recent_rows_but_sends_nothing_unchanged(
    warehouse: Warehouse, tmp_path: Path
) -> None:
    assert warehouse.run(tmp_path).exit_code == 0
    ids = _profile_ids(warehouse.engine)
    set_traits(warehouse.engine, SCHEMA, ids[0], {"phone": "+1 555 0100"})
    sent = warehouse.bulk_items()
    first = warehouse.run(tmp_path, env={"PROFILES_SYNC_OVERLAP_SECONDS": "0"})
    assert first.counts.profiles_read == 1
    second = warehouse.run(tmp_path)  # the change is within the overlap: read, not sent
    assert second.counts.profiles_read == 1 and second.counts.unchanged == 1
    assert warehouse.bulk_items() - sent == 1


def test_a_removed_trait_is_cleared_and_keep_removed_keeps_it(
    warehouse: Warehouse, tmp_path: Path
) -> None:
    assert warehouse.run(tmp_path).exit_code == 0
    customers = warehouse.sandbox.sandbox.customers
    with_phone = [c["source_id"] for c in customers.values() if "phone" in c][:2]
    owners = {
        r[1]: r[0]
        for r in warehouse.engine.connect().execute(
            text(
                f"SELECT canonical_segment_id, value FROM {SCHEMA}.user_identifiers "
                "WHERE type = 'user_id'"
            )
        )
    }
    for source_id in with_phone:
        set_traits(warehouse.engine, SCHEMA, owners[source_id], {"phone": None})
    kept = warehouse.run(tmp_path / "kept", keep_removed=True, restart=True)
    assert kept.exit_code == 0
    assert all(customers[s].get("phone") for s in with_phone)  # --keep-removed: untouched
    again = warehouse.run(tmp_path, env={"PROFILES_SYNC_OVERLAP_SECONDS": "0"})
    assert again.exit_code == 0
    assert all(customers[s].get("phone") is None for s in with_phone)  # cleared by a null
    assert warehouse.check().ok


def test_merges_reread_the_survivor_and_list_what_only_the_merged_profile_fed(
    warehouse: Warehouse, tmp_path: Path
) -> None:
    assert warehouse.run(tmp_path).exit_code == 0
    ids = _profile_ids(warehouse.engine)
    merged, survivor = ids[3], ids[4]
    merge(warehouse.engine, SCHEMA, merged, survivor)
    again = warehouse.run(tmp_path, env={"PROFILES_SYNC_OVERLAP_SECONDS": "0"})
    assert again.exit_code == 0
    assert again.counts.profiles_read == 1  # only the survivor
    with (tmp_path / MERGED_FILE).open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["segment_id"], r["canonical_segment_id"]) for r in rows] == [(merged, survivor)]
    check = warehouse.check(tmp_path)
    assert check.ok, check.summary()
    assert rows[0]["source_id"] in warehouse.sandbox.sandbox.customers  # never deleted


def test_kill_9_mid_backfill_then_rerun_ends_identical(
    postgres: Any, make_sandbox: Any, tmp_path: Path
) -> None:
    url, engine = postgres.database()
    sb = make_sandbox(profiles=3000, seed=4, async_delay=0.3)
    create_views(engine, SCHEMA)
    load(engine, SCHEMA, ProfileGenerator(sb.sandbox.settings))
    env = child_env(
        sb,
        MIGRATOR_SOURCE="profiles-sync",
        PROFILES_SYNC_URL=url,
        PROFILES_SYNC_SCHEMA=SCHEMA,
        VOUCHERIFY_RATE_LIMIT="1200",  # slow enough to be killed half-way
    )
    out = tmp_path / "out"
    args = [sys.executable, "-m", "migrator.cli", "run", "--no-input", "--out-dir", str(out)]
    first = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(
        lambda: (
            bool(read_state(out, "SELECT COUNT(*) FROM customers")[0][0])
            if read_state(out, "SELECT COUNT(*) FROM customers")
            else False
        ),
        60,
        "the first confirmed customers",
    )
    time.sleep(0.5)
    first.send_signal(signal.SIGKILL)
    first.communicate()
    checkpoint = json.loads(read_state(out, "SELECT value FROM meta WHERE key='checkpoint'")[0][0])
    assert checkpoint["source"] == "profiles-sync"
    second = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert "Traceback" not in second.stderr
    assert sb.wait_idle()
    check = verify_warehouse(engine, SCHEMA, sb.sandbox.customers)
    assert check.ok, check.summary()
    assert sb.sandbox.stats_json()["segment_requests"] == 0
    engine.dispose()


# -- the source on its own ---------------------------------------------------------------------


@pytest.mark.parametrize("json_traits", [True, False], ids=["bodies-ahead", "in-turn"])
def test_pages_cover_every_profile_once_in_order_and_resume_from_a_position(
    warehouse: Warehouse, json_traits: bool
) -> None:
    """Both ways of reading a backfill (Postgres 16 builds `READ_AHEAD` pages at once;
    every other warehouse reads a page at a time) give the same pages, and a run stopped
    with pages still being built resumes where it stopped. Built ahead, the first page is
    an eighth of a page and each next one twice as large, up to the page size."""
    sizes: list[int] = []

    async def read(start: str | None, pages: int | None = None) -> tuple[list[str], str | None]:
        source = ProfilesSyncSource(
            warehouse.url,
            SCHEMA,
            identifier="user_id",
            traits=STANDARD_TRAITS,
            watermark=None,
            full=False,
            page_size=64,
        )
        seen: list[str] = []
        position = None
        async with source:
            source._json_traits = json_traits
            async for page in source.pages(start):
                seen.extend(p.segment_id for p in page.profiles)
                sizes.append(len(page))
                position = page.next_position
                if pages is not None and len(seen) >= pages * 64:
                    break
        return seen, position

    everything, _ = asyncio.run(read(None))
    assert everything == sorted(set(everything)) and len(everything) == PROFILES
    assert sizes[:5] == ([8, 16, 32, 64, 64] if json_traits else [64] * 5), sizes
    half, position = asyncio.run(read(None, pages=3))
    rest, _ = asyncio.run(read(position))
    assert half + rest == everything


def _read_all(
    url: str, traits: Any, *, json_traits: bool | None, page_size: int = PAGE_SIZE
) -> dict[str, Any]:
    """Every profile through the source's pages; `json_traits=False`: the portable rows."""

    async def go() -> dict[str, Any]:
        source = ProfilesSyncSource(
            url,
            SCHEMA,
            identifier="user_id",
            traits=traits,
            watermark=None,
            full=True,
            page_size=page_size,
        )
        found: dict[str, Any] = {}
        async with source:
            if json_traits is not None:
                source._json_traits = json_traits
            async for page in source.pages(None):
                found.update((p.segment_id, p) for p in page.profiles)
        return found

    return asyncio.run(go())


@pytest.mark.parametrize("json_traits", [True, False], ids=["decoded-in-sql", "rows"])
@pytest.mark.parametrize("traits", [None, STANDARD_TRAITS], ids=["all", "standard"])
def test_a_trait_in_several_rows_reads_its_latest_and_a_null_removes_it(
    warehouse: Warehouse, json_traits: bool, traits: Any
) -> None:
    """Pages are read without ORDER BY; the latest row (by seq, then received_at) must
    still win, a latest NULL must still remove the trait, and both ways of decoding
    (Postgres 16's, and the rows every warehouse can give) must agree with the rule."""
    ids = _profile_ids(warehouse.engine)
    one, two, three = ids[5], ids[50], ids[300]
    rows = [  # (id, name, value, seq, hours after the loaded row): the last one wins
        (one, "email", "late@example.com", 7, 1),
        (one, "email", "early@example.com", 3, 5),  # lower seq: older, whatever the time
        (two, "phone", "+1 555", 9, 1),
        (two, "phone", "+1 666", 9, 2),  # same seq: the later received_at wins
        (three, "email", None, 50, 1),  # the latest is NULL: the trait is removed
        (three, "metadata", '{"tier": "gold", "n": [1, null]}', 50, 1),
    ]
    with warehouse.engine.begin() as conn:
        for segment_id, name, value, seq, hours in rows:
            conn.execute(
                text(
                    f"INSERT INTO {SCHEMA}.user_traits (canonical_segment_id, name, value, seq, "
                    "received_at, uuid_ts) SELECT :id, :n, :v, :s, max(received_at) + "
                    f"make_interval(hours => :h), now() FROM {SCHEMA}.user_traits"
                ),
                {"id": segment_id, "n": name, "v": value, "s": seq, "h": hours},
            )
    read = _read_all(warehouse.url, traits, json_traits=json_traits)
    assert read[one].traits["email"] == "late@example.com"
    assert read[two].traits["phone"] == "+1 666"
    assert "email" not in read[three].traits
    assert read[three].traits["metadata"] == {"tier": "gold", "n": [1, None]}
    # Every other profile is read exactly as the ordered rows and `decode` say.
    wanted = None if traits is None else set(traits)
    with warehouse.engine.connect() as conn:
        ordered = conn.execute(
            text(
                f"SELECT canonical_segment_id, name, value FROM {SCHEMA}.user_traits "
                "ORDER BY seq, received_at"
            )
        ).all()
    expected: dict[str, dict[str, Any]] = {segment_id: {} for segment_id in read}
    for segment_id, name, value in ordered:
        if wanted is None or name in wanted:
            expected.setdefault(segment_id, {})[name] = decode(value)
    for segment_id, profile in read.items():
        kept = {k: v for k, v in expected[segment_id].items() if v is not None}
        assert dict(profile.traits) == kept, segment_id


@pytest.mark.parametrize("json_traits", [True, False], ids=["decoded-in-sql", "rows"])
def test_numbers_past_64_bits_and_odd_json_are_read_exactly(
    warehouse: Warehouse, json_traits: bool
) -> None:
    """Postgres 16's pages are parsed by orjson, which would read an integer past 64 bits
    as a float: the database flags such a page, and Python's decoder reads it; a text
    orjson refuses (a lone surrogate escape, 1e400) is read by Python's decoder too."""
    ids = _profile_ids(warehouse.engine)
    values = {
        ids[7]: '{"n": 123456789012345678901234567890, "m": [-98765432109876543210]}',
        ids[20]: '{"small": 12345, "f": 0.30000000000000004, "e": 1e-7}',
        ids[40]: '{"s": "\\ud83c", "big": 1e400}',
    }
    with warehouse.engine.begin() as conn:
        for segment_id, value in values.items():
            conn.execute(
                text(
                    f"INSERT INTO {SCHEMA}.user_traits (canonical_segment_id, name, value, seq, "
                    "received_at, uuid_ts) SELECT :id, 'odd_json', :v, 0, max(received_at) + "
                    f"make_interval(hours => 1), now() FROM {SCHEMA}.user_traits"
                ),
                {"id": segment_id, "v": value},
            )
    # Pages of 5: the odd profile's page does not take the others to Python's decoder.
    read = _read_all(warehouse.url, None, json_traits=json_traits, page_size=5)
    for segment_id, value in values.items():
        assert read[segment_id].traits["odd_json"] == decode(value), segment_id
    assert read[ids[7]].traits["odd_json"]["n"] == 123456789012345678901234567890
    assert type(read[ids[7]].traits["odd_json"]["n"]) is int


def test_the_database_decodes_values_as_decode_does(warehouse: Warehouse) -> None:
    """The Postgres 16 path applies the documented rule in SQL: it must agree with
    `decode` on every awkward value, including JSON that does not parse."""
    values = [
        "plain", "007", "1.0", "34", "true", "false", "True", "null", "", " ", "[x", "{x}",
        "[1, 2]", '{"a": {"b": [true, null]}}', "[]", "{}", "[NaN]", "[1] ", " [1]",
        '"quoted"', "{\"a\": 1, \"a\": 2}", "Zoë 🎉", "[\"\\u00e9\"]",
        '{"p": "50%_"}', "{50%}", "[é]", '["é"]',
    ]  # fmt: skip
    segment_id = _profile_ids(warehouse.engine)[0]
    with warehouse.engine.begin() as conn:
        conn.execute(
            text(f"DELETE FROM {SCHEMA}.user_traits WHERE canonical_segment_id = :id"),
            {"id": segment_id},
        )
        for n, value in enumerate(values):
            conn.execute(
                text(
                    f"INSERT INTO {SCHEMA}.user_traits (canonical_segment_id, name, value, seq, "
                    "received_at, uuid_ts) VALUES (:id, :n, :v, 0, now(), now())"
                ),
                {"id": segment_id, "n": f"t{n}", "v": value},
            )
    with warehouse.engine.connect() as conn:
        version = int(conn.execute(text("SHOW server_version_num")).scalar_one())
    source = ProfilesSyncSource(
        warehouse.url, SCHEMA, identifier="user_id", traits=None, watermark=None, full=True
    )
    source._open()
    assert source._json_traits == (version >= 160000)  # the fast path where it can run
    assert source._engine is not None
    source._engine.dispose()
    by_sql = _read_all(warehouse.url, None, json_traits=True)[segment_id].traits
    by_rows = _read_all(warehouse.url, None, json_traits=False)[segment_id].traits
    expected = {f"t{n}": decode(value) for n, value in enumerate(values)}
    assert dict(by_sql) == dict(by_rows) == expected
    assert expected["t16"] == "[NaN]"  # NaN is not JSON: text, as Postgres has it


def test_the_first_identifier_is_the_same_whoever_picks_it(warehouse: Warehouse) -> None:
    """On Postgres 16 a backfill page picks each profile's first identifier in SQL; it must
    be the one the rows path picks: earliest received_at (unknown last), then seq, then
    value in code point order. (Its created_at is the database's ISO text: the instant
    is what counts.)"""
    from migrator.mapping import _instant_key

    ids = _profile_ids(warehouse.engine)
    cases = {  # profile -> extra user_id rows: (value, seq, hours after its first, or None)
        ids[1]: [("aaa-earlier", 0, -5)],  # received earlier: wins
        ids[2]: [("zzz-same-time", 0, 0), ("Zed-same-time", 0, 0)],  # a tie: by value
        ids[3]: [("seq-lower", -1, 0)],  # same time, lower seq: wins
        ids[4]: [("never-received", 0, None)],  # unknown time: last
        ids[5]: [("é-accent", 0, -1), ("e-plain", 0, -1)],  # code points: "e" < "é"
    }
    with warehouse.engine.begin() as conn:
        for segment_id, extra in cases.items():
            for value, seq, hours in extra:
                conn.execute(
                    text(
                        f"INSERT INTO {SCHEMA}.user_identifiers (canonical_segment_id, type, "
                        "value, seq, received_at, uuid_ts) SELECT :id, 'user_id', :v, :s, "
                        "CASE WHEN CAST(:h AS int) IS NULL THEN NULL ELSE min(received_at) + "
                        f"make_interval(hours => CAST(:h AS int)) END, now() FROM "
                        f"{SCHEMA}.user_identifiers WHERE canonical_segment_id = :id"
                    ),
                    {"id": segment_id, "v": value, "s": seq, "h": hours},
                )
    by_sql = _read_all(warehouse.url, STANDARD_TRAITS, json_traits=True)
    by_rows = _read_all(warehouse.url, STANDARD_TRAITS, json_traits=False)
    assert list(by_sql) == list(by_rows)  # the same pages, in the same order

    def first(profile: Any) -> list[tuple[Any, ...]]:
        return [(e["id"], _instant_key(e["created_at"])) for e in profile.external_ids]

    assert all(first(by_sql[i]) == first(by_rows[i]) for i in by_rows)
    assert by_rows[ids[1]].external_ids[0]["id"] == "aaa-earlier"
    assert by_rows[ids[5]].external_ids[0]["id"] == "e-plain"
    assert all(dict(by_sql[i].traits) == dict(by_rows[i].traits) for i in by_rows)


@pytest.mark.parametrize("dialect", ["postgresql", "mysql", "sqlite", "mssql", "oracle"])
def test_every_query_compiles_for_other_dialects(dialect: str) -> None:
    """No Postgres-only construct: the same queries serve every warehouse."""
    from sqlalchemy.dialects import registry

    compiled = registry.load(dialect)()
    v = sql.views("ps")
    queries = [
        *sql.profile_ids(v, since=True, limit=10),
        *sql.profile_ids(v, since=False, limit=10),
        sql.traits_of(v, ["email"], ranged=True),
        sql.traits_of(v, None, ranged=False),
        sql.traits_in_order(v, ["email"]),
        sql.traits_in_order(v, None),
        sql.identifiers_of(v, ranged=True),
        sql.identifiers_of(v, ranged=False),
        sql.merges_since(v, since=True),
        sql.watermark(v),
    ]
    if dialect == "postgresql":  # Postgres 16's faster forms; every other reads the rows
        queries.append(sql.traits_json_of(v, ["email"], ranged=True))
        queries.append(sql.traits_json_of(v, None, ranged=False))
        queries.append(sql.page_ids_json(v, limit=10))
        queries.append(sql.page_body_json(v, ["email"]))
    for query in queries:
        assert str(query.compile(dialect=compiled)).startswith(("SELECT", "WITH"))


# -- the owner's key, computed by the database ---------------------------------------------------

_ZONES = [
    "UTC",
    "Asia/Tokyo",
    "America/Los_Angeles",
    "Asia/Kathmandu",
    "Pacific/Kiritimati",
    "Europe/Amsterdam",  # old dates: offsets in seconds (+00:19:32)
    "America/St_Johns",
]


def test_the_databases_seen_key_is_pythons(postgres: Any) -> None:
    """`sql.seen_key` (the key a page's first identifier carries) equals
    `identity.seen_key` of the text the database sends for that instant, for any instant
    in Python's years and any session time zone, and for a timestamp without a zone; null
    only where Python computes it (the first and last year, infinity, no time)."""
    url, engine = postgres.database()
    instants = st.datetimes(
        min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59, 999999)
    )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        aware = bindparam("at", type_=DateTime(timezone=True))
        naive = bindparam("at", type_=DateTime())
        queries = [
            select(func.to_json(column), sql.seen_key(func.extract("epoch", column)))
            for column in (aware, naive)
        ]

        @settings(max_examples=300, deadline=None)
        @given(at=instants, zone=st.sampled_from(_ZONES), without_zone=st.booleans())
        def check(at: datetime, zone: str, without_zone: bool) -> None:
            conn.exec_driver_sql(f"SET TIME ZONE '{zone}'")
            value = at if without_zone else at.replace(tzinfo=UTC)
            sent, key = conn.execute(queries[without_zone], {"at": value}).one()
            external = [{"type": "user_id", "id": "u", "created_at": sent}]
            if key is not None:
                assert key == seen_key(external, "user_id", "u"), (sent, zone)
            else:
                assert not datetime(2, 1, 1) <= at < datetime(9999, 1, 1), (sent, zone)

        check()
        for special in ("'infinity'", "'-infinity'", "NULL"):
            found = conn.execute(
                select(sql.seen_key(func.extract("epoch", text(f"{special}::timestamptz"))))
            ).scalar()
            assert found is None, special
    engine.dispose()


# -- bad configuration -------------------------------------------------------------------------


def _open(url: str, schema: str = SCHEMA) -> None:
    source = ProfilesSyncSource(
        url,
        schema,
        identifier="user_id",
        traits=None,
        watermark=None,
        full=False,
        secrets=("s3cret-pw",),
    )

    async def go() -> None:
        async with source:
            pass

    asyncio.run(go())


def test_bad_configuration_is_one_line_without_the_password(
    warehouse: Warehouse, postgres: Any
) -> None:
    host = f"?host={postgres.dir}"
    cases = {
        "unreachable": "postgresql://u:s3cret-pw@127.0.0.1:1/db",
        "wrong password": f"postgresql://nobody:s3cret-pw@/{warehouse.engine.url.database}{host}",
        "no such database": f"postgresql://postgres:s3cret-pw@/nope{host}",
    }
    for what, url in cases.items():
        with pytest.raises(ConfigError) as caught:
            _open(url)
        message = str(caught.value)
        assert "s3cret-pw" not in message and "\n" not in message, what
    with pytest.raises(ConfigError, match="no such schema"):
        _open(warehouse.url, "missing_schema")
    with warehouse.engine.begin() as conn:
        conn.execute(text(f"ALTER TABLE {SCHEMA}.user_identifiers DROP COLUMN seq"))
    with pytest.raises(ConfigError, match="user_identifiers lacks column.*seq"):
        _open(warehouse.url)
    with warehouse.engine.begin() as conn:
        conn.execute(text(f"ALTER TABLE {SCHEMA}.user_identifiers ADD COLUMN seq bigint"))
        conn.execute(text(f"DROP TABLE {SCHEMA}.profile_merges"))
    with pytest.raises(ConfigError, match="profile_merges is missing"):
        _open(warehouse.url)


class _DriverNotInstalled(PGDialect):
    """A dialect whose driver is missing, as `postgresql+psycopg2://` is without psycopg2."""

    @classmethod
    def import_dbapi(cls) -> Any:
        raise ModuleNotFoundError("No module named 'no_such_driver'", name="no_such_driver")


registry.register("migratortest.missingdriver", __name__, "_DriverNotInstalled")


def test_a_url_without_its_driver_or_dialect_is_one_line_before_the_run() -> None:
    """Found with `postgresql+psycopg2://` and `mysql+pymysql://`: a traceback, exit 1,
    once the run had started. Now the source refuses them when it is built."""
    cases = {
        "migratortest+missingdriver://u:s3cret-pw@host/db": "package no_such_driver, which is",
        "nosuchwarehouse://u:s3cret-pw@host/db": "extra installed",
        "postgresql://u:s3cret-pw@host:notaport/db": "not usable",
    }
    for url, expected in cases.items():
        with pytest.raises(ConfigError, match=expected) as caught:
            _open(url)
        message = str(caught.value)
        assert "s3cret-pw" not in message and "\n" not in message, url


def test_bad_configuration_on_the_command_line_is_exit_2(
    warehouse: Warehouse, tmp_path: Path
) -> None:
    env = child_env(warehouse.sandbox, **warehouse.env(PROFILES_SYNC_SCHEMA="nope"))
    for variable in ("SEGMENT_ACCESS_TOKEN", "SEGMENT_SPACE_ID"):
        env.pop(variable, None)  # not needed by this source
    done = subprocess.run(
        [sys.executable, "-m", "migrator.cli", "run", "--no-input", "--out-dir", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "no such schema" in lines[0], done.stderr
    assert warehouse.bulk_items() == 0


def test_two_profiles_with_one_identifier_have_one_owner_and_settle(
    warehouse: Warehouse, tmp_path: Path
) -> None:
    """Issue 11: the profile that got the identifier first owns the customer; the other is
    listed once in duplicate-identifiers.csv; reruns send nothing, in any read order."""
    ids = _profile_ids(warehouse.engine)
    owner, other = ids[10], ids[2]  # the non-owner is read first (keyset order)
    with warehouse.engine.begin() as conn:
        shared, first_seen = conn.execute(
            text(
                f"SELECT value, received_at FROM {SCHEMA}.user_identifiers "
                "WHERE canonical_segment_id = :id AND type = 'user_id' ORDER BY received_at"
            ),
            {"id": owner},
        ).first()
        conn.execute(
            text(f"DELETE FROM {SCHEMA}.user_identifiers WHERE canonical_segment_id = :id"),
            {"id": other},
        )
        conn.execute(
            text(
                f"INSERT INTO {SCHEMA}.user_identifiers (canonical_segment_id, type, value, "
                "seq, received_at, uuid_ts) VALUES (:id, 'user_id', :v, 0, :t, now())"
            ),
            {"id": other, "v": shared, "t": first_seen + timedelta(days=1)},
        )
    first = warehouse.run(tmp_path)
    assert first.exit_code == 0 and first.counts.duplicates == 1
    with (tmp_path / "duplicate-identifiers.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert rows == [{"source_id": shared, "segment_id": other, "owner_segment_id": owner}]
    check = warehouse.check()
    assert check.ok, check.summary()  # the customer is the owner's, to the last field
    sent = warehouse.bulk_items()
    again = warehouse.run(tmp_path, full=False, restart=True)  # reads both again
    assert again.exit_code == 0 and warehouse.bulk_items() == sent  # quiescent
    with (tmp_path / "duplicate-identifiers.csv").open(newline="", encoding="utf-8") as handle:
        assert len(list(csv.DictReader(handle))) == 1  # no line twice across runs


def test_a_resumed_run_keeps_the_watermark_it_started_with(warehouse: Warehouse) -> None:
    """Rows loaded while a run was stopped, for profiles behind its position, must be read
    by the next run: the resumed run leaves the watermark of its first start."""

    def source() -> ProfilesSyncSource:
        return ProfilesSyncSource(
            warehouse.url,
            SCHEMA,
            identifier="user_id",
            traits=None,
            watermark=None,
            full=False,
            page_size=64,
        )

    async def first_page() -> tuple[str | None, str | None]:
        async with source() as s:
            async for page in s.pages(None):
                return page.next_position, s.watermark()
        return None, None

    async def resumed(position: str) -> str | None:
        async with source() as s:
            async for _ in s.pages(position):
                pass
            return s.watermark()

    position, started = asyncio.run(first_page())
    assert position is not None and started is not None
    set_traits(warehouse.engine, SCHEMA, _profile_ids(warehouse.engine)[0], {"phone": "+1 5"})
    assert asyncio.run(resumed(position)) == started
