"""Helpers of the end-to-end tests: the official schema, and what a run left behind."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from migrator.config import Settings, load_settings
from migrator.outputs import FAILURES_FILE, NO_IDENTIFIER_FILE
from tests.conftest import FAST_ENV

SCHEMA = json.loads(
    (Path(__file__).parent / "voucherify-customers-bulk.schema.json").read_text("utf-8")
)
# format_checker makes "format": "date" an assertion, not an annotation.
VALIDATOR = Draft202012Validator(SCHEMA, format_checker=Draft202012Validator.FORMAT_CHECKER)


def settings_for(sandbox: Any, **env: str) -> Settings:
    """Settings that point at `sandbox`, unthrottled, with `env` on top."""
    return load_settings(sandbox.env() | FAST_ENV | env)


def listed(out: Path) -> list[str]:
    """The segment ids in the no-identifier CSV, in file order (duplicates kept)."""
    with (out / NO_IDENTIFIER_FILE).open(newline="", encoding="utf-8") as handle:
        return [row["segment_id"] for row in csv.DictReader(handle)]


def ledger(out: Path) -> list[dict[str, Any]]:
    """The failure ledger's records; none when the file was never written."""
    path = out / FAILURES_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def has_null(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, dict):
        return any(has_null(v) for v in value.values())
    if isinstance(value, list):
        return any(has_null(v) for v in value)
    return False


def assert_valid_bodies(sandbox: Any) -> int:
    """Every body Voucherify received validates against the official schema, with no null.

    Returns the number of customers in them.
    """
    items = 0
    for body in sandbox.sandbox.bodies:
        errors = [e.message for e in VALIDATOR.iter_errors(body)]
        assert not errors, errors[:3]
        assert not has_null(body)
        items += len(body)
    return items
