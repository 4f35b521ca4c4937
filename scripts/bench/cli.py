"""`make bench`: calibrate, start a fresh stack, measure, always stop it, then report."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from .calibration import calibrate_mix
from .client import login
from .config import BENCH_DIR, log
from .cpu import CpuMeter
from .database import database
from .options import Options, parse_options
from .phases import Results, Run, measure_all
from .profiling import find_py_spy
from .report import build_report, publish
from .stack import BenchStack
from .versions import versions


def log_versions(ver: dict[str, str], load0: tuple[float, float, float]) -> None:
    log(
        f"{ver['cpu']}; Python {ver['python']}, celery {ver['celery']}, kombu {ver['kombu']}, "
        f"redis {ver['redis-server']}, nginx {ver['nginx']}, FastAPI {ver['fastapi']}, "
        f"uvicorn {ver['uvicorn']}, gunicorn {ver['gunicorn']}, NumPy {ver['numpy']}, "
        f"SQLite {ver['sqlite']}; load average {load0[0]:.1f}"
    )


def start(stack: BenchStack, opts: Options) -> str:
    """Bring the fresh stack up with `opts.workers` worker replicas; the admin's token."""
    log(
        f"starting a fresh stack: {opts.api_replicas} API replicas x "
        f"{os.environ.get('GUNICORN_WORKERS', '1')} gunicorn workers, {opts.max_workers} worker "
        f"replicas x {os.environ.get('WORKER_CONCURRENCY', '4')} processes"
    )
    stack.up()
    stack.set_workers(opts.workers)
    token = login(stack.base, stack.info["ADMIN_USERNAME"], stack.info["ADMIN_PASSWORD"])
    db = "SQLite" if stack.info["DATABASE_URL"].startswith("sqlite") else "PostgreSQL"
    log(f"stack up on {stack.base} ({db}) in {stack.info.get('STARTUP_SECONDS', '?')} s")
    return token


def on_term(signum: int, _frame: Any) -> None:
    """SIGTERM unwinds like Ctrl-C, so that the stack is stopped."""
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    opts = parse_options(argv)
    started = time.monotonic()
    ver = versions()
    load0 = os.getloadavg()
    log_versions(ver, load0)
    cal = calibrate_mix()

    py_spy = None if opts.no_profile else find_py_spy()
    profiles: dict[str, dict[str, Any]] = {}
    signal.signal(signal.SIGTERM, on_term)
    with database(opts.database_url, opts.postgres) as url:
        stack = BenchStack(BENCH_DIR / "stack", opts.api_replicas, opts.max_workers, url)
        meter = CpuMeter(stack.roots)
        try:
            token = start(stack, opts)
            run = Run(opts, stack, meter, token, py_spy, profiles)
            results: Results = measure_all(run, cal)
        finally:
            log("stopping the stack")
            stack.down()

    publish(opts, build_report(opts, ver, load0, started, cal, results, profiles), cal, results)
    return 0
