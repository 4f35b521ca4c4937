"""A batch of tasks submitted over HTTP and run to the end; the no-op ceiling; the mix's bodies."""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .client import submit_closed
from .cpu import CpuMeter, CpuUse
from .stack import BenchStack, count, noop_module


@dataclass
class Batch:
    """One batch of tasks submitted over HTTP and run to the end."""

    n: int
    accepted: int
    errors: dict[int, int]
    wall: float
    statuses: dict[str, int]
    cpu: CpuUse
    latencies_ms: list[float] = field(repr=False, default_factory=list)
    by_type: dict[str, int] = field(default_factory=dict)
    drained: float = math.inf  # first submit .. no message left (deferred work included)
    # (type, started_at, finished_at) of every task that succeeded, epoch seconds.
    spans: list[tuple[str, float, float]] = field(repr=False, default_factory=list)

    @property
    def rate(self) -> float:
        return self.statuses.get("SUCCESS", 0) / self.wall if self.wall > 0 else 0.0

    @property
    def drained_rate(self) -> float:
        return self.statuses.get("SUCCESS", 0) / self.drained if self.drained > 0 else 0.0

    @property
    def failed(self) -> int:
        return sum(v for k, v in self.statuses.items() if k != "SUCCESS")

    @property
    def lost(self) -> int:
        return self.accepted - sum(self.statuses.values())


def run_batch(
    stack: BenchStack,
    meter: CpuMeter,
    token: str,
    bodies: list[bytes],
    concurrency: int,
    timeout: float,
) -> Batch:
    stack.wait_idle()
    mark = stack.watermark()
    with meter.measure() as m:
        started, statuses = asyncio.run(submit_closed(stack.port, token, bodies, concurrency))
        accepted = statuses.get(202, 0)
        stack.wait_done(mark, accepted, timeout)
        drained = stack.wait_drained(timeout)  # CPU counted until the follow-up work is done
    rows = stack.rows(mark)
    finished = [r["finished"] for r in rows if r["finished"] is not None]
    wall = (max(finished) - started) if finished else math.inf
    return Batch(
        n=len(bodies),
        accepted=accepted,
        errors={k: v for k, v in statuses.items() if k != 202},
        wall=wall,
        statuses=dict(Counter(r["status"] for r in rows)),
        cpu=m["cpu"],
        latencies_ms=[(r["finished"] - r["created"]) * 1000 for r in rows if r["finished"]],
        by_type=dict(Counter(r["type"] for r in rows)),
        drained=drained - started,
        spans=[
            (r["type"], r["started"], r["finished"])
            for r in rows
            if r["status"] == "SUCCESS" and r["started"] and r["finished"]
        ],
    )


def measure_noop(
    stack: BenchStack, meter: CpuMeter, n: int, timeout: float
) -> tuple[float, CpuUse]:
    """Send n no-op tasks through Celery's own producer, wait for n INCRs."""
    bench_noop = noop_module(stack.noop_broker)
    app = bench_noop.make_app(stack.noop_broker)
    counter = stack.redis(1)
    counter.delete(bench_noop.COUNTER_KEY)
    with meter.measure() as m:
        t0 = time.perf_counter()
        with app.producer_or_acquire() as producer:
            for _ in range(n):
                app.send_task(bench_noop.NOOP_TASK, queue="normal", producer=producer)
        deadline = time.monotonic() + timeout
        while count(counter.get(bench_noop.COUNTER_KEY) or 0) < n:
            if time.monotonic() > deadline:
                raise RuntimeError("no-op tasks did not finish")
            time.sleep(0.01)
        wall = time.perf_counter() - t0
    app.close()
    return n / wall, m["cpu"]


def mix_counts(rows: list[dict[str, Any]], n: int) -> list[tuple[dict[str, Any], int]]:
    """How many of n submissions each calibrated row gets: the mix's proportions, rounded by
    largest remainder (rows without a CPU time left out)."""
    usable = [r for r in rows if r["cpu_ms"] is not None]
    total_w = sum(r["weight"] for r in usable)
    exact = [n * r["weight"] / total_w for r in usable]
    counts = [math.floor(x) for x in exact]
    for i in sorted(range(len(usable)), key=lambda i: counts[i] - exact[i])[: n - sum(counts)]:
        counts[i] += 1
    return list(zip(usable, counts, strict=True))


def mix_bodies(rows: list[dict[str, Any]], n: int, seed: int = 7) -> tuple[list[bytes], float]:
    """n submissions in the mix's proportions (largest remainder), shuffled; and the sum of
    their CPU times measured alone (seconds)."""
    chosen = [r for r, c in mix_counts(rows, n) for _ in range(c)]
    random.Random(seed).shuffle(chosen)
    bodies = [json.dumps({"type": r["type"], "params": r["params"]}).encode() for r in chosen]
    return bodies, sum(r["cpu_ms"] for r in chosen) / 1000.0
