"""Tests of migrator.state: runs, checkpoint, fingerprints, failures, no-identifier list."""

from __future__ import annotations

import contextlib
import json
import random
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from migrator.exceptions import RequestRejected
from migrator.state import STATE_FILE, Checkpoint, Failure, StateStore
from migrator.state_lists import IN_JSON, in_json

Reopen = Callable[[StateStore], StateStore]


@pytest.fixture
def opened() -> Iterator[list[StateStore]]:
    stores: list[StateStore] = []
    yield stores
    for state in stores:
        with contextlib.suppress(sqlite3.ProgrammingError):  # already closed by reopen
            state.close()


@pytest.fixture
def store(tmp_path: Path, opened: list[StateStore]) -> StateStore:
    opened.append(StateStore(tmp_path))
    return opened[-1]


@pytest.fixture
def reopen(opened: list[StateStore]) -> Reopen:
    """Close and reopen, so every assertion is about what reached the file."""

    def again(state: StateStore) -> StateStore:
        state.close()
        opened.append(StateStore(state.path.parent))
        return opened[-1]

    return again


# -- runs --------------------------------------------------------------------------------


def test_run_lifecycle(tmp_path: Path) -> None:
    with StateStore(tmp_path) as store:
        first = store.start_run("migrate", None)
        store.finish_run(first, "completed", {"written": 3, "failed": 1})
        second = store.start_run("sync", "cursor-7")
    with StateStore(tmp_path) as store:
        runs = store.recent_runs()
    assert second > first
    assert [(r["id"], r["command"], r["outcome"]) for r in runs] == [
        (second, "sync", "running"),
        (first, "migrate", "completed"),
    ]
    assert runs[1]["counts"] == {"written": 3, "failed": 1}
    assert runs[0]["counts"] == {}
    assert runs[0]["ended_at"] is None
    assert runs[1]["ended_at"] >= runs[1]["started_at"]


def test_recent_runs_limit_is_newest_first(store: StateStore) -> None:
    ids = [store.start_run("migrate", None) for _ in range(5)]
    assert [r["id"] for r in store.recent_runs(limit=3)] == ids[:1:-1]


def test_close_abandoned_runs_marks_only_unfinished_runs(tmp_path: Path) -> None:
    with StateStore(tmp_path) as store:
        done = store.start_run("migrate", None)
        store.finish_run(done, "completed", {})
        failed = store.start_run("migrate", None)
        store.finish_run(failed, "failed", {})
        dead = store.start_run("migrate", "c3")
    with StateStore(tmp_path) as store:
        store.close_abandoned_runs()
        outcomes = {r["id"]: r["outcome"] for r in store.recent_runs()}
    assert outcomes == {done: "completed", failed: "failed", dead: "killed"}


# -- checkpoint --------------------------------------------------------------------------


@pytest.mark.parametrize("cursor", [None, "", "c-42", "next=ü/✓"], ids=repr)
def test_checkpoint_round_trip(store: StateStore, reopen: Reopen, cursor: str | None) -> None:
    assert store.checkpoint() is None
    store.set_checkpoint(cursor, 3)
    store = reopen(store)
    assert store.checkpoint() == Checkpoint(cursor, 3)
    store.clear_checkpoint()
    assert store.checkpoint() is None
    assert reopen(store).checkpoint() is None


def test_checkpoint_moves(store: StateStore) -> None:
    store.set_checkpoint("c1", 1)
    store.set_checkpoint("c2", 1)
    store.set_checkpoint(None, 2)
    checkpoint = store.checkpoint()
    assert checkpoint == Checkpoint(None, 2)
    assert checkpoint is not None and checkpoint.cursor is None


# -- customers ---------------------------------------------------------------------------


def test_fingerprints_and_confirm(store: StateStore, reopen: Reopen) -> None:
    assert store.fingerprints("42") is None
    store.confirm([("42", "use_a", {"email": "h1", "name": "h2"}), ("43", "use_b", {})], 1)
    store.confirm([("42", "use_a", {"email": "h3"})], 2)
    store = reopen(store)
    assert store.fingerprints("42") == {"email": "h3"}
    assert store.fingerprints("43") == {}
    assert store.fingerprints("44") is None
    assert store.confirmed_count() == 2


def test_confirm_clears_the_failure_of_that_segment_id(store: StateStore, reopen: Reopen) -> None:
    for segment_id in ("use_a", "use_b", "use_c"):
        store.record_failure(Failure(segment_id, segment_id[-1], "boom", None), 1)
    store.confirm([("a", "use_a", {}), ("zz", "use_c", {})], 2)
    store = reopen(store)
    assert [f.segment_id for f in store.failures()] == ["use_b"]
    assert store.failure_count() == 1


