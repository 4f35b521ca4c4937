"""Figures 5 and 6 of `make bench-batches`: the stack against the engine run directly.

5. The CPU-bound bench mix as batches: a batch holds one task type, so the mix's items go as
   one batch per type, in the mix's proportions, all submitted back to back; items/s from the
   first POST to the last batch's `finished_at`, over items/s of the same items run by the
   engine in a pool of `os.cpu_count()` processes.
6. One task pricing a grid of options (black_scholes in its grid form: a list of spots and a
   list of strikes, every pair priced): submit to SUCCESS (`finished_at`) and to its result
   downloaded, over the engine computing the same grid in one process.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import httpx

from .batch import mix_counts
from .calibration import Calibration
from .config import FINAL, cores, log
from .engine_direct import Item, encoded_result, in_process_seconds, pool_wall
from .rest import at, wait

JSON_HEADERS = {"Content-Type": "application/json"}
GRID_STRIKES = 500  # strikes per spot: a grid of n options has n / 500 spots


def med(values: Iterable[float]) -> float:
    return float(statistics.median(values))


@dataclass(frozen=True)
class MixBatches:
    """The mix's items, grouped one batch per type, and the same items for the pool."""

    bodies: list[tuple[str, int, bytes]]  # (type, items, POST body)
    items: list[Item]  # the same items, shuffled, for the engine's pool
    alone_s: float  # the sum of their CPU times measured alone on one core

    @property
    def n(self) -> int:
        return len(self.items)


def mix_batches(cal: Calibration, n: int, seed: int = 7) -> MixBatches:
    bodies, items, alone_ms = [], [], 0.0
    for row, count in mix_counts(cal.rows, n):
        if count == 0:
            continue
        body = json.dumps({"type": row["type"], "items": [row["params"]] * count}).encode()
        bodies.append((row["type"], count, body))
        items += [(row["type"], row["params"])] * count
        alone_ms += row["cpu_ms"] * count
    random.Random(seed).shuffle(items)
    return MixBatches(bodies, items, alone_ms / 1000.0)


@dataclass(frozen=True)
class MixRun:
    stack_s: float  # first POST .. the last batch's finished_at
    pool_s: float  # the engine's pool, first item .. last
    statuses: dict[str, int]


def run_mix_batches(
    client: httpx.Client, mix: MixBatches
) -> tuple[dict[str, tuple[float, int]], dict[str, int]]:
    """Every batch of `mix` posted back to back, then followed (every 0.5 s, as `finq batch`
    does) to its end: (type -> (seconds from the first POST to its batch's `finished_at`, the
    batch's chunk size), items by status). The batches are deleted afterwards, so that
    repeats start alike."""
    posted = time.time()
    ids = []
    for _, _, body in mix.bodies:
        resp = client.post("/api/v1/batches", content=body, headers=JSON_HEADERS)
        resp.raise_for_status()
        ids.append(resp.json()["id"])
    ended: dict[str, dict[str, Any]] = {}

    def all_ended() -> bool:
        for bid in ids:
            if bid not in ended:
                view = client.get(f"/api/v1/batches/{bid}").json()
                if view["status"] in FINAL:
                    ended[bid] = view
        return len(ended) == len(ids)

    wait(all_ended, timeout=1800, every=0.5)
    ends = {v["type"]: (at(v["finished_at"]) - posted, v["chunk_size"]) for v in ended.values()}
    statuses: dict[str, int] = {}
    for view in ended.values():
        for status, k in view["counts"].items():
            statuses[status] = statuses.get(status, 0) + k
    for bid in ids:
        client.delete(f"/api/v1/batches/{bid}").raise_for_status()
    return ends, {s: k for s, k in statuses.items() if k}


def measure_mix_batches(client: httpx.Client, mix: MixBatches, repeat: int) -> list[MixRun]:
    processes = os.cpu_count() or 1
    runs = []
    for i in range(repeat):
        ends, statuses = run_mix_batches(client, mix)
        stack_s = max(end for end, _ in ends.values())
        pool_s = pool_wall(mix.items, processes)
        runs.append(MixRun(stack_s, pool_s, statuses))
        log(
            f"(5) run {i + 1}: stack {mix.n / stack_s:.2f} items/s {statuses}, engine pool of "
            f"{processes} {mix.n / pool_s:.2f} items/s: {pool_s / stack_s:.2f}x"
        )
        # Which batches end last, with their chunk sizes: a chunk's items run one after the
        # other in one process, so a batch of few big chunks may leave cores idle at the end.
        log(
            "(5)   batches ended at "
            + ", ".join(
                f"{t} {e:.1f} s (chunks of {c})"
                for t, (e, c) in sorted(ends.items(), key=lambda kv: kv[1][0])
            )
        )
    return runs


def report_mix_batches(mix: MixBatches, runs: list[MixRun]) -> str:
    stack = med(mix.n / r.stack_s for r in runs)
    pool = med(mix.n / r.pool_s for r in runs)
    ratios = [r.pool_s / r.stack_s for r in runs]
    eff = med(mix.alone_s / (r.stack_s * cores()) for r in runs)
    pool_eff = med(mix.alone_s / (r.pool_s * cores()) for r in runs)
    not_ok = sum(k for r in runs for s, k in r.statuses.items() if s != "SUCCESS")
    return (
        f"CPU-bound mix, {mix.n} items as {len(mix.bodies)} batches (one per type, the mix's "
        f"proportions, submitted at once): {stack:.2f} items/s through the stack, "
        f"{pool:.2f} items/s for the engine in a pool of {os.cpu_count()} processes: "
        f"**{med(ratios):.2f}x** (runs {', '.join(f'{x:.2f}' for x in ratios)}; "
        f"target 0.85); efficiency sum(CPU alone) / (wall x cores) {eff:.2f} (the pool "
        f"{pool_eff:.2f}); {not_ok} items not SUCCESS"
    )


