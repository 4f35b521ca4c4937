"""Paths, targets and task bodies every part of the benchmark shares; its log line."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from finq_core.threads import THREAD_CAPS

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"
VENV_BIN = Path(sys.executable).parent
BENCH_DIR = ROOT / ".run" / "bench"
DOC = ROOT / "docs" / "performance.md"
CHART = ROOT / "docs" / "scaling.png"
SECTION = "## Full stack (make bench)"
BEGIN, END = "<!-- make bench: results begin -->", "<!-- make bench: results end -->"
FINAL = ("SUCCESS", "FAILED", "CANCELLED")
LIGHT_TYPE = "loan_amortization"
LIGHT_PARAMS = {"principal": 1000, "annual_rate": 0.05, "years": 1}
LIGHT_BODY = json.dumps({"type": LIGHT_TYPE, "params": LIGHT_PARAMS}).encode()
BLAS_ENV = THREAD_CAPS
TARGETS = {
    "mix_tasks_per_sec": 12.0,
    "efficiency": 0.85,
    "light_ratio": 0.5,
    "offered_rate": 200.0,
}
# Submit p99 (ms) by offered rate (req/s) with the workers busy; GET and readiness alike.
LATENCY_TARGETS = {100.0: 20.0, 200.0: 50.0}


def pool_priority(env: Mapping[str, str]) -> str:
    """The priority a stack with these settings gives its pool processes: "idle" (SCHED_IDLE,
    WORKER_SCHED_IDLE, the default) or "nice N" (WORKER_NICE)."""
    if env.get("WORKER_SCHED_IDLE", "true").lower() not in ("0", "false", "no"):
        return "idle"
    return f"nice {env.get('WORKER_NICE', '10')}"


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def cores() -> int:
    return len(os.sched_getaffinity(0))
