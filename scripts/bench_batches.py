"""Batch figures on a local stack of its own (`make bench-batches`): prints medians and ratios
against single tasks measured in the same run.

1. baseline: the bare Celery no-op ceiling (scripts/bench_noop.py, as `make bench` measures
   it: Celery's own producer straight into Redis, workers that only INCR a counter), tasks/s;
2. 10,000 one-year loans as one batch, submit to the last result stored, items/s, and the
   ratio to the ceiling;
3. 100,000 one-year loans: the time to accept the POST, the API's peak resident memory while
   accepting and while streaming the results as CSV (every API process sampled every 20 ms);
4. fairness: while a 20,000-item batch of one user runs, another user's single tasks (one every
   0.5 s): the delay from creation to start, p50 and p95.
"""

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
from bench.batch import measure_noop
from bench.cpu import CpuMeter
from bench.stack import BenchStack

ROOT = Path(__file__).resolve().parent.parent
LOAN = {"principal": 1000, "annual_rate": 0.05, "years": 1}
FINAL = {"SUCCESS", "FAILED", "CANCELLED"}


class Stack(BenchStack):
    """The bench's stack, on `database_url` when given (PostgreSQL) instead of SQLite."""

    def __init__(self, run_dir: Path, workers: int, database_url: str | None) -> None:
        super().__init__(run_dir, 1, workers)
        self.database_url = database_url

    def up(self) -> None:
        if not self.database_url:
            super().up()
            return
        env = {**os.environ, "DATABASE_URL": self.database_url, "RATE_LIMIT_ENABLED": "false"}
        for k in ("REDIS_URL", "HTTP_PORT", "REDIS_PORT", "FLOWER_PORT"):
            env.pop(k, None)
        self._localstack(
            "up", "--free-ports", "--api-replicas", "1", "--worker-replicas",
            str(self.max_workers), "--timeout", "180", env=env,
        )  # fmt: skip
        self.info = json.loads((self.run_dir / "stack.json").read_text())


def login(url: str, user: str, password: str) -> httpx.Client:
    client = httpx.Client(base_url=url, timeout=120)
    token = client.post("/api/v1/auth/token", data={"username": user, "password": password})
    token.raise_for_status()
    client.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
    return client


def wait(probe: Any, timeout: float = 600, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError("timed out")


def at(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--noop", type=int, default=2000, help="no-op tasks per ceiling run")
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--big", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--database-url", help="a PostgreSQL URL (default: SQLite)")
    args = parser.parse_args()
    run_dir = Path(tempfile.mkdtemp(prefix="finq-bench-batches-"))
    os.environ.update(
        WORKER_CONCURRENCY=str(args.concurrency),
        QUOTA_BATCH_ITEMS="1000000",
        RATE_LIMIT_ENABLED="false",
    )
    stack = Stack(run_dir, args.workers, args.database_url)
    stack.up()
    try:
        meter = CpuMeter(lambda: [int((run_dir / "supervisor" / "supervisord.pid").read_text())])
        stack.start_noop_workers(args.workers)
        ceilings = [measure_noop(stack, meter, args.noop, 300)[0] for _ in range(args.repeat)]
        stack.stop_noop_workers()
        admin = login(stack.base, stack.info["ADMIN_USERNAME"], stack.info["ADMIN_PASSWORD"])
        admin.post("/api/v1/users", json={"username": "bench-other", "password": "x" * 16})
        other = login(stack.base, "bench-other", "x" * 16)
        rates = [batch(admin, args.batch)[1] for _ in range(args.repeat)]
        c, b = statistics.median(ceilings), statistics.median(rates)
        print(f"bare Celery no-op ceiling: {c:.0f} tasks/s (median of {args.repeat})")
        print(f"batch of {args.batch} one-year loans: {b:.0f} items/s (median), {b / c:.2f}x")
        pids = api_pids(run_dir)
        base_rss = max(psutil.Process(p).memory_info().rss for p in pids)
        with RssPeak(pids) as accept_rss:
            accepted, rate = batch(admin, args.big)
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
            f"{args.big} items: accepted in {accepted:.1f} s, run at {rate:.0f} items/s; API RSS "
            f"{base_rss / mb:.0f} MB before, peak {accept_rss.peak / mb:.0f} MB accepting, "
            f"{stream_rss.peak / mb:.0f} MB streaming {size / mb:.1f} MB of CSV in {streamed:.1f} s"
        )
        delays = sorted(fairness(admin, other, 20_000, 40))
        p95 = delays[min(len(delays) - 1, int(0.95 * len(delays)))]
        print(
            f"single task beside a 20,000-item batch: start delay p50 "
            f"{statistics.median(delays):.2f} s, p95 {p95:.2f} s ({len(delays)} tasks)"
        )
    finally:
        stack.down()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