# -- failures ----------------------------------------------------------------------------

FAILURES = [
    Failure("use_1", "41", "voucherify: Invalid email (HTTP 400)", {"source_id": "41"}),
    Failure("use_2", None, "segment: timed out", None),
    Failure("use_3", "43", "Zoë: ünïcode ✓", {"source_id": "43", "name": "Zoë", "n": [1, 2]}),
]


def test_failures_round_trip_in_order(store: StateStore, reopen: Reopen) -> None:
    for failure in FAILURES:
        store.record_failure(failure, 1)
    store = reopen(store)
    assert list(store.failures()) == FAILURES
    assert store.failure_count() == 3
    assert [f.as_record() for f in store.failures()][2] == {
        "segment_id": "use_3",
        "source_id": "43",
        "error": "Zoë: ünïcode ✓",
        "payload": {"source_id": "43", "name": "Zoë", "n": [1, 2]},
    }


def test_failure_is_replaced_not_duplicated(store: StateStore, reopen: Reopen) -> None:
    for failure in FAILURES:
        store.record_failure(failure, 1)
    newer = Failure("use_1", "41", "voucherify: still invalid", None)
    store.record_failure(newer, 2)
    store = reopen(store)
    assert store.failure_count() == 3
    assert list(store.failures())[-1] == newer
    assert {f.segment_id for f in store.failures()} == {"use_1", "use_2", "use_3"}


@pytest.mark.parametrize("cleared", ["use_1", "use_2", "absent"])
def test_clear_failure(store: StateStore, reopen: Reopen, cleared: str) -> None:
    for failure in FAILURES:
        store.record_failure(failure, 1)
    store.clear_failure(cleared)
    store = reopen(store)
    remaining = [f.segment_id for f in store.failures()]
    assert cleared not in remaining
    assert len(remaining) == (3 if cleared == "absent" else 2)


# -- profiles without the identifier -----------------------------------------------------


def test_no_identifier_add_is_true_only_the_first_time(store: StateStore, reopen: Reopen) -> None:
    assert store.add_no_identifier("use_1", 1) is True
    assert store.add_no_identifier("use_2", 1) is True
    assert store.add_no_identifier("use_1", 2) is False
    store = reopen(store)
    assert store.add_no_identifier("use_2", 3) is False
    assert list(store.no_identifier_ids()) == ["use_1", "use_2"]
    assert store.no_identifier_count() == 2


@pytest.mark.parametrize(
    ("removed", "expected", "remaining"),
    [("use_1", True, ["use_2"]), ("use_9", False, ["use_1", "use_2"])],
    ids=["listed", "not-listed"],
)
def test_remove_no_identifier(
    store: StateStore, reopen: Reopen, removed: str, expected: bool, remaining: list[str]
) -> None:
    store.add_no_identifier("use_1", 1)
    store.add_no_identifier("use_2", 1)
    assert store.remove_no_identifier(removed) is expected
    store = reopen(store)
    assert list(store.no_identifier_ids()) == remaining
    assert store.no_identifier_count() == len(remaining)
    assert store.add_no_identifier(removed, 2) is True


def test_counts_start_at_zero(store: StateStore) -> None:
    assert (store.confirmed_count(), store.failure_count(), store.no_identifier_count()) == (
        0,
        0,
        0,
    )
    assert store.recent_runs() == []
    assert list(store.failures()) == []


