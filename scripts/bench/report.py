"""The benchmark's report: the table, what each figure is made of, the chart and the doc."""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass
from typing import Any

from .batch import Batch
from .calibration import Calibration
from .chart import draw_chart
from .config import CHART, DOC, LIGHT_TYPE, ROOT, SECTION, TARGETS, cores, log, pool_priority
from .doc import write_doc
from .latency import cpu_line, latency_rows, latency_table
from .options import Options
from .phases import Results, fmt_eff
from .profile_report import render_profiles

Row = tuple[str, str, str, str]


@dataclass(frozen=True)
class Report:
    """The lines the report prints, and writes to the doc."""

    env_line: str
    config_line: str
    table: str
    latency: str  # figure 4 in full
    limits: list[str]
    prof_lines: list[str]


def fmt_rate(values: list[float]) -> str:
    med = statistics.median(values)
    spread = f" (runs: {', '.join(f'{v:.1f}' for v in values)})" if len(values) > 1 else ""
    return f"{med:.1f}/s{spread}"


def drained_note(batches: list[Batch]) -> str:
    """When tasks leave work behind (a notification, say), the rate at which the
    stack also finishes that: what it can sustain."""
    done = statistics.median(b.rate for b in batches)
    drained = statistics.median(b.drained_rate for b in batches)
    if drained >= 0.95 * done:
        return ""
    return f"; {drained:.1f}/s counting until the deferred work is done too"


def cpu_per_task(b: Batch) -> str:
    n = max(1, b.statuses.get("SUCCESS", 0))
    parts = sorted(b.cpu.by_group.items(), key=lambda kv: -kv[1])
    return ", ".join(f"{k} {v / n * 1000:.1f} ms" for k, v in parts if v / n >= 0.0001)


def ok(flag: bool) -> str:
    return "met" if flag else "**missed**"


def throughput_rows(opts: Options, cal: Calibration, res: Results) -> list[Row]:
    """Figures 1 to 3 of the table."""
    noop_med = statistics.median(res.noop_rates)
    light_rates = [b.rate for b in res.light]
    light_med = statistics.median(light_rates)
    mix = res.mix.batches
    mix_rates = [b.rate for b in mix]
    mix_med = statistics.median(mix_rates)
    effs = [res.mix.alone_s / (b.wall * cores()) for b in mix]
    own_effs = [res.mix.alone_s / b.cpu.ours for b in mix]
    eff_med = statistics.median(effs)
    steadies = res.mix.steadies
    steady_med = statistics.median(steadies) if steadies else None
    mix_lost = sum(b.lost for b in mix)
    mix_failed = sum(b.failed for b in mix)
    return [
        (
            "1",
            f"bare Celery ceiling: no-op task, {opts.workers} workers x "
            f"{os.environ.get('WORKER_CONCURRENCY', '4')}, enqueued straight into Redis",
            fmt_rate(res.noop_rates),
            "",
        ),
        (
            "2",
            f"full stack, no-op-sized task ({LIGHT_TYPE}, 1 year) over HTTP via nginx",
            fmt_rate(light_rates) + f"; {light_med / noop_med:.2f} x (1)" + drained_note(res.light),
            f"{ok(light_med / noop_med >= TARGETS['light_ratio'])} (>= 0.5 x (1))",
        ),
        (
            "3",
            f"CPU-bound mix ({res.mix.n} tasks, mean {cal.mean_ms:.0f} ms alone on one core)",
            fmt_rate(mix_rates) + f"; {mix_failed} failed, {mix_lost} lost" + drained_note(mix),
            f"{ok(mix_med >= TARGETS['mix_tasks_per_sec'] and not mix_lost and not mix_failed)}"
            f" (>= 12/s, none failed/lost)",
        ),
        (
            "3",
            "efficiency = sum(CPU alone) / (wall x cores)",
            f"{eff_med:.2f} (runs: {', '.join(f'{e:.2f}' for e in effs)}); own-CPU "
            f"{statistics.median(own_effs):.2f}; side-by-side ceiling {cal.side_by_side:.2f}",
            f"{ok(eff_med >= TARGETS['efficiency'])} (>= 0.85)",
        ),
        (
            "3",
            "efficiency in steady state (every worker process busy; opening and drain left out)",
            f"{fmt_eff(steady_med)} (runs: {', '.join(f'{e:.2f}' for e in steadies)})",
            f"{ok(steady_med is not None and steady_med >= TARGETS['efficiency'])} (>= 0.85)",
        ),
    ]