def grid_params(n: int) -> dict[str, Any]:
    """Calls priced on a grid of n / GRID_STRIKES spots x GRID_STRIKES strikes (at least one
    spot), sent in the grid form: the two lists, which the engine expands to every pair."""

    def ladder(k: int) -> list[float]:
        return [round(50 + 100 * i / max(1, k - 1), 4) for i in range(k)]

    return {
        "grid": True,
        "spot": ladder(max(1, n // GRID_STRIKES)),
        "strike": ladder(GRID_STRIKES),
        "maturity": 0.5,
        "rate": 0.03,
        "volatility": 0.22,
        "dividend_yield": 0.01,
        "option_type": "call",
    }


@dataclass(frozen=True)
class GridRun:
    accepted: float  # POST sent .. its answer
    started: float  # POST sent .. started_at
    stored: float  # POST sent .. finished_at
    downloaded: float  # POST sent .. the whole JSON result read
    json_bytes: int
    json_s: float  # the JSON result's GET alone
    csv_bytes: int
    csv_s: float  # the result's GET as CSV alone


def download(client: httpx.Client, path: str) -> tuple[int, float]:
    """(bytes, seconds) of reading a whole response."""
    started, size = time.perf_counter(), 0
    with client.stream("GET", path) as resp:
        resp.raise_for_status()
        for chunk in resp.iter_raw():
            size += len(chunk)
    return size, time.perf_counter() - started


def run_grid(client: httpx.Client, body: bytes) -> GridRun:
    """One grid task submitted, polled every 20 ms with the lean view (`include=`), its result
    downloaded as JSON then as CSV; deleted afterwards."""
    posted = time.time()
    resp = client.post("/api/v1/tasks", content=body, headers=JSON_HEADERS)
    resp.raise_for_status()
    accepted = time.time() - posted
    tid = resp.json()["id"]
    view = wait(
        lambda: (
            (v := client.get(f"/api/v1/tasks/{tid}", params={"include": ""}).json())["status"]
            in FINAL
            and v
        ),
        timeout=600,
        every=0.02,
    )
    if view["status"] != "SUCCESS":
        raise RuntimeError(f"the grid task ended {view['status']}: {view.get('error')}")
    json_bytes, json_s = download(client, f"/api/v1/tasks/{tid}/result")
    downloaded = time.time() - posted
    csv_bytes, csv_s = download(client, f"/api/v1/tasks/{tid}/result?format=csv")
    client.delete(f"/api/v1/tasks/{tid}").raise_for_status()
    return GridRun(
        accepted,
        at(view["started_at"]) - posted,
        at(view["finished_at"]) - posted,
        downloaded,
        json_bytes,
        json_s,
        csv_bytes,
        csv_s,
    )


def measure_grid(client: httpx.Client, n: int, repeat: int) -> str:
    """Figure 6: the stack's runs, then the engine's in this process; the report's line."""
    params = grid_params(n)
    spots, strikes = len(params["spot"]), len(params["strike"])
    n = spots * strikes
    body = json.dumps({"type": "black_scholes", "params": params}).encode()
    runs = []
    for i in range(repeat):
        runs.append(run_grid(client, body))
        r = runs[-1]
        log(
            f"(6) run {i + 1}: accepted {r.accepted:.3f} s, started {r.started:.3f} s, stored "
            f"{r.stored:.3f} s, downloaded {r.downloaded:.3f} s (JSON GET {r.json_s:.3f} s, "
            f"CSV GET {r.csv_s:.3f} s)"
        )
    item = ("black_scholes", params)
    engine = in_process_seconds(item, max(3, repeat))
    computed = in_process_seconds(item, max(3, repeat), keep_arrays=True)
    size, encode_s = encoded_result(item)
    stored, downloaded = med(r.stored for r in runs), med(r.downloaded for r in runs)
    csv_total = med(r.stored + r.csv_s for r in runs)
    mb = 1024 * 1024
    return (
        f"{n:,} options (black_scholes, a grid of {spots} spots x {strikes} strikes, "
        f"{len(body) / 1024:.1f} KB of params) as one task, medians of {repeat}: accepted in "
        f"{med(r.accepted for r in runs):.3f} s, started at {med(r.started for r in runs):.3f} "
        f"s, stored at {stored:.3f} s, the JSON result ({med(r.json_bytes for r in runs) / mb:.1f}"
        f" MB) downloaded at {downloaded:.3f} s, as CSV ({med(r.csv_bytes for r in runs) / mb:.1f}"
        f" MB) in {med(r.csv_s for r in runs):.3f} s more; the engine in one process "
        f"{engine:.3f} s (median of {max(3, repeat)}; its result as lists, as `execute` gives "
        f"it; {computed:.3f} s leaving the arrays to the encoder, as the worker does, and "
        f"encoding them takes {encode_s:.3f} s more, {size / mb:.1f} MB): "
        f"**{engine / stored:.2f}x** to "
        f"stored, **{engine / downloaded:.2f}x** to downloaded, {engine / csv_total:.2f}x to "
        f"stored + CSV (target 0.7); the worker's own path (arrays left, then encoded) "
        f"{(computed + encode_s) / stored:.2f}x to stored"
    )
