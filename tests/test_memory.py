"""The garbage collector's pace during a run: calmer inside, as it was after."""

from __future__ import annotations

import gc
import weakref

import pytest

from migrator.memory import YOUNG_COLLECTION_EVERY, calm_gc


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def test_calm_gc_freezes_what_exists_and_restores_the_collector() -> None:
    before = gc.get_threshold()
    with calm_gc():
        assert gc.get_threshold()[0] == YOUNG_COLLECTION_EVERY
        assert gc.get_freeze_count() > 0  # what existed at the start is never scanned
        assert gc.isenabled()
        a, b = Node(), Node()
        a.other, b.other = b, a  # a cycle made during the run...
        gone = weakref.ref(a)
        del a, b
        gc.collect()
        assert gone() is None  # ...is still collected: memory stays flat
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_calm_gc_restores_the_collector_when_the_run_raises() -> None:
    before = gc.get_threshold()
    with pytest.raises(RuntimeError), calm_gc():
        raise RuntimeError("stopped")
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
