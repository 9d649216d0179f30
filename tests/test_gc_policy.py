"""The camera loop's garbage collection: between frames, never inside one, and no less often
than the interpreter would collect."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from common.gc_policy import collect_between_frames, collect_due


@pytest.fixture(autouse=True)
def interpreter_thresholds() -> Iterator[None]:
    """The interpreter's default thresholds (an ingest test in this process may have raised
    them, as the ingest worker does)."""
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield
    gc.set_threshold(*before)


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


def test_collections_wait_for_collect_due_and_then_free_cycles() -> None:
    assert gc.isenabled()
    assert collect_due() is None  # automatic collection on: nothing to do
    with collect_between_frames():
        assert not gc.isenabled()
        assert collect_due() == 2  # the first call: start-up is over, collect and freeze
        assert gc.get_freeze_count() > 0
        garbage = _Node()
        gone = weakref.ref(garbage)
        del garbage
        kept = [_Node() for _ in range(5 * gc.get_threshold()[0])]  # far past a threshold
        assert gone() is not None  # nothing collected it while allocating
        generations = []
        for _ in range(50):  # frames: allocate, then collect what is due
            kept += [_Node() for _ in range(gc.get_threshold()[0] // 2)]
            generation = collect_due()
            if generation is not None:
                generations.append(generation)
        assert gone() is None
        assert 0 in generations and 1 in generations  # young ones often, the middle one too
        assert all(n.me is n for n in kept)  # live objects are never freed
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_nothing_is_due_below_the_threshold() -> None:
    with collect_between_frames():
        collect_due()  # the start-up collection
        gc.collect(0)
        assert collect_due() is None
