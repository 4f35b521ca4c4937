"""The five measurements, each a named step over one running stack (see the package doc)."""

from __future__ import annotations

import asyncio
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .batch import Batch, measure_noop, mix_bodies, run_batch
from .calibration import Calibration
from .client import auth_headers
from .config import LIGHT_BODY, cores, log
from .cpu import CpuMeter, CpuUse
from .latency import Step, measure_latency, prober
from .openloop import Stream, run_open_loop
from .options import Options
from .profiling import profile_batch, profile_during
from .stack import BenchStack
from .steady import steady_efficiency


@dataclass
class Run:
    """What every phase uses: the stack, its CPU meter, a token, and the profiles so far."""

    opts: Options
    stack: BenchStack
    meter: CpuMeter
    token: str
    py_spy: str | None
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class MixRuns:
    """Figure 3: the batches of the CPU-bound mix and what they were made of."""

    n: int
    alone_s: float  # sum of the batch's CPU times measured alone
    batches: list[Batch]
    steadies: list[float]  # steady-state efficiency of the runs that have one


@dataclass
class Results:
    noop_rates: list[float]
    noop_cpu: list[CpuUse]
    light: list[Batch]
    mix: MixRuns
    scaling: list[tuple[int, Batch]]
    scaling_alone_s: dict[int, float]
    latency: list[Step]


