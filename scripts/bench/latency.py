"""Figure 4: how fast the front door answers, open loop, with the workers busy and stopped.

Light submits at a fixed offered rate, and beside them GETs of one task and readiness probes at
a tenth of it, each latency counted from its scheduled time. Workers busy: a backlog of
CPU-bound tasks on the `high` queue (topped up before every step, so that every pool process
has work throughout; the light submits wait on `normal` behind it) and the pool run at nice 0
(the baseline), at the stack's WORKER_NICE and, when the stack sets WORKER_SCHED_IDLE, under
SCHED_IDLE, in rotation, so that their ratios compare moments of the same run. Then the
workers stopped: the submit path alone.

Each step's probes come from an account of its own. A submit counts its caller's queued tasks
(the quota, up to the bench's QUOTA_QUEUED_TASKS of a million), and the light submits of earlier
steps stay queued behind the backlog: sent from one account, they made every later step dearer
(50,000 queued: 11 ms a count, against 0.4 ms for 200).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import statistics
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .batch import mix_bodies
from .calibration import Calibration
from .client import auth_headers, create_account, login, submit_closed, submit_one
from .config import LATENCY_TARGETS, LIGHT_BODY, cores, log
from .cpu import CpuUse
from .openloop import Outcome, Stream, run_open_loop

if TYPE_CHECKING:
    from .phases import Run

HEAVY_MS = 50.0  # rows of the mix at least this costly make the busy backlog
TIMEOUT_S = 5.0  # an answer later than this counts as unanswered
WARMUP_S = 1.0  # sent but not counted at the start of every step
STREAMS = ("submit", "get", "ready")
BASELINE = "nice 0"  # the pool's priority the others are compared with
LABELS = {"submit": "POST /api/v1/tasks", "get": "GET /api/v1/tasks/{id}", "ready": "/health/ready"}


@dataclass(frozen=True)
class Step:
    """One open-loop run: which workers, at what priority, what offered rate, what it saw."""

    workers: str  # "busy" or "stopped"
    pool: str | None  # the pool's priority: "nice N" or "idle" (None: stopped)
    rate: float  # submits/s offered
    outcome: Outcome
    load1: float  # 1-minute load average when the step began
    cpu: CpuUse
    backlog_left: int | None  # busy: CPU-bound tasks still queued at the end (> 0: busy throughout)
    seconds: float  # counted, after a second of warm-up

    @property
    def key(self) -> tuple[str, str | None, float]:
        return (self.workers, self.pool, self.rate)

    @property
    def api_ms(self) -> float:
        """The API processes' CPU per request sent (every stream, warm-up included)."""
        sent = (
            sum(d.n for d in self.outcome.summaries.values())
            * (WARMUP_S + self.seconds)
            / self.seconds
        )
        return self.cpu.by_group.get("api", 0.0) * 1000.0 / max(1.0, sent)


def streams(rate: float, task_id: str) -> list[Stream]:
    probe = max(5.0, rate / 10)
    return [
        Stream("submit", "POST", "/api/v1/tasks", rate, LIGHT_BODY, ok=202),
        Stream("get", "GET", f"/api/v1/tasks/{task_id}", probe),
        Stream("ready", "GET", "/health/ready", probe),
    ]


def heavy_bodies(rows: list[dict[str, Any]], n: int) -> tuple[list[bytes], float]:
    """n CPU-bound tasks of the mix's heavy rows at priority high, and their mean CPU (s)."""
    heavy = [r for r in rows if r["cpu_ms"] is not None and r["cpu_ms"] >= HEAVY_MS]
    bodies, alone_s = mix_bodies(heavy, n)
    high = [json.dumps({**json.loads(b), "priority": "high"}).encode() for b in bodies]
    return high, alone_s / max(1, len(bodies))


def top_up(run: Run, cal: Calibration, seconds: float) -> int:
    """Queue CPU-bound tasks until the backlog holds `seconds` of every core's work, plus one
    per pool process; the backlog's depth now."""
    slots = run.opts.workers * int(os.environ.get("WORKER_CONCURRENCY", "4"))
    _, mean_s = heavy_bodies(cal.rows, 20)
    need = math.ceil(cores() * seconds / mean_s) + slots
    have = run.stack.queue_depth("high")
    if have < need:
        bodies, _ = heavy_bodies(cal.rows, need - have)
        _, statuses = asyncio.run(
            submit_closed(run.stack.port, run.token, bodies, run.opts.concurrency)
        )
        if set(statuses) != {202}:
            log(f"(4) topping up the backlog: answers {dict(statuses)} (0: connection broken)")
    return run.stack.queue_depth("high")


