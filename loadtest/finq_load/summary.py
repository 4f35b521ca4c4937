"""The run's task summary: completed tasks/s, latencies, failed and lost tasks, the verdict."""

from __future__ import annotations

import math
import re
import time
from typing import TYPE_CHECKING, Any

from .mix import mean_cpu_ms
from .sizing import scale_of
from .state import RunState

if TYPE_CHECKING:
    from locust.env import Environment


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of an ascending list; nan when empty."""
    if not sorted_values:
        return math.nan
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def request_errors(errors: Any) -> int:
    """Failed requests that the summary does not judge already: not the TASK entries (failed
    and lost tasks), not refused submissions (rejected ones are problems of their own) and no
    429 anywhere (the stack's rate limits doing their job: a throttled submission is counted
    as such, a throttled poll is simply tried again)."""
    return sum(
        e.occurrences
        for e in errors
        if e.method != "TASK"
        and e.name != "POST /api/v1/tasks"
        and not re.search(r"\b429\b", str(e.error))
    )


def summarize(state: RunState, environment: Environment | None) -> dict[str, Any]:
    """Completed tasks/s over [first submit, stop], latencies over every completed task."""
    end = state.stop_requested or time.time()
    window = max(1e-9, end - (state.first_submit or end))
    in_window = sum(1 for _, at, _ in state.done if at <= end)
    by_type: dict[str, dict[str, Any]] = {}
    for m in state.mix:
        lat = sorted(ms for t, _, ms in state.done if t == m.type)
        by_type[m.type] = {
            "completed": len(lat),
            "failed": sum(1 for t, _ in state.failed if t == m.type),
            "lost": sum(1 for t, _ in state.lost if t == m.type),
            "p50_ms": percentile(lat, 50),
            "p95_ms": percentile(lat, 95),
            "p99_ms": percentile(lat, 99),
        }
    lat = sorted(ms for _, _, ms in state.done)
    rate = in_window / window
    summary: dict[str, Any] = {
        "window_s": round(window, 3),
        "submitted": state.submitted,
        "completed": len(state.done),
        "completed_in_window": in_window,
        "tasks_per_sec": rate,
        "failed": len(state.failed),
        "lost": len(state.lost),
        "rejected": sum(state.rejected.values()),
        "rejected_by_status": state.rejected,
        "p50_ms": percentile(lat, 50),
        "p95_ms": percentile(lat, 95),
        "p99_ms": percentile(lat, 99),
        "max_ms": lat[-1] if lat else math.nan,
        "mean_cpu_ms_of_mix": mean_cpu_ms(state.mix),
        "mix_scale": scale_of(state.mix),
        "by_type": by_type,
        "failures": [f"{t}: {r}" for t, r in state.failed[:20]],
        "lost_ids": [i for _, i in state.lost[:50]],
        "problems": [],
    }
    options: Any = environment.parsed_options if environment else None
    minimum = options.finq_min_tasks_per_sec if environment else 0.0
    summary["min_tasks_per_sec"] = minimum
    if state.failed:
        summary["problems"].append(f"{len(state.failed)} task(s) failed")
    if state.lost:
        summary["problems"].append(f"{len(state.lost)} task(s) lost")
    refused = {code: n for code, n in state.rejected.items() if code != "429"}
    summary["throttled"] = state.rejected.get("429", 0)
    if refused:
        summary["problems"].append(f"{sum(refused.values())} submission(s) rejected {refused}")
    if minimum and rate < minimum:
        summary["problems"].append(f"{rate:.2f} completed tasks/s < {minimum:g}")
    if not state.done:
        summary["problems"].append("no task completed")
    finite: dict[str, Any] = _finite(summary)
    return finite


def _finite(value: Any) -> Any:
    """JSON has no NaN: empty percentiles become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def render_summary(s: dict[str, Any]) -> str:
    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:,.0f}"

    lines = [
        f"{'task type':<22}{'done':>7}{'failed':>8}{'lost':>6}{'p50 ms':>9}"
        f"{'p95 ms':>9}{'p99 ms':>9}"
    ]
    for name, t in s["by_type"].items():
        lines.append(
            f"{name:<22}{t['completed']:>7}{t['failed']:>8}{t['lost']:>6}"
            f"{ms(t['p50_ms']):>9}{ms(t['p95_ms']):>9}{ms(t['p99_ms']):>9}"
        )
    lines.append(
        f"{'all':<22}{s['completed']:>7}{s['failed']:>8}{s['lost']:>6}"
        f"{ms(s['p50_ms']):>9}{ms(s['p95_ms']):>9}{ms(s['p99_ms']):>9}"
    )
    lines.append(
        f"completed tasks/s: {s['tasks_per_sec']:.2f} over {s['window_s']:.1f} s "
        f"(first submit to stop); submitted {s['submitted']}, rejected {s['rejected']}"
        f" (of which throttled by the rate limits, 429: {s.get('throttled', 0)})"
    )
    if s.get("mix_scale"):
        lines.append(f"mix sized for this machine (MIX_SCALE): {s['mix_scale']}")
    return "\n".join(lines)
