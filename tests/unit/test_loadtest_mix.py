"""The load test's mix (loadtest/finq_load): sizing it for a machine and summing a run up."""

from finq_load.mix import MIX, mean_cpu_ms, request_params
from finq_load.sizing import SCALABLE, scale_of, scaled_mix
from finq_load.state import RunState
from finq_load.summary import render_summary, summarize


def test_a_scale_sizes_only_the_heavy_rows_and_can_be_replayed() -> None:
    doubled = scaled_mix("2")
    for row, table in zip(doubled, MIX, strict=True):
        key = SCALABLE.get(row.type)
        if key is None:
            assert row == table
        else:
            assert row.params[key] == 2 * table.params[key]
    assert scaled_mix(scale_of(doubled)) == doubled
    assert mean_cpu_ms(doubled) == mean_cpu_ms(MIX)


def test_a_seeded_row_gets_a_fresh_seed() -> None:
    seeded = next(m for m in MIX if "seed" in m.params)
    assert {request_params(seeded)["seed"] for _ in range(5)} != {seeded.params["seed"]}


def test_a_run_without_a_completed_task_is_a_problem() -> None:
    summary = summarize(RunState(), None)
    assert summary["completed"] == 0
    assert summary["p50_ms"] is None
    assert "no task completed" in summary["problems"]
    assert render_summary(summary).splitlines()[0].startswith("task type")