PROBE_PASSWORD = "a bench probe's password"


def prober(base: str, port: int, admin_token: str) -> tuple[str, str]:
    """A fresh account's token and one light task of its, for the GETs to read."""
    name = f"probe{uuid.uuid4().hex[:10]}"
    create_account(base, admin_token, name, PROBE_PASSWORD)
    token = login(base, name, PROBE_PASSWORD)
    return token, asyncio.run(submit_one(port, token, LIGHT_BODY))


def step(run: Run, workers: str, pool: str | None, rate: float) -> Step:
    stack, opts = run.stack, run.opts
    token, task_id = prober(stack.base, stack.port, run.token)
    stack.wait_quiet()
    load1 = os.getloadavg()[0]
    with run.meter.measure() as m:
        outcome = asyncio.run(
            run_open_loop(
                stack.port,
                auth_headers(token),
                streams(rate, task_id),
                opts.latency_s,
                warmup=WARMUP_S,
                timeout=TIMEOUT_S,
            )
        )
    left = stack.queue_depth("high") if workers == "busy" else None
    s = Step(workers, pool, rate, outcome, load1, m["cpu"], left, opts.latency_s)
    log(f"(4) {describe(s)}  [{s.cpu.shares()}]")
    return s


def describe(s: Step) -> str:
    sub = s.outcome.summaries["submit"]
    probes = ", ".join(
        f"{name} p50 {d.p50:.1f} p99 {d.p99:.1f} ms"
        for name, d in s.outcome.summaries.items()
        if name != "submit"
    )
    where = f"workers {s.workers}" + (f", pool {s.pool}" if s.pool is not None else "")
    backlog = f", backlog left {s.backlog_left}" if s.backlog_left is not None else ""
    return (
        f"{s.rate:.0f} req/s, {where}: submit p50 {sub.p50:.1f} ms, p95 {sub.p95:.1f}, p99 "
        f"{sub.p99:.1f}, max {sub.max:.0f} ({sub.n} requests, {sub.unanswered} unanswered, "
        f"{sub.errors} errors); {probes}; sender late by up to {s.outcome.lag_ms_max:.0f} ms, "
        f"{s.outcome.connections} connections{backlog}; API CPU {s.api_ms:.1f} ms a request; "
        f"load {s.load1:.1f}"
    )


def measure_latency(run: Run, cal: Calibration) -> list[Step]:
    """(4) busy (the baseline nice 0, WORKER_NICE and the stack's own priority in rotation),
    then stopped; each `repeats` times at half the target rate and at the target rate."""
    stack, opts = run.stack, run.opts
    rates = sorted({opts.rate / 2, opts.rate})
    own = stack.pool_priority
    arms = list(dict.fromkeys([BASELINE, f"nice {stack.worker_nice}", own]))
    stack.set_workers(opts.workers)
    stack.wait_idle()
    window = WARMUP_S + opts.latency_s + 10.0  # the step, its warm-up, the wait for quiet, margin
    steps: list[Step] = []
    for i in range(opts.repeats):
        for rate in rates:
            shift = i % len(arms)  # each arm goes first in turn
            for pool in arms[shift:] + arms[:shift]:
                seen = set(stack.set_pool_priority(pool))
                depth = top_up(run, cal, window)
                log(f"(4) pool processes at {sorted(seen)}, {depth} CPU-bound tasks queued")
                steps.append(step(run, "busy", pool, rate))
    stack.set_pool_priority(own)
    stack.set_workers(0)
    if run.py_spy:
        from .phases import profile_submits

        profile_submits(run, run.py_spy)
    for _ in range(opts.repeats):
        for rate in rates:
            steps.append(step(run, "stopped", None, rate))
    return steps


# The report: a table of medians over repeats, with the baseline and the targets.


def groups(steps: list[Step]) -> dict[tuple[str, str | None, float], list[Step]]:
    out: dict[tuple[str, str | None, float], list[Step]] = {}
    for s in steps:
        out.setdefault(s.key, []).append(s)
    return out


def med(steps: list[Step], stream: str, field: str) -> float:
    values = [getattr(s.outcome.summaries[stream], field) for s in steps]
    values = [v for v in values if not math.isnan(v)]
    return statistics.median(values) if values else math.nan


