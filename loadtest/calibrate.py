"""Measure what each row of the load-test mix costs on one core, in-process.

    .venv/bin/python loadtest/calibrate.py            a table and the weighted mean
    .venv/bin/python loadtest/calibrate.py --json     the same, machine-readable (make bench)
    .venv/bin/python loadtest/calibrate.py --scale auto   the mix as the load test sizes it here

Runs what a worker pool process runs for a calculation (`TaskType.execute`), one BLAS thread,
pinned to one CPU, timing CPU rather than wall time (median of repeats). Copy the `cpu_ms` into
MIX (loadtest/finq_load/mix.py) after changing a row, keeping the weighted mean near 100 ms.
`chart_ms` times the result's chart (finq_worker.charts) separately: drawn only when asked for.
"""

from __future__ import annotations

import os

from finq_core.threads import cap_threads

# Before NumPy loads (through finq_engine): one BLAS thread, as in the workers.
cap_threads()

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

from finq_load.mix import MIX, Mix  # noqa: E402  (this script's folder is on sys.path)
from finq_load.sizing import scale_of, scaled_mix  # noqa: E402

from finq_engine import NullContext, get_task_type  # noqa: E402


def _chart_renderer() -> Any:
    """finq_worker.charts.render_safely, warmed up like a worker does; None without charts."""
    try:
        from finq_worker import charts
    except ImportError:
        return None
    render = getattr(charts, "render_safely", None)
    if render is not None and hasattr(charts, "warm_up"):
        charts.warm_up()
    return render


def _median_cpu_ms(run: Any, repeats: int, min_seconds: float) -> tuple[float, float, int]:
    cpu: list[float] = []
    wall: list[float] = []
    spent = 0.0
    while len(cpu) < repeats or (spent < min_seconds and len(cpu) < 50):
        c0, w0 = time.process_time(), time.perf_counter()
        run()
        cpu.append((time.process_time() - c0) * 1000.0)
        wall.append((time.perf_counter() - w0) * 1000.0)
        spent += cpu[-1] / 1000.0
    return statistics.median(cpu), statistics.median(wall), len(cpu)


def time_chart(render: Any, entry: Mix, result: dict[str, Any], repeats: int) -> float | None:
    """Median CPU ms of the worker's chart of one result; None when the type has none."""
    try:
        if render(entry.type, entry.params, result) is None:
            return None
        return _median_cpu_ms(lambda: render(entry.type, entry.params, result), repeats, 0)[0]
    except Exception:  # charts are optional: a signature that changed means no figure
        return None


def time_entry(entry: Mix, repeats: int, min_seconds: float, render: Any = None) -> dict[str, Any]:
    """Median CPU ms of one execution of the row (after one warm-up run)."""
    task_type = get_task_type(entry.type)
    row: dict[str, Any] = {
        "type": entry.type,
        "weight": entry.weight,
        "size": entry.size,
        "table_cpu_ms": entry.cpu_ms,
        "params": entry.params,
    }
    if task_type is None:
        row.update(cpu_ms=None, wall_ms=None, error="not registered in finq_engine")
        return row
    try:
        result = task_type.execute(entry.params, NullContext())
    except Exception as exc:  # a row the engine rejects: report it, keep going
        row.update(cpu_ms=None, wall_ms=None, error=f"{type(exc).__name__}: {exc}"[:300])
        return row
    cpu, wall, runs = _median_cpu_ms(
        lambda: task_type.execute(entry.params, NullContext()), repeats, min_seconds
    )
    row.update(
        cpu_ms=cpu,
        wall_ms=wall,
        runs=runs,
        chart_ms=time_chart(render, entry, result, 3) if render else None,
    )
    return row


def calibrate(
    repeats: int = 5, min_seconds: float = 0.3, charts: bool = True, mix: tuple[Mix, ...] = MIX
) -> dict[str, Any]:
    render = _chart_renderer() if charts else None
    rows = [time_entry(m, repeats, min_seconds, render) for m in mix]
    timed = [r for r in rows if r["cpu_ms"] is not None]
    weight = sum(r["weight"] for r in timed)
    mean = sum(r["weight"] * r["cpu_ms"] for r in timed) / weight if weight else None
    chart_mean = (
        sum(r["weight"] * (r.get("chart_ms") or 0.0) for r in timed) / weight
        if weight and render
        else None
    )
    return {
        "cpu": sorted(os.sched_getaffinity(0)),
        "rows": rows,
        "mean_cpu_ms": mean,
        "mean_chart_ms": chart_mean,
        "table_mean_cpu_ms": sum(m.weight * m.cpu_ms for m in mix) / sum(m.weight for m in mix),
        "scale": scale_of(mix),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--cpu", type=int, default=None, help="pin to this CPU (default: the first one allowed)"
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--min-seconds",
        type=float,
        default=0.3,
        help="repeat a row until it consumed this much CPU (at most 50 runs)",
    )
    parser.add_argument("--no-charts", action="store_true", help="do not time the worker's charts")
    parser.add_argument("--types", default="", help="comma-separated rows to time (default: all)")
    parser.add_argument(
        "--scale",
        default="1",
        help="time the mix as the load test sizes it: MIX_SCALE (auto, a "
        "factor, or 1: the table's sizes)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    cpu = args.cpu if args.cpu is not None else min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    wanted = {t for t in args.types.split(",") if t}
    mix = tuple(m for m in MIX if not wanted or m.type in wanted)
    if args.scale != "1":
        mix = scaled_mix(args.scale, mix)
    out = calibrate(args.repeats, args.min_seconds, charts=not args.no_charts, mix=mix)
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"{'type':<20}{'weight':>7}{'cpu ms':>9}{'table':>8}{'chart ms':>10}  size")
    for r in out["rows"]:
        measured = f"{r['cpu_ms']:.2f}" if r["cpu_ms"] is not None else "-"
        chart = f"{r['chart_ms']:.1f}" if r.get("chart_ms") is not None else "-"
        print(
            f"{r['type']:<20}{r['weight']:>7}{measured:>9}{r['table_cpu_ms']:>8.2f}"
            f"{chart:>10}  {r['size']}{'  ' + r['error'] if r.get('error') else ''}"
        )
    if out["mean_cpu_ms"] is not None:
        print(
            f"weighted mean: {out['mean_cpu_ms']:.1f} ms measured on CPU {cpu} "
            f"(table: {out['table_mean_cpu_ms']:.1f} ms)"
        )
    if out["mean_chart_ms"]:
        print(f"the worker's chart of each result adds {out['mean_chart_ms']:.1f} ms on average")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
