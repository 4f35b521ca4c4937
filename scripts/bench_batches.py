"""Batch figures on a local stack of its own (`make bench-batches`): prints medians and ratios
against single tasks measured in the same run.

1. baseline: the bare Celery no-op ceiling (scripts/bench_noop.py, as `make bench` measures
   it: Celery's own producer straight into Redis, workers that only INCR a counter), tasks/s;
2. 10,000 one-year loans as one batch, submit to the last result stored, items/s, and the
   ratio to the ceiling;
3. 100,000 one-year loans: the time to accept the POST, the API's peak resident memory while
   accepting and while streaming the results as CSV (every API process sampled every 20 ms);
4. fairness: while a 20,000-item batch of one user runs, another user's single tasks (one every
   0.5 s): the delay from creation to start, p50 and p95;
5. the CPU-bound bench mix (480 items) as one batch per type, submitted at once, against the
   engine run directly by a pool of as many processes as there are cores (bench/batch_targets);
6. one task pricing a 100,000-option grid, submit to stored and to downloaded, against the
   engine computing the same grid in one process.

`--figures 5,6` runs only those; `--quick` sizes everything down for a trial run.
"""

from finq_core.threads import cap_threads

# Before NumPy loads (the engine's baselines, figures 5 and 6): one BLAS thread per process,
# as in the workers; the pool's processes inherit it.
cap_threads()

import argparse  # noqa: E402
import contextlib  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, fields, replace  # noqa: E402
from pathlib import Path  # noqa: E402

import httpx  # noqa: E402
import psutil  # noqa: E402
from bench.batch import measure_noop  # noqa: E402
from bench.batch_targets import (  # noqa: E402
    measure_grid,
    measure_mix_batches,
    mix_batches,
    report_mix_batches,
)
from bench.calibration import Calibration, calibrate_mix  # noqa: E402
from bench.config import FINAL  # noqa: E402
from bench.cpu import CpuMeter  # noqa: E402
from bench.database import add_database_options, database  # noqa: E402
from bench.rest import at, login, wait  # noqa: E402
from bench.stack import BenchStack  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
LOAN = {"principal": 1000, "annual_rate": 0.05, "years": 1}


def batch(client: httpx.Client, n: int) -> tuple[float, float]:
    """(seconds to accept, items/s from the POST to the last result stored)."""
    items = [{**LOAN, "principal": 1000 + i} for i in range(n)]
    posted, started = time.time(), time.monotonic()
    resp = client.post("/api/v1/batches", json={"type": "loan_amortization", "items": items})
    resp.raise_for_status()
    accepted = time.monotonic() - started
    bid = resp.json()["id"]
    # Polled every 0.5 s, as `finq batch` does (a batch's view counts its items by status);
    # the end is the batch's own finished_at, not when the poll saw it.
    done = wait(
        lambda: (b := client.get(f"/api/v1/batches/{bid}").json())["status"] in FINAL and b,
        every=0.5,
    )
    return accepted, n / (at(done["finished_at"]) - posted)