def latency_and_scaling_rows(own: str, res: Results) -> list[Row]:
    """Figures 4 and 5 of the table; `own`: the stack's pool priority."""
    rows: list[Row] = latency_rows(res.latency, own)
    if res.scaling:
        rows.append(
            (
                "5",
                "mix with 1 / 2 / 3 / 4 worker replicas",
                " / ".join(f"{b.rate:.1f}" for _, b in res.scaling) + " tasks/s",
                "docs/scaling.png",
            )
        )
    return rows


def markdown_table(rows: list[Row]) -> str:
    header = ("| # | measure | result | target |", "|---|---|---|---|")
    return "\n".join([*header, *(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows)])


def env_line(ver: dict[str, str]) -> str:
    return (
        f"{ver['cpu']}; Python {ver['python']}, Celery {ver['celery']}, kombu "
        f"{ver['kombu']}, redis-server {ver['redis-server']}, nginx {ver['nginx']}, "
        f"FastAPI {ver['fastapi']}, uvicorn {ver['uvicorn']}, gunicorn "
        f"{ver['gunicorn']}, NumPy {ver['numpy']}, SQLite {ver['sqlite']}"
    )


def config_line(opts: Options, load0: tuple[float, float, float], started: float) -> str:
    """The stack's configuration, the load around the run and its duration (read now)."""
    return (
        f"{opts.api_replicas} API replicas x GUNICORN_WORKERS="
        f"{os.environ.get('GUNICORN_WORKERS', '1')}, {opts.workers} worker replicas "
        f"x WORKER_CONCURRENCY={os.environ.get('WORKER_CONCURRENCY', '4')}, "
        f"WORKER_NICE={os.environ.get('WORKER_NICE', '10')}, "
        f"WORKER_SCHED_IDLE={os.environ.get('WORKER_SCHED_IDLE', 'true')}, "
        f"LOG_LEVEL={os.environ.get('LOG_LEVEL', 'INFO')}, {opts.database}; load average "
        f"{load0[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end; "
        f"{time.monotonic() - started:.0f} s in all"
    )


def limits(cal: Calibration, res: Results) -> list[str]:
    """What each figure is made of: CPU by process role, the median run of each."""
    if not res.light:  # --latency-only
        return [cpu_line(res.latency)]
    light, mix = res.light, res.mix.batches
    noop_cpu = res.noop_cpu
    lines = [
        f"- (1) CPU during the no-op batches: {noop_cpu[len(noop_cpu) // 2].shares()}.",
        f"- (2) CPU during the light batches: {light[len(light) // 2].cpu.shares()}; "
        f"per task: {cpu_per_task(light[len(light) // 2])}.",
        f"- (3) CPU during the mix: {mix[len(mix) // 2].cpu.shares()}; the calculations alone "
        f"needed {res.mix.alone_s:.1f} CPU-s of the {mix[len(mix) // 2].cpu.ours:.1f} CPU-s "
        f"our processes used; running on every core at once costs them "
        f"x{1 / cal.side_by_side:.2f}.",
        cpu_line(res.latency),
    ]
    if res.scaling:
        lines.append(
            "- (5) " + "; ".join(f"{k} replica(s): {b.cpu.shares()}" for k, b in res.scaling) + "."
        )
    return lines