def target_met(rate: float, group: list[Step]) -> str:
    """The issue's targets with the workers busy: p99 of every stream within the target for
    the rate, nothing unanswered."""
    target = LATENCY_TARGETS.get(rate)
    if target is None:
        return ""
    p99s = [med(group, name, "p99") for name in STREAMS]
    missed = sum(s.outcome.summaries[n].unanswered for s in group for n in STREAMS)
    met = all(p <= target for p in p99s) and missed == 0
    return ("met" if met else "**missed**") + f" (p99 <= {target:.0f} ms, none unanswered)"


def latency_table(steps: list[Step]) -> str:
    """One row per (workers, pool priority, rate): medians over the runs; the p99 of each run
    and the load average when it began; the ratio of p99 to the baseline (nice 0) and to the
    workers stopped at the same rate."""
    g = groups(steps)
    rows = [
        "| workers | pool | offered | POST /api/v1/tasks p50 / p95 / p99 / max (ms) | "
        "GET /api/v1/tasks/{id} p50 / p99 | /health/ready p50 / p99 | unanswered / errors | "
        "submit p99 of each run (load) | p99 vs nice 0 | p99 vs stopped | target |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = sorted(g, key=lambda k: (k[0] != "busy", k[2], k[1] == BASELINE, k[1] or ""))
    for key in order:
        workers, pool, rate = key
        group = g[key]
        p99 = med(group, "submit", "p99")
        base = g.get(("busy", BASELINE, rate))
        stopped = g.get(("stopped", None, rate))
        compared = pool is not None and pool != BASELINE
        vs_base = f"{p99 / med(base, 'submit', 'p99'):.2f}" if base and compared else ""
        vs_stopped = (
            f"{p99 / med(stopped, 'submit', 'p99'):.2f}" if stopped and pool is not None else ""
        )
        unanswered = sum(s.outcome.summaries[n].unanswered for s in group for n in STREAMS)
        errors = sum(s.outcome.summaries[n].errors for s in group for n in STREAMS)
        runs = ", ".join(f"{s.outcome.summaries['submit'].p99:.1f} ({s.load1:.1f})" for s in group)
        label = "baseline: busy" if pool == BASELINE else workers
        rows.append(
            f"| {label} | {pool or ''} | {rate:.0f}/s | "
            f"{med(group, 'submit', 'p50'):.1f} / {med(group, 'submit', 'p95'):.1f} / "
            f"**{p99:.1f}** / {med(group, 'submit', 'max'):.0f} | "
            f"{med(group, 'get', 'p50'):.1f} / {med(group, 'get', 'p99'):.1f} | "
            f"{med(group, 'ready', 'p50'):.1f} / {med(group, 'ready', 'p99'):.1f} | "
            f"{unanswered} / {errors} | {runs} | {vs_base} | {vs_stopped} | "
            f"{target_met(rate, group) if workers == 'busy' and compared else ''} |"
        )
    return "\n".join(rows)


def latency_rows(steps: list[Step], own: str) -> list[tuple[str, str, str, str]]:
    """Figure 4's rows in the benchmark's table: the workers busy at the stack's own priority."""
    g = groups(steps)
    rows = []
    for (workers, pool, rate), group in sorted(g.items(), key=lambda kv: kv[0][2]):
        if workers != "busy" or pool != own:
            continue
        base = g.get(("busy", BASELINE, rate))
        ratio = (
            f"; x{med(group, 'submit', 'p99') / med(base, 'submit', 'p99'):.2f} the baseline's "
            "p99 (nice 0)"
            if base
            else ""
        )
        rows.append(
            (
                "4",
                f"submit latency, {rate:.0f} req/s offered (open loop), workers busy, pool {pool}",
                f"p50 {med(group, 'submit', 'p50'):.1f} ms, p99 {med(group, 'submit', 'p99'):.1f}"
                f" ms; GET p99 {med(group, 'get', 'p99'):.1f} ms, ready p99 "
                f"{med(group, 'ready', 'p99'):.1f} ms{ratio} (table below)",
                target_met(rate, group),
            )
        )
    return rows


def cpu_line(steps: list[Step]) -> str:
    """What the cores did during the median-p99 run of each group."""
    parts = []
    for (workers, pool, rate), group in groups(steps).items():
        mid = sorted(group, key=lambda s: s.outcome.summaries["submit"].p99)[len(group) // 2]
        where = workers + (f", pool {pool}" if pool is not None else "")
        parts.append(f"{rate:.0f} req/s, {where}: {mid.cpu.shares()}")
    return "- (4) CPU during the latency steps: " + "; ".join(parts) + "."
