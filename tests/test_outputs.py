"""Tests of migrator.outputs: appended lists during a run, rewritten from state at the end."""

from __future__ import annotations

import csv
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from migrator.outputs import (
    DRY_RUN_FILE,
    FAILURES_FILE,
    MERGED_FILE,
    NO_IDENTIFIER_FILE,
    OutputFiles,
    compact_json,
    json_bytes,
    make_files_private,
    make_private,
    make_private_dir,
)


def read_csv(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def read_jsonl(path: Path) -> list[Any]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


IDS = ["use_1", "use,comma", 'use"quote', "use_ü"]


def test_append_no_identifier_writes_the_header_once(tmp_path: Path) -> None:
    outputs = OutputFiles(tmp_path)
    for segment_id in IDS:
        outputs.append_no_identifier(segment_id)
    outputs.close()
    assert outputs.no_identifier == tmp_path / NO_IDENTIFIER_FILE
    assert read_csv(outputs.no_identifier) == [["segment_id"], *([i] for i in IDS)]


def test_the_no_identifier_list_is_watchable_as_it_grows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first line shows at once; later ones once a flush interval has passed."""
    outputs = OutputFiles(tmp_path)
    outputs.append_no_identifier("use_1")
    outputs.append_no_identifier("use_2")
    assert read_csv(outputs.no_identifier) == [["segment_id"], ["use_1"]]
    monkeypatch.setattr("migrator.outputs.LIST_FLUSH_SECONDS", 0.0)
    outputs.append_no_identifier("use_3")
    assert read_csv(outputs.no_identifier) == [["segment_id"], ["use_1"], ["use_2"], ["use_3"]]
    outputs.close()


def test_append_continues_an_existing_file(tmp_path: Path) -> None:
    OutputFiles(tmp_path).append_no_identifier("use_1")
    OutputFiles(tmp_path).append_no_identifier("use_2")
    assert read_csv(tmp_path / NO_IDENTIFIER_FILE) == [["segment_id"], ["use_1"], ["use_2"]]


@pytest.mark.parametrize(
    ("appended", "state"),
    [
        (["use_1", "use_2", "use_1", "use_2", "use_3"], ["use_1", "use_2", "use_3"]),
        (["use_1", "use_2"], ["use_2"]),
        (["use_1"], []),
        ([], ["use_1"]),
    ],
    ids=["resumed-duplicates", "one-removed", "all-removed", "nothing-appended"],
)
def test_rewrite_no_identifier_is_exactly_the_state(
    tmp_path: Path, appended: list[str], state: list[str]
) -> None:
    outputs = OutputFiles(tmp_path)
    for segment_id in appended:
        outputs.append_no_identifier(segment_id)
    outputs.rewrite(iter(state), [])
    rows = read_csv(outputs.no_identifier)
    assert rows == [["segment_id"], *([i] for i in state)]
    assert len({r[0] for r in rows}) == len(rows)
    assert sorted(p.name for p in tmp_path.iterdir()) == [FAILURES_FILE, NO_IDENTIFIER_FILE]


FAILURES = [
    {"segment_id": "use_1", "source_id": "41", "error": "bad email", "payload": {"a": 1}},
    {"segment_id": "use_2", "source_id": None, "error": "Zoë ✓", "payload": None},
]


def test_append_failure_writes_one_json_line_each(tmp_path: Path) -> None:
    outputs = OutputFiles(tmp_path)
    for record in FAILURES:
        outputs.append_failure(record)
    text = outputs.failures.read_text(encoding="utf-8")
    assert outputs.failures == tmp_path / FAILURES_FILE
    assert text.count("\n") == 2 and text.endswith("\n")
    assert "Zoë ✓" in text
    assert read_jsonl(outputs.failures) == FAILURES


@pytest.mark.parametrize(
    ("appended", "state"),
    [(FAILURES + FAILURES, FAILURES), (FAILURES, FAILURES[1:]), (FAILURES, [])],
    ids=["resumed-duplicates", "one-fixed", "all-fixed"],
)
def test_rewrite_failures_is_exactly_the_state(
    tmp_path: Path, appended: list[dict[str, Any]], state: list[dict[str, Any]]
) -> None:
    outputs = OutputFiles(tmp_path)
    for record in appended:
        outputs.append_failure(record)
    outputs.rewrite([], iter(state))
    assert read_jsonl(outputs.failures) == state
    assert read_csv(outputs.no_identifier) == [["segment_id"]]


def test_dry_run_file(tmp_path: Path) -> None:
    outputs = OutputFiles(tmp_path)
    (tmp_path / DRY_RUN_FILE).write_text("stale\n", encoding="utf-8")
    outputs.start_dry_run()
    payloads = [{"source_id": "41", "name": "Zoë"}, {"source_id": "42"}]
    for payload in payloads:
        outputs.append_dry_run(payload)
    outputs.close()
    outputs.close()
    assert read_jsonl(tmp_path / DRY_RUN_FILE) == payloads


# -- issue 14.5: customer data is the owner's only ---------------------------------------------


@pytest.fixture
def open_umask() -> Any:
    previous = os.umask(0)  # the most permissive there is: modes must not depend on it
    yield
    os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_every_file_is_0600_and_a_new_out_dir_0700_whatever_the_umask(
    tmp_path: Path, open_umask: None
) -> None:
    out = tmp_path / "parent" / "out"
    make_private_dir(out)
    assert _mode(out) == 0o700
    outputs = OutputFiles(out)
    outputs.append_no_identifier("use_1")
    outputs.append_failure({"segment_id": "use_2", "source_id": "a@b.c", "payload": {}})
    outputs.append_merged("use_3", "use_4", "x")
    outputs.start_dry_run()
    outputs.append_dry_run({"source_id": "a@b.c"})
    outputs.close()
    names = [NO_IDENTIFIER_FILE, FAILURES_FILE, DRY_RUN_FILE, MERGED_FILE]
    for name in names:
        assert _mode(out / name) == 0o600, name
    outputs.rewrite(["use_1"], [], [("use_3", "use_4", "x")])
    for name in names:
        assert _mode(out / name) == 0o600, name
    assert sorted(p.name for p in out.iterdir()) == sorted(names)  # no temporary left


def test_files_an_older_version_left_readable_are_made_private(
    tmp_path: Path, open_umask: None
) -> None:
    existing = tmp_path / "existing"
    existing.mkdir(mode=0o755)
    for name in (NO_IDENTIFIER_FILE, FAILURES_FILE, DRY_RUN_FILE):
        (existing / name).write_text("old\n")
        os.chmod(existing / name, 0o644)
    make_private_dir(existing)
    assert _mode(existing) == 0o755  # an existing directory is the operator's choice
    make_files_private(existing)
    for name in (NO_IDENTIFIER_FILE, FAILURES_FILE, DRY_RUN_FILE):
        assert _mode(existing / name) == 0o600, name
        assert (existing / name).read_text() == "old\n"
    state = existing / "state"
    make_private(state)
    assert _mode(state) == 0o600 and state.read_bytes() == b""


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(exclude_categories=("Cs",))),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(_JSON)
def test_json_bytes_is_the_compact_json_text_of_the_same_value(value: object) -> None:
    """orjson writes bodies and dry-run lines; what it refuses (ints past 64 bits) Python's
    encoder writes. Either way the text decodes to the value, and is the one
    `compact_json` writes but for how a float's exponent is spelled."""
    written = json_bytes(value)
    assert json.loads(written) == value
    assert json.loads(written) == json.loads(compact_json(value))
    if not _has_float(value):
        assert written == compact_json(value).encode()


def _has_float(value: object) -> bool:
    if isinstance(value, dict):
        return any(_has_float(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_float(v) for v in value)
    return isinstance(value, float)