def fmt_eff(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def measure_all(run: Run, cal: Calibration) -> Results:
    """Figures 1, 2, 3 and 5, then 4 (its steps leave queued work behind); only 4 with
    --latency-only."""
    if run.opts.latency_only:
        return Results([], [], [], MixRuns(0, 0.0, [], []), [], {}, measure_latency(run, cal))
    noop_rates, noop_cpu = measure_ceiling(run)
    light = measure_light(run)
    mix = measure_mix(run, cal)
    scaling: list[tuple[int, Batch]] = []
    scaling_alone_s: dict[int, float] = {}
    if not run.opts.skip_scaling:
        scaling, scaling_alone_s = measure_scaling(run, cal, mix.n)
    latency = measure_latency(run, cal)
    return Results(noop_rates, noop_cpu, light, mix, scaling, scaling_alone_s, latency)


def measure_ceiling(run: Run) -> tuple[list[float], list[CpuUse]]:
    """(1) the bare Celery ceiling: no-op tasks straight into Redis."""
    run.stack.start_noop_workers(run.opts.workers)
    noop_rates, noop_cpu = [], []
    for i in range(run.opts.repeats):
        rate, cpu = measure_noop(run.stack, run.meter, run.opts.n_noop, timeout=300)
        noop_rates.append(rate)
        noop_cpu.append(cpu)
        log(f"(1) no-op Celery run {i + 1}: {rate:.0f} tasks/s  [{cpu.shares()}]")
    run.stack.stop_noop_workers()
    return noop_rates, noop_cpu


def measure_light(run: Run) -> list[Batch]:
    """(2) light tasks through the whole stack, in batches sized on what a probe sustains."""
    stack, meter, token, opts = run.stack, run.meter, run.token, run.opts
    probe = run_batch(stack, meter, token, [LIGHT_BODY] * 40, opts.concurrency, 300)
    # Sized on what the stack sustains, follow-up work included.
    n_light = int(min(3000, max(60, probe.drained_rate * opts.target_s)))
    log(
        f"(2) probe: {probe.rate:.0f} tasks/s ({probe.drained_rate:.0f}/s until every "
        f"queue drained); batches of {n_light}"
    )
    light: list[Batch] = []
    for i in range(opts.repeats):
        b = run_batch(stack, meter, token, [LIGHT_BODY] * n_light, opts.concurrency, 300)
        light.append(b)
        log(
            f"(2) light run {i + 1}: {b.rate:.0f} tasks/s ({b.drained_rate:.0f}/s until "
            f"every queue drained), {b.failed} failed, {b.lost} "
            f"lost, errors {b.errors}  [{b.cpu.shares()}]"
        )
    if run.py_spy:
        profile_extra_batch(run, run.py_spy, [LIGHT_BODY] * n_light, "light")
    return light


def measure_mix(run: Run, cal: Calibration) -> MixRuns:
    """(3) the CPU-bound mix, sized on what a worker spends per task."""
    stack, opts = run.stack, run.opts
    per_task_s = cal.mean_ms / 1000.0
    alone_by_type = {r["type"]: r["cpu_ms"] / 1000.0 for r in cal.rows if r["cpu_ms"] is not None}
    slots = opts.workers * int(os.environ.get("WORKER_CONCURRENCY", "4"))
    n_mix = max(20, round(opts.target_s * cores() / per_task_s * 0.8))
    bodies, alone_s = mix_bodies(cal.rows, n_mix)
    mix: list[Batch] = []
    steadies: list[float] = []
    for i in range(opts.repeats):
        b = run_batch(stack, run.meter, run.token, bodies, opts.concurrency, 600)
        mix.append(b)
        steady = steady_efficiency(b.spans, alone_by_type, slots, cores())
        if steady is not None:
            steadies.append(steady)
        log(
            f"(3) mix run {i + 1}: {n_mix} tasks, {b.rate:.2f} tasks/s ({b.drained_rate:.2f}/s "
            f"until every queue drained), efficiency "
            f"{alone_s / (b.wall * cores()):.2f} (steady state {fmt_eff(steady)}), "
            f"{b.failed} failed, {b.lost} lost  [{b.cpu.shares()}]"
        )
    if run.py_spy:
        profile_extra_batch(run, run.py_spy, bodies, "mix")
    return MixRuns(n_mix, alone_s, mix, steadies)


def measure_scaling(
    run: Run, cal: Calibration, n_mix: int
) -> tuple[list[tuple[int, Batch]], dict[int, float]]:
    """(5) the mix with 1..max_workers worker replicas; and each batch's CPU alone."""
    scaling: list[tuple[int, Batch]] = []
    alone: dict[int, float] = {}
    for k in range(1, run.opts.max_workers + 1):
        run.stack.set_workers(k)
        n_scale = max(20, round(n_mix * (0.75 if not run.opts.quick else 1.0)))
        sbodies, s_alone = mix_bodies(cal.rows, n_scale, seed=100 + k)
        b = run_batch(run.stack, run.meter, run.token, sbodies, run.opts.concurrency, 600)
        scaling.append((k, b))
        log(
            f"(5) {k} worker replica(s): {b.rate:.2f} tasks/s, efficiency "
            f"{s_alone / (b.wall * cores()):.2f}, {b.failed} failed, {b.lost} lost  "
            f"[{b.cpu.shares()}]"
        )
        alone[k] = s_alone
    return scaling, alone


def profile_submits(run: Run, py_spy: str) -> None:
    """The API is only busy here: profile it at a rate it sustains (not counted)."""
    rate = run.opts.rate / 4
    token, _ = prober(run.stack.base, run.stack.port, run.token)
    with tempfile.TemporaryDirectory() as tmp:
        run.profiles.update(
            profile_during(
                run.stack,
                lambda: asyncio.run(
                    run_open_loop(
                        run.stack.port,
                        auth_headers(token),
                        [Stream("submit", "POST", "/api/v1/tasks", rate, LIGHT_BODY, ok=202)],
                        8.0,
                        0.0,
                        10.0,
                    )
                ),
                ("api",),
                py_spy,
                Path(tmp),
                f"submits at {rate:.0f} req/s",
            )
        )


def profile_extra_batch(run: Run, py_spy: str, bodies: list[bytes], label: str) -> None:
    """One more batch of `bodies` (not counted) while the hottest worker process is profiled."""
    with tempfile.TemporaryDirectory() as tmp:
        run.profiles.update(
            profile_batch(
                run.stack, run.token, bodies, run.opts.concurrency, py_spy, Path(tmp), label
            )
        )
