"""Cash flow analysis against numpy-financial (a test dependency) and hand-worked examples."""

from typing import Any

import numpy as np
import numpy_financial as npf
import pytest
from pydantic import ValidationError

from finq_engine.cash_flows import MAX_CELLS, CashFlowParams, cash_flow_analysis, irr
from finq_engine.context import NullContext

# Ordinary series: the numpy-financial docstring examples and a few textbook projects.
SERIES = [
    [-100, 39, 59, 55, 20],
    [-100, 0, 0, 74],
    [-100, 100, 0, -7],
    [-100, 100, 0, 7],
    [-5, 10.5, 1, -8, 1],
    [-1000, 300, 400, 500, 200],
    [-50_000, 12_000, 15_000, 18_000, 21_000, 5_000],
    [-100, 50, 50],  # IRR exactly 0
    [-100, 10, 10, 10],  # negative IRR
    [-1, 1e6],  # huge IRR
    [100, -30, -30, -30, -30],  # a loan from the borrower's side
]


def run(**params: Any) -> dict[str, Any]:
    return cash_flow_analysis(CashFlowParams(**params), NullContext())


@pytest.mark.parametrize("flows", SERIES)
def test_single_series_matches_numpy_financial(flows: list[float]) -> None:
    out = run(cash_flows=flows, discount_rate=0.08, finance_rate=0.06, reinvest_rate=0.07)
    assert out["npv"] == pytest.approx(npf.npv(0.08, flows), rel=1e-12, abs=1e-9)
    assert out["irr"] == pytest.approx(npf.irr(flows), rel=1e-9, abs=1e-12)
    assert out["mirr"] == pytest.approx(npf.mirr(flows, 0.06, 0.07), rel=1e-12)


