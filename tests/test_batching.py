"""Batcher: bodies never pass 100 items or 10 MB, and a full body uses the limit exactly."""

from __future__ import annotations

import asyncio
import json

import pytest

from migrator import batching
from migrator.batching import ENVELOPE_BYTES, Batch, Batcher, Item, fits_alone
from migrator.checkpoint import TrackedPage
from migrator.voucherify import MAX_BYTES, MAX_ITEMS


def _item(body: bytes) -> Item:
    return Item(TrackedPage(None, 1), "seg", "src", {}, body, {})


def _collect() -> tuple[list[Batch], Batcher]:
    sent: list[Batch] = []
    return sent, Batcher(sent.append, lambda: False)


async def test_a_hundred_items_leave_at_once() -> None:
    sent, batcher = _collect()
    for _ in range(MAX_ITEMS * 2 + 1):
        batcher.add(_item(b'{"source_id":"x"}'))
    assert [len(b.items) for b in sent] == [MAX_ITEMS, MAX_ITEMS]
    batcher.flush()
    assert [len(b.items) for b in sent] == [MAX_ITEMS, MAX_ITEMS, 1]
    assert json.loads(sent[0].body()) == [{"source_id": "x"}] * MAX_ITEMS


async def test_a_body_exactly_at_the_limit_is_kept_and_one_byte_more_is_not() -> None:
    half = (MAX_BYTES - ENVELOPE_BYTES - 1) // 2  # two items and their comma fill it
    first = _item(b"a" * half)
    second = _item(b"b" * (MAX_BYTES - ENVELOPE_BYTES - 1 - half))
    sent, batcher = _collect()
    batcher.add(first)
    batcher.add(second)
    batcher.flush()
    assert len(sent) == 1 and len(sent[0].body()) == MAX_BYTES

    sent, batcher = _collect()
    batcher.add(first)
    batcher.add(_item(second.body + b"c"))
    batcher.flush()
    assert [len(b.items) for b in sent] == [1, 1]
    assert all(len(b.body()) <= MAX_BYTES for b in sent)


async def test_a_partial_batch_leaves_after_the_linger_unless_voucherify_is_saturated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    linger = 0.01
    monkeypatch.setattr(batching, "LINGER_SECONDS", linger)
    sent: list[Batch] = []
    saturated = [True]
    batcher = Batcher(sent.append, lambda: saturated[0])
    batcher.add(_item(b"{}"))
    await asyncio.sleep(linger * 5)
    assert sent == []  # it keeps filling while every slot is taken
    saturated[0] = False
    await asyncio.sleep(linger * 5)
    assert [len(b.items) for b in sent] == [1]


def test_fits_alone() -> None:
    assert fits_alone(b"x" * (MAX_BYTES - ENVELOPE_BYTES))
    assert not fits_alone(b"x" * (MAX_BYTES - ENVELOPE_BYTES + 1))