class RssPeak:
    """The largest resident set of any API process while sampling."""

    def __init__(self, pids: list[int]) -> None:
        self.procs = [psutil.Process(p) for p in pids]
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for proc in self.procs:
                with contextlib.suppress(psutil.Error):
                    self.peak = max(self.peak, proc.memory_info().rss)
            time.sleep(0.02)

    def __enter__(self) -> "RssPeak":
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def api_pids(run_dir: Path) -> list[int]:
    out = subprocess.run(
        [
            str(Path(sys.executable).parent / "supervisorctl"),
            "-c",
            str(run_dir / "supervisor" / "supervisord.conf"),
            "pid",
            "api:api-1",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    root = psutil.Process(int(out))
    return [root.pid, *(c.pid for c in root.children(recursive=True))]


def fairness(admin: httpx.Client, other: httpx.Client, n_batch: int, n_singles: int) -> list[float]:
    items = [{**LOAN, "principal": 1000 + i} for i in range(n_batch)]
    resp = admin.post("/api/v1/batches", json={"type": "loan_amortization", "items": items})
    resp.raise_for_status()
    bid = resp.json()["id"]
    wait(lambda: admin.get(f"/api/v1/batches/{bid}").json()["counts"]["SUCCESS"] > 0)
    delays = []
    for _ in range(n_singles):
        sub = other.post("/api/v1/tasks", json={"type": "loan_amortization", "params": LOAN})
        sub.raise_for_status()
        tid = sub.json()["id"]
        task = wait(
            lambda t=tid: (b := other.get(f"/api/v1/tasks/{t}").json())["status"] in FINAL and b
        )
        delays.append(at(task["started_at"]) - at(task["created_at"]))
        if admin.get(f"/api/v1/batches/{bid}").json()["status"] in FINAL:
            break
        time.sleep(0.5)
    wait(lambda: admin.get(f"/api/v1/batches/{bid}").json()["status"] in FINAL)
    return delays


@dataclass(frozen=True)
class Sizes:
    noop: int  # no-op tasks per ceiling run (1)
    batch: int  # loans in the batch of figure 2
    big: int  # loans in the batch of figure 3
    fair: int  # loans in the batch beside the single tasks (4)
    mix: int  # items of the bench mix (5)
    grid: int  # options in the grid (6)
    repeat: int


FULL = Sizes(noop=2000, batch=10_000, big=100_000, fair=20_000, mix=480, grid=100_000, repeat=3)
QUICK = Sizes(noop=500, batch=1000, big=5000, fair=2000, mix=48, grid=10_000, repeat=1)


def sizes(args: argparse.Namespace) -> Sizes:
    """The sizes given, else the full run's (or the quick run's with --quick)."""
    base = QUICK if args.quick else FULL
    given = {f.name: getattr(args, f.name) for f in fields(Sizes)}
    return replace(base, **{k: v for k, v in given.items() if v is not None})


def ceiling_and_batch(stack: BenchStack, run_dir: Path, admin: httpx.Client, n: Sizes) -> None:
    """Figures 1 and 2 (2 is given as a ratio to 1)."""
    meter = CpuMeter(lambda: [int((run_dir / "supervisor" / "supervisord.pid").read_text())])
    stack.start_noop_workers(stack.max_workers)
    ceilings = [measure_noop(stack, meter, n.noop, 300)[0] for _ in range(n.repeat)]
    stack.stop_noop_workers()
    rates = [batch(admin, n.batch)[1] for _ in range(n.repeat)]
    c, b = statistics.median(ceilings), statistics.median(rates)
    print(f"bare Celery no-op ceiling: {c:.0f} tasks/s (median of {n.repeat})")
    print(f"batch of {n.batch} one-year loans: {b:.0f} items/s (median), {b / c:.2f}x")


def big_batch(run_dir: Path, admin: httpx.Client, n: int) -> None:
    """Figure 3: accepting and streaming a big batch, and the API's memory meanwhile."""
    pids = api_pids(run_dir)
    base_rss = max(psutil.Process(p).memory_info().rss for p in pids)
    with RssPeak(pids) as accept_rss:
        accepted, rate = batch(admin, n)
    bid = admin.get("/api/v1/batches", params={"limit": 1}).json()["items"][0]["id"]
    with RssPeak(pids) as stream_rss:
        started = time.monotonic()
        size = 0
        with admin.stream("GET", f"/api/v1/batches/{bid}/results?format=csv") as resp:
            for chunk in resp.iter_bytes():
                size += len(chunk)
        streamed = time.monotonic() - started
    mb = 1024 * 1024
    print(
        f"{n} items: accepted in {accepted:.1f} s, run at {rate:.0f} items/s; API RSS "
        f"{base_rss / mb:.0f} MB before, peak {accept_rss.peak / mb:.0f} MB accepting, "
        f"{stream_rss.peak / mb:.0f} MB streaming {size / mb:.1f} MB of CSV in {streamed:.1f} s"
    )


def fair_start(stack: BenchStack, admin: httpx.Client, n: int) -> None:
    """Figure 4: another user's single tasks beside a big batch."""
    admin.post("/api/v1/users", json={"username": "bench-other", "password": "x" * 16})
    other = login(stack.base, "bench-other", "x" * 16)
    delays = sorted(fairness(admin, other, n, 40))
    p95 = delays[min(len(delays) - 1, int(0.95 * len(delays)))]
    print(
        f"single task beside a {n:,}-item batch: start delay p50 "
        f"{statistics.median(delays):.2f} s, p95 {p95:.2f} s ({len(delays)} tasks)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--noop", type=int, help="no-op tasks per ceiling run (2000)")
    parser.add_argument("--batch", type=int, help="loans in figure 2's batch (10,000)")
    parser.add_argument("--big", type=int, help="loans in figure 3's batch (100,000)")
    parser.add_argument("--fair", type=int, help="loans in figure 4's batch (20,000)")
    parser.add_argument("--mix", type=int, help="items of the bench mix in figure 5 (480)")
    parser.add_argument("--grid", type=int, help="options of figure 6's grid (100,000)")
    parser.add_argument("--repeat", type=int, help="runs of each figure (3)")
    parser.add_argument(
        "--figures", default="1,2,3,4,5,6", help="the figures to measure (2 measures 1 too)"
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"a trial run's sizes: {QUICK} (unless given)"
    )
    add_database_options(parser)
    args = parser.parse_args()
    figures = {int(f) for f in args.figures.split(",") if f.strip()}
    n = sizes(args)
    calibration = calibrate_mix() if 5 in figures else None  # before the stack loads the host
    run_dir = Path(tempfile.mkdtemp(prefix="finq-bench-batches-"))
    os.environ.update(
        WORKER_CONCURRENCY=str(args.concurrency),
        QUOTA_BATCH_ITEMS="1000000",
        RATE_LIMIT_ENABLED="false",
    )
    measured = False
    try:
        with contextlib.ExitStack() as resources:
            url = resources.enter_context(database(args.database_url, args.postgres))
            stack = BenchStack(run_dir, 1, args.workers, url)
            resources.callback(stack.down)
            stack.up()
            measure(stack, run_dir, figures, calibration, n)
            measured = True
    finally:
        if measured:
            shutil.rmtree(run_dir, ignore_errors=True)
        else:
            print(f"the stack's logs are kept in {run_dir / 'logs'}", file=sys.stderr)
    return 0


def measure(
    stack: BenchStack, run_dir: Path, figures: set[int], calibration: Calibration | None, n: Sizes
) -> None:
    """Every figure asked for, printed."""
    admin = login(stack.base, stack.info["ADMIN_USERNAME"], stack.info["ADMIN_PASSWORD"])
    if figures & {1, 2}:
        ceiling_and_batch(stack, run_dir, admin, n)
    if 3 in figures:
        big_batch(run_dir, admin, n.big)
    if 4 in figures:
        fair_start(stack, admin, n.fair)
    if calibration is not None:
        mix = mix_batches(calibration, n.mix)
        print(report_mix_batches(mix, measure_mix_batches(admin, mix, n.repeat)))
    if 6 in figures:
        print(measure_grid(admin, n.grid, n.repeat))


if __name__ == "__main__":
    raise SystemExit(main())
