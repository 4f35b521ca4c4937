"""The benchmark's steady-state efficiency (scripts/bench_stack.py): it must leave out the
batch's opening and drain, and nothing else."""

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def steady_efficiency() -> Callable[..., Any]:
    path = ROOT / "scripts" / "bench_stack.py"
    spec = importlib.util.spec_from_file_location("bench_stack", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_stack"] = module
    spec.loader.exec_module(module)
    fn: Callable[..., Any] = module.steady_efficiency
    return fn


def test_drain_is_left_out(steady_efficiency: Callable[..., Any]) -> None:
    # Two cores, two slots: a and b run side by side at full speed for 2 s, then c runs alone
    # for 2 s while the other core idles. The whole batch: 6 CPU-s / (4 s x 2) = 0.75.
    spans = [("x", 0.0, 2.0), ("x", 0.0, 2.0), ("x", 2.0, 4.0)]
    assert steady_efficiency(spans, {"x": 2.0}, slots=2, n_cores=2) == pytest.approx(1.0)


def test_a_run_across_the_window_edge_counts_in_proportion(
        steady_efficiency: Callable[..., Any]) -> None:
    # Window [1, 3]: the second slot fills at 1 s, the last start is at 3 s. "long" (4 CPU-s
    # over 0..4) has half its run inside; each "short" (1 CPU-s over 2 s) is wholly inside.
    spans = [("long", 0.0, 4.0), ("short", 1.0, 3.0), ("short", 3.0, 3.0)]
    eff = steady_efficiency(spans, {"long": 4.0, "short": 1.0}, slots=2, n_cores=2)
    assert eff == pytest.approx((4.0 * 0.5 + 1.0 + 1.0) / (2.0 * 2))


def test_slow_platform_shows(steady_efficiency: Callable[..., Any]) -> None:
    # Every task takes twice its CPU alone (2 s for 1 CPU-s, one per core): steady state 0.5.
    spans = [("x", float(t), float(t) + 2.0) for t in range(0, 20, 2) for _ in range(2)]
    assert steady_efficiency(spans, {"x": 1.0}, slots=2, n_cores=2) == pytest.approx(0.5)


def test_none_when_the_slots_never_fill(steady_efficiency: Callable[..., Any]) -> None:
    spans = [("x", 0.0, 1.0), ("x", 1.0, 2.0), ("x", 2.0, 3.0)]
    assert steady_efficiency(spans, {"x": 1.0}, slots=2, n_cores=2) is None