def test_random_conventional_scenarios_match_numpy_financial() -> None:
    rng = np.random.default_rng(2024)
    flows = rng.uniform(0, 400, size=(300, 12))
    flows[:, 0] = -rng.uniform(500, 3000, 300)
    flows[::7, 6] -= 900  # some scenarios with a mid-life outlay (three sign changes)
    out = run(cash_flows=flows.tolist(), discount_rate=0.1, finance_rate=0.05, reinvest_rate=0.08)
    expected_irr = np.array([npf.irr(f) for f in flows])
    got_irr = np.array([np.nan if v is None else v for v in out["irr"]])
    np.testing.assert_allclose(got_irr, expected_irr, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(out["npv"], [npf.npv(0.1, f) for f in flows], rtol=1e-12)
    np.testing.assert_allclose(out["mirr"], [npf.mirr(f, 0.05, 0.08) for f in flows], rtol=1e-12)


def test_scenarios_equal_single_runs() -> None:
    rows = [[-100, 30, 40, 50], [-200, 10, 10, 300], [-50, 60, -20, 25]]
    together = run(cash_flows=rows, discount_rate=0.05)
    for i, row in enumerate(rows):
        alone = run(cash_flows=row, discount_rate=0.05)
        for key in ("npv", "irr", "payback_period"):
            assert together[key][i] == pytest.approx(alone[key], rel=1e-14)
    assert together["mirr"] is None


def test_irr_is_a_root_and_picks_the_one_closest_to_zero() -> None:
    # (1 + r)^-t with roots at r = 0.1 and r = -0.5: NPV = -(x - 1/1.1)(x - 2) in x = 1/(1+r).
    a, b = 1 / 1.1, 2.0
    flows = np.array([[-a * b, a + b, -1.0]])
    assert irr(flows)[0] == pytest.approx(0.1, rel=1e-12)
    assert npf.irr(flows[0]) == pytest.approx(0.1, rel=1e-9)


def test_no_real_irr_is_null() -> None:
    # Two sign changes but NPV never reaches zero: 1 - 3x + 3x^2 has no real root.
    out = run(cash_flows=[1, -3, 3], discount_rate=0.05)
    assert out["irr"] is None
    assert np.isnan(npf.irr([1, -3, 3]))


def test_payback_hand_computed() -> None:
    # Cumulative: -1000, -700, -300, +200 -> paid back 300/500 of the way through period 3.
    assert run(cash_flows=[-1000, 300, 400, 500, 200], discount_rate=0.1)["payback_period"] == (
        pytest.approx(2.6)
    )
    # Exactly at the end of period 2.
    assert run(cash_flows=[-100, 50, 50, 10], discount_rate=0.1)["payback_period"] == 2.0
    # Never pays back.
    assert run(cash_flows=[-100, 10, 10, 10], discount_rate=0.1)["payback_period"] is None
    # Deficit only after a zero start: -100 at t=1 recovered 40/60 into period 3.
    assert run(cash_flows=[0, -100, 60, 60], discount_rate=0.1)["payback_period"] == (
        pytest.approx(2 + 40 / 60)
    )
    # Never in deficit.
    assert run(cash_flows=[100, -30, -30], discount_rate=0.1)["payback_period"] == 0.0


def test_long_horizon_and_many_scenarios_stay_vectorised() -> None:
    rng = np.random.default_rng(5)
    flows = rng.uniform(5, 15, size=(100, 10_000))
    flows[:, 0] = -rng.uniform(100, 1000, 100)
    out = run(cash_flows=flows.tolist(), discount_rate=0.05)
    rates = np.asarray(out["irr"])
    # Each IRR zeroes its series' NPV.
    t = np.arange(10_000)
    residual = np.array([(f * (1 + r) ** -t).sum() for f, r in zip(flows, rates, strict=True)])
    assert np.abs(residual).max() < 1e-8 * np.abs(flows).sum(axis=1).max()


def test_npv_overflow_is_a_calculation_error() -> None:
    from finq_engine.errors import CalculationError

    with pytest.raises(CalculationError):
        run(cash_flows=[-1] + [1] * 9999, discount_rate=-0.9)


def test_scenarios_of_different_lengths_equal_their_single_runs() -> None:
    rows = [[-100, 30, 40, 50], [-200, 10, 10, 300, 20, 20, 20], [-50, 60], [-80, 0, 0, 100, 0]]
    together = run(cash_flows=rows, discount_rate=0.05, finance_rate=0.04, reinvest_rate=0.06)
    for i, row in enumerate(rows):
        alone = run(cash_flows=row, discount_rate=0.05, finance_rate=0.04, reinvest_rate=0.06)
        for key in ("npv", "irr", "payback_period", "mirr", "irr_count"):
            assert together[key][i] == pytest.approx(alone[key], rel=1e-14)
        # MIRR is compounded over the scenario's own horizon, as numpy-financial does.
        assert together["mirr"][i] == pytest.approx(npf.mirr(row, 0.04, 0.06), rel=1e-12)


def test_trailing_zeros_change_neither_npv_nor_irr_nor_payback() -> None:
    short = run(cash_flows=[-100, 30, 40, 50], discount_rate=0.05)
    long = run(cash_flows=[-100, 30, 40, 50, 0, 0, 0, 0, 0, 0], discount_rate=0.05)
    for key in ("npv", "irr", "payback_period", "irr_count"):
        assert long[key] == pytest.approx(short[key], rel=1e-14)


def test_every_irr_is_reported_when_there_are_several() -> None:
    # NPV = -(x - 1/1.1)(x - 2) in x = 1/(1+r): IRRs at 10% and -50%.
    a, b = 1 / 1.1, 2.0
    out = run(cash_flows=[-a * b, a + b, -1.0], discount_rate=0.05)
    assert out["irr_count"] == 2 and out["irr_count_exact"] is True
    assert out["irrs"] == pytest.approx([-0.5, 0.1], rel=1e-12)
    assert out["irr"] == pytest.approx(0.1, rel=1e-12)


@pytest.mark.parametrize(("r1", "r2"), [(0.1, 0.1001), (0.05, 0.05001), (-0.2, -0.19999)])
def test_roots_closer_than_the_grid_are_two_roots(r1: float, r2: float) -> None:
    # Both roots fall inside one 0.005-wide grid cell: NPV has the same sign at its ends.
    a, b = 1 / (1 + r1), 1 / (1 + r2)
    out = run(cash_flows=[a * b, -(a + b), 1.0], discount_rate=0.0)
    assert out["irr_count"] == 2
    assert out["irrs"] == pytest.approx(sorted([r1, r2]), rel=1e-9, abs=1e-12)


def test_one_sign_change_has_exactly_one_irr() -> None:
    rng = np.random.default_rng(11)
    flows = rng.uniform(1, 50, size=(200, 30))
    flows[:, 0] = -rng.uniform(100, 1000, 200)
    out = run(cash_flows=flows.tolist(), discount_rate=0.05)
    assert set(out["irr_count"]) == {1} and all(out["irr_count_exact"])
    assert [r[0] for r in out["irrs"]] == out["irr"]


def test_many_sign_changes_beyond_the_exact_degree_say_the_count_is_not_exact() -> None:
    from finq_engine.cash_flows import ROOTS_MAX_DEGREE

    flows = [-100.0] + [10.0, -1.0] * (ROOTS_MAX_DEGREE // 2 + 1)
    out = run(cash_flows=flows, discount_rate=0.05)
    assert out["irr_count_exact"] is False
    assert out["irr"] is not None and out["irr"] in out["irrs"]
    assert run(cash_flows=flows[:ROOTS_MAX_DEGREE], discount_rate=0.05)["irr_count_exact"]


# --- validation --------------------------------------------------------------------------------


def error_fields(**params: Any) -> set[Any]:
    with pytest.raises(ValidationError) as info:
        CashFlowParams(**params)
    return {e["loc"][0] for e in info.value.errors()}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"cash_flows": [100, 20, 30], "discount_rate": 0.1}, "cash_flows"),  # no sign change
        ({"cash_flows": [-100, -20, 0], "discount_rate": 0.1}, "cash_flows"),
        ({"cash_flows": [[-1, 2], [1, 2]], "discount_rate": 0.1}, "cash_flows"),  # scenario 1
        ({"cash_flows": [-1], "discount_rate": 0.1}, "cash_flows"),
        ({"cash_flows": [-1, float("nan")], "discount_rate": 0.1}, "cash_flows"),
        ({"cash_flows": [-1] + [1] * 10_000, "discount_rate": 0.1}, "cash_flows"),
        ({"cash_flows": [-1, 2], "discount_rate": -1.0}, "discount_rate"),
        ({"cash_flows": [-1, 2], "discount_rate": float("inf")}, "discount_rate"),
        ({"cash_flows": [-1, 2], "discount_rate": 0.1, "finance_rate": 0.05}, "reinvest_rate"),
        ({"cash_flows": [-1, 2], "discount_rate": 0.1, "reinvest_rate": 0.05}, "reinvest_rate"),
    ],
)
def test_bad_inputs_name_the_field(params: dict[str, Any], field: str) -> None:
    assert error_fields(**params) == {field}


def test_too_many_cells_in_total() -> None:
    rows = [[-1.0] + [1.0] * 199] * (MAX_CELLS // 200 + 1)
    assert error_fields(cash_flows=rows, discount_rate=0.1) == {"cash_flows"}


def test_no_sign_change_message_mentions_irr() -> None:
    with pytest.raises(ValidationError, match="sign change"):
        CashFlowParams(cash_flows=[1, 2, 3], discount_rate=0.1)
