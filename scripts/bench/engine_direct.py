"""The engine run directly, without the stack: the baselines of the batch figures 5 and 6.

What a worker process runs for a calculation, `TaskType.execute` (validation, calculation,
the result as plain lists), nothing else. The processes are started with one BLAS thread each
(the caller caps threads before they start, as deploy/finq-service does for the workers)."""

from __future__ import annotations

import multiprocessing
import statistics
import time
from typing import Any

Item = tuple[str, dict[str, Any]]  # (task type, params)


def result_of(item: Item, keep_arrays: bool = False) -> dict[str, Any]:
    """Run one item (imported here: the caller caps threads first): its result as lists, or
    with its float arrays kept for the encoder, as the worker runs a single task."""
    from finq_engine import NullContext, get_task_type

    task_type = get_task_type(item[0])
    if task_type is None:
        raise ValueError(f"unknown task type {item[0]!r}")
    return task_type.execute(item[1], NullContext(), keep_arrays=keep_arrays)


def execute(item: Item) -> None:
    """One item run in a pool process; its result is dropped there, not sent back."""
    result_of(item)


def _ready(_: int) -> None:
    import finq_engine  # noqa: F401  (loaded before the clock starts, as in a worker)


def pool_wall(items: list[Item], processes: int) -> float:
    """Seconds for a pool of `processes` to run every item, one at a time each (chunksize 1,
    so no process idles while another holds a queue of items); the pool's start and imports
    are not counted."""
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        pool.map(_ready, range(processes), chunksize=1)
        started = time.perf_counter()
        for _ in pool.imap_unordered(execute, items, chunksize=1):
            pass
        return time.perf_counter() - started


def in_process_seconds(item: Item, repeats: int, keep_arrays: bool = False) -> float:
    """Median wall seconds of running `item` in this process, after one warm-up run."""
    result_of(item, keep_arrays)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        result_of(item, keep_arrays)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def encoded_result(item: Item) -> tuple[int, float]:
    """(bytes, seconds) of the item's result encoded as the worker encodes a single task's
    result to store it (its float arrays written straight from NumPy)."""
    from finq_core.db import encode_json

    result = result_of(item, keep_arrays=True)
    started = time.perf_counter()
    size = len(encode_json(result).data)
    return size, time.perf_counter() - started
