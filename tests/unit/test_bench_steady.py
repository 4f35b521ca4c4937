"""The benchmark's steady-state efficiency (scripts/bench/steady.py): it must leave out the
batch's opening and drain, and nothing else."""

import pytest
from bench.steady import steady_efficiency


def test_drain_is_left_out() -> None:
    # Two cores, two slots: a and b run side by side at full speed for 2 s, then c runs alone
    # for 2 s while the other core idles. The whole batch: 6 CPU-s / (4 s x 2) = 0.75.
    spans = [("x", 0.0, 2.0), ("x", 0.0, 2.0), ("x", 2.0, 4.0)]
    assert steady_efficiency(spans, {"x": 2.0}, slots=2, n_cores=2) == pytest.approx(1.0)


def test_a_run_across_the_window_edge_counts_in_proportion() -> None:
    # Window [1, 3]: the second slot fills at 1 s, the last start is at 3 s. "long" (4 CPU-s
    # over 0..4, a core to itself throughout) did half its work inside; "short" all of it.
    spans = [("long", 0.0, 4.0), ("short", 1.0, 3.0), ("tail", 3.0, 4.0)]
    eff = steady_efficiency(spans, {"long": 4.0, "short": 2.0, "tail": 1.0}, slots=2, n_cores=2)
    assert eff == pytest.approx(1.0)


def test_work_is_credited_at_the_speed_a_fair_scheduler_gives() -> None:
    # One core, two slots, a perfect platform. x (1 CPU-s) and y (2 CPU-s) share the core
    # from 0; x ends at 2, z (0.5 CPU-s) starts there and shares with y until 3; y then runs
    # alone, twice as fast, until 3.5. Window [0, 2]: x did all its work, y half of it (not
    # 2/3.5 of it, its share of wall time). Efficiency 1, not 1.07.
    spans = [("x", 0.0, 2.0), ("y", 0.0, 3.5), ("z", 2.0, 3.0)]
    eff = steady_efficiency(spans, {"x": 1.0, "y": 2.0, "z": 0.5}, slots=2, n_cores=1)
    assert eff == pytest.approx(1.0)


def test_a_slot_freed_and_refilled_at_once_does_not_open_the_window() -> None:
    # a ends at 10 as b starts: one task running, not two. Both slots are first busy at 15,
    # which is also the last start: no window.
    spans = [("x", 0.0, 10.0), ("x", 10.0, 20.0), ("x", 15.0, 30.0)]
    assert steady_efficiency(spans, {"x": 1.0}, slots=2, n_cores=2) is None


def test_slow_platform_shows() -> None:
    # Every task takes twice its CPU alone (2 s for 1 CPU-s, one per core): steady state 0.5.
    spans = [("x", float(t), float(t) + 2.0) for t in range(0, 20, 2) for _ in range(2)]
    assert steady_efficiency(spans, {"x": 1.0}, slots=2, n_cores=2) == pytest.approx(0.5)


def test_none_when_the_slots_never_fill() -> None:
    spans = [("x", 0.0, 1.0), ("x", 1.0, 2.0), ("x", 2.0, 3.0)]
    assert steady_efficiency(spans, {"x": 1.0}, slots=2, n_cores=2) is None
