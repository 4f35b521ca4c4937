"""CPU per task of the mix, measured alone on one core and side by side on every core."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from .config import BLAS_ENV, ROOT, log


def calibrate_command(scale: str, cpu: int | None) -> list[str]:
    """loadtest/calibrate.py sizing the mix by `scale`, as JSON, without charts (they are
    drawn only when someone asks), pinned to `cpu` when given."""
    cmd = [
        sys.executable,
        str(ROOT / "loadtest" / "calibrate.py"),
        "--json",
        "--no-charts",
        "--scale",
        scale,
    ]
    return cmd if cpu is None else [*cmd, "--cpu", str(cpu)]


def calibrate(cpu: int | None = None, scale: str = "1") -> dict[str, Any]:
    """CPU per task of the mix, sized by `scale` (MIX_SCALE, as the load test sizes it)."""
    out = subprocess.run(
        calibrate_command(scale, cpu),
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **BLAS_ENV},
        cwd=ROOT,
    ).stdout
    result: dict[str, Any] = json.loads(out)
    return result


def calibrate_parallel(scale: str) -> list[dict[str, Any]]:
    """One calibration per core at the same time: what running side by side costs the
    calculations themselves (shared caches, memory bandwidth, frequency)."""
    procs = [
        subprocess.Popen(
            calibrate_command(scale, c),
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, **BLAS_ENV},
            cwd=ROOT,
        )
        for c in sorted(os.sched_getaffinity(0))
    ]
    return [json.loads(p.communicate()[0]) for p in procs]


@dataclass(frozen=True)
class Calibration:
    """The mix as this run measured it: each row alone on one core, and side by side."""

    cal: dict[str, Any]  # calibrate.py's output for one core
    par_means: list[float]  # the weighted mean of each core's run, all cores at once

    @property
    def rows(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.cal["rows"]
        return rows

    @property
    def mean_ms(self) -> float:
        return float(self.cal["mean_cpu_ms"])

    @property
    def side_by_side(self) -> float:
        """Cost of running alone / running on every core at once (<1: slower together)."""
        return self.mean_ms / statistics.mean(self.par_means)


def calibrate_mix() -> Calibration:
    """The mix sized for this machine as `make loadtest` sizes it (MIX_SCALE, default auto),
    then timed again at exactly those sizes side by side; logs each row."""
    log("calibrating the mix on one core, then on every core at once")
    cal = calibrate(min(os.sched_getaffinity(0)), os.environ.get("MIX_SCALE") or "auto")
    par = calibrate_parallel(cal["scale"] or "1")
    result = Calibration(cal, [float(p["mean_cpu_ms"]) for p in par])
    for r in result.rows:
        log(
            f"  {r['type']:<20} weight {r['weight']:>3}  "
            + (f"{r['cpu_ms']:8.2f} ms" if r["cpu_ms"] is not None else f"  {r.get('error')}")
        )
    log(
        f"  weighted mean {result.mean_ms:.1f} ms alone; {statistics.mean(result.par_means):.1f} "
        f"ms with every core busy (x{1 / result.side_by_side:.2f})"
    )
    return result