def profile_lines(profiles: dict[str, dict[str, Any]]) -> list[str]:
    if profiles:
        return render_profiles(profiles)
    return ["py-spy is not installed: no profiles (`.venv/bin/pip install py-spy` to get them)."]


def build_report(
    opts: Options,
    ver: dict[str, str],
    load0: tuple[float, float, float],
    started: float,
    cal: Calibration,
    res: Results,
    profiles: dict[str, dict[str, Any]],
) -> Report:
    rows = (throughput_rows(opts, cal, res) if res.light else []) + latency_and_scaling_rows(
        pool_priority(os.environ), res
    )
    return Report(
        env_line=env_line(ver),
        config_line=config_line(opts, load0, started),
        table=markdown_table(rows),
        latency=latency_table(res.latency),
        limits=limits(cal, res),
        prof_lines=profile_lines(profiles),
    )


def print_report(report: Report) -> None:
    print()
    print(f"finq full-stack benchmark: {report.env_line}")
    print(report.config_line)
    print()
    print(report.table)
    print()
    print("(4) latency, open loop: medians of the runs (p99 of each run, with the load average)")
    print(report.latency)
    print()
    print("What each figure is made of (share of wall time x cores):")
    print("\n".join(report.limits))
    print()
    print("\n".join(report.prof_lines))


def draw_scaling(cal: Calibration, res: Results) -> None:
    """docs/scaling.png, against the ideal and the side-by-side ceiling."""
    ideal = cores() * 1000.0 / cal.mean_ms
    draw_chart(
        [(k, b.rate, res.scaling_alone_s[k] / (b.wall * cores())) for k, b in res.scaling],
        ideal,
        ideal * cal.side_by_side,
        CHART,
        f"finq mix on {cores()} cores: completed tasks/s by worker replicas "
        f"(mean task {cal.mean_ms:.0f} ms)",
    )
    log(f"chart written to {CHART.relative_to(ROOT)}")


def doc_block(report: Report, cal: Calibration, res: Results) -> str:
    """The results block of the doc section."""
    return "\n".join(
        [
            f"Measured {time.strftime('%Y-%m-%d %H:%M')} on {report.env_line}.",
            "",
            f"Configuration: {report.config_line}.",
            "",
            report.table,
            "",
            "(4) in full: medians of the runs; the p99 of each run with the 1-minute load average"
            " when it began; ratios of p99 to the baseline (the pool at nice 0, same run) and to"
            " the workers stopped:",
            "",
            report.latency,
            "",
            "![completed tasks/s by worker replicas](scaling.png)" if res.scaling else "",
            "",
            "Mix (loadtest/finq_load/mix.py), CPU per task measured alone on one core in this run:",
            "",
            "| type | weight | size | CPU ms |",
            "|---|---|---|---|",
            *(
                f"| {r['type']} | {r['weight']} | {r['size']} | "
                + (f"{r['cpu_ms']:.2f}" if r["cpu_ms"] is not None else "n/a")
                + " |"
                for r in cal.rows
            ),
            f"| **weighted mean** | | | **{cal.mean_ms:.1f}** |",
            "",
            "What each figure is made of (CPU seconds by process role, as a share of wall time"
            " x cores):",
            "",
            *report.limits,
            "",
            "Profiles (py-spy, 100 Hz, an extra batch of each kind):",
            "",
            *report.prof_lines,
        ]
    )


def publish(opts: Options, report: Report, cal: Calibration, res: Results) -> None:
    """Print the report; draw the chart when there was a scaling run; write the doc section
    unless --no-docs or --quick."""
    print_report(report)
    if res.scaling:
        draw_scaling(cal, res)
    if not opts.no_docs and not opts.quick and not opts.latency_only:
        write_doc(doc_block(report, cal, res))
        log(f"results written to {DOC.relative_to(ROOT)} (section '{SECTION[3:]}')")