def test_state_file_is_wal_sqlite(store: StateStore) -> None:
    assert store.path.name == STATE_FILE
    mode = sqlite3.connect(store.path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_no_secret_reaches_the_state_file(tmp_path: Path) -> None:
    token, key = "seg-SECRET-token-a1b2c3", "vf-SECRET-key-d4e5f6"
    error = RequestRejected("voucherify", "Invalid", status=400, code="c", request_id="v-1")
    with StateStore(tmp_path) as store:
        run = store.start_run("migrate", "c1")
        store.set_checkpoint("c2", run)
        store.confirm([("42", "use_1", {"email": "0123abcd"})], run)
        store.record_failure(Failure("use_2", "43", str(error), {"source_id": "43"}), run)
        store.add_no_identifier("use_3", run)
        store.finish_run(run, "completed", {"written": 1, "failed": 1})
    files = [p for p in tmp_path.iterdir() if p.name.startswith(STATE_FILE)]
    assert files
    for path in files:
        data = path.read_bytes()
        assert token.encode() not in data and key.encode() not in data
        assert b"SECRET" not in data


# -- prefetch: one query per table, the same answers -------------------------------------------


def _tables(state: StateStore) -> dict[str, list[tuple[object, ...]]]:
    """What the store's own connection sees, uncommitted writes included, once the owners
    it holds back are written (as every commit does)."""
    state._flush_due()
    return {
        table: sorted(state._db.execute(f"SELECT {columns} FROM {table}").fetchall())
        for table, columns in (
            ("owners", "source_id, segment_id, seen"),
            ("duplicates", "segment_id, source_id, owner_segment_id"),
            ("customers", "source_id, segment_id, fingerprints"),
            ("no_identifier", "segment_id"),
        )
    }


@pytest.mark.parametrize("seed", range(20))
def test_prefetched_answers_are_the_answers_without_it(
    tmp_path: Path, opened: list[StateStore], seed: int
) -> None:
    """The pipeline prefetches a chunk's state, then claims, looks up, confirms, moves
    owners and lists profiles one by one: every answer, and what reaches the file, must be
    what the store gives without prefetching, however the writes interleave."""
    rng = random.Random(seed)
    (tmp_path / "plain").mkdir()
    (tmp_path / "fetched").mkdir()
    plain = StateStore(tmp_path / "plain")
    fetched = StateStore(tmp_path / "fetched")
    opened.extend([plain, fetched])
    segments = [f"seg{i}" for i in range(8)]
    sources = [f"src{i}" for i in range(4)]
    for _ in range(300):
        if rng.random() < 0.1:
            fetched.prefetch(rng.sample(segments, 6), rng.sample(sources, 3))
        segment, source = rng.choice(segments), rng.choice(sources)
        op, seen = rng.randrange(6), str(rng.randrange(4))  # seen: when it got the identifier
        answers = []
        for state in (plain, fetched):
            if op == 0:
                answers.append(state.claim(source, segment, lambda s=seen: s, 1))
            elif op == 1:
                answers.append(state.written(source))
            elif op == 2:
                state.confirm([(source, segment, {"email": segment})], 1)
            elif op == 3:
                state.set_owner(source, segment)
            elif op == 4:
                answers.append(state.add_no_identifier(segment, 1))
            else:
                answers.append(state.remove_no_identifier(segment))
        if rng.random() < 0.03:
            survivor = rng.choice(segments)
            for state in (plain, fetched):
                state.transfer_owner(segment, survivor)
        assert answers[:1] == answers[1:], (op, segment, source)
        assert _tables(plain) == _tables(fetched), (op, segment, source)


def test_owners_held_back_are_seen_by_later_claims_and_reach_the_file(tmp_path: Path) -> None:
    """Owners are written behind (one statement per chunk): a claim must still see the
    owners claimed before it, and closing the store must leave every owner in the file."""
    state = StateStore(tmp_path)
    assert state.claim("src", "seg2", lambda: "2", 1) == "seg2"
    assert state.claim("src", "seg1", lambda: "1", 1) == "seg1"  # got it earlier: owns it
    assert state.claim("src", "seg3", lambda: "3", 1) == "seg1"
    for n in range(1500):  # past the bound: some go out before any commit
        state.claim(f"other{n}", f"profile{n}", lambda: "0", 1)
    state.close()
    with sqlite3.connect(tmp_path / STATE_FILE) as db:
        assert db.execute("SELECT COUNT(*) FROM owners").fetchone()[0] == 1501
    reopened = StateStore(tmp_path)
    assert reopened.claim("src", "seg3", lambda: "3", 1) == "seg1"
    assert sorted(reopened.duplicates()) == [("src", "seg2", "seg1"), ("src", "seg3", "seg1")]
    reopened.close()


def test_in_json_reads_back_as_the_keys_whatever_their_text() -> None:
    """The keys of an `IN_JSON` lookup come back from SQLite's json_each as given:
    non-ASCII by orjson, a lone surrogate by json.dumps."""
    db = sqlite3.connect(":memory:")
    for keys in (["use_1", "Björn+1@example.com", "日本"], ["a\ud800b"], []):
        text = in_json(keys)
        assert json.loads(text) == keys
        if "\ud800" not in "".join(keys):  # SQLite keeps text as UTF-8: no lone surrogate
            found = [r[0] for r in db.execute(IN_JSON[1:-1], (text,))]
            assert found == keys
