"""Freezing a process's start-up heap: garbage is collected first, the rest is left unscanned."""

import gc
import weakref
from collections.abc import Iterator

import pytest

from finq_core.heap import freeze_startup


class Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector frees it


@pytest.fixture
def thawed() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # the test process keeps collecting as before


def test_a_garbage_cycle_is_freed_before_the_freeze_and_live_objects_are_frozen(
    thawed: None,
) -> None:
    garbage = Node()
    dead = weakref.ref(garbage)
    del garbage
    live = [Node() for _ in range(1000)]
    frozen = freeze_startup()
    assert dead() is None  # a frozen cycle would never be freed
    assert frozen == gc.get_freeze_count() and frozen >= len(live)
    tracked = {id(o) for o in gc.get_objects()}
    assert not any(id(node) in tracked for node in live)  # a collection no longer walks them
