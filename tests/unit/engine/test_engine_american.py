"""American options: the CRR tree against QuantLib (test-only), closed forms and theorems;
Longstaff-Schwartz against the tree within its standard errors and its known low bias.

Tolerances. The tree's error is O(1/N) and oscillates: at N = 2,000 steps it is within
1e-3 (relative) of a fine finite-difference solution (QuantLib's, 2,000 x 2,000), and
QuantLib's own CRR tree with the same N is the same lattice up to how it places exercise
dates on its time grid and computes the branch probability: measured up to 4e-5 apart at
N = 801, checked to 1e-4 relative (both O(1/N) from the limit). LSM is compared
within 4 standard errors (a false alarm about once in 16,000 runs; seeds are fixed) plus
its low bias: a fitted, hence suboptimal, exercise rule on 50 dates is worth less than the
American option, by well under 1 % of the price here, so the LSM price must lie in
[tree - 4 se - 1 % of the price, tree + 4 se].
"""

import math
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from finq_engine import american
from finq_engine.american import AmericanOptionParams, american_option
from finq_engine.context import NullContext
from finq_engine.errors import CalculationError, Cancelled
from finq_engine.jsonsafe import to_json

ql = pytest.importorskip("QuantLib")

MARKET = {"spot": 100.0, "strike": 100.0, "maturity": 1.0, "rate": 0.05, "volatility": 0.2}


def run(ctx: NullContext | None = None, /, **params: Any) -> dict[str, Any]:
    merged = {**MARKET, "option_type": "put", **params}
    return american_option(AmericanOptionParams(**merged), ctx or NullContext())


def quantlib_american(
    kind: str,
    s: float,
    k: float,
    t_days: int,
    r: float,
    q: float,
    v: float,
    engine: str,
    steps: int = 2000,
) -> float:
    today = ql.Date(2, 1, 2025)
    ql.Settings.instance().evaluationDate = today
    dc = ql.Actual365Fixed()
    option = ql.VanillaOption(
        ql.PlainVanillaPayoff(ql.Option.Call if kind == "call" else ql.Option.Put, k),
        ql.AmericanExercise(today, today + t_days),
    )
    process = ql.BlackScholesMertonProcess(
        ql.QuoteHandle(ql.SimpleQuote(s)),
        ql.YieldTermStructureHandle(ql.FlatForward(today, q, dc)),
        ql.YieldTermStructureHandle(ql.FlatForward(today, r, dc)),
        ql.BlackVolTermStructureHandle(ql.BlackConstantVol(today, ql.NullCalendar(), v, dc)),
    )
    if engine == "fd":
        option.setPricingEngine(ql.FdBlackScholesVanillaEngine(process, 2000, 2000))
    else:
        option.setPricingEngine(ql.BinomialVanillaEngine(process, "crr", steps))
    return float(option.NPV())


CASES = [
    ("put", 100, 100, 365, 0.05, 0.0, 0.2),
    ("put", 90, 100, 182, 0.03, 0.01, 0.35),
    ("put", 110, 100, 730, 0.08, 0.0, 0.25),
    ("call", 100, 95, 365, 0.03, 0.06, 0.3),
    ("call", 120, 100, 548, 0.02, 0.04, 0.15),
]


@pytest.mark.parametrize(("kind", "s", "k", "days", "r", "q", "v"), CASES)
def test_the_tree_agrees_with_a_fine_finite_difference_solution_to_1e_3(
    kind: str, s: float, k: float, days: int, r: float, q: float, v: float
) -> None:
    out = run(
        spot=s,
        strike=k,
        maturity=days / 365,
        rate=r,
        dividend_yield=q,
        volatility=v,
        option_type=kind,
        steps=2000,
    )
    reference = quantlib_american(kind, s, k, days, r, q, v, "fd")
    assert out["price"] == pytest.approx(reference, rel=1e-3)


@pytest.mark.parametrize(("kind", "s", "k", "days", "r", "q", "v"), CASES[:3])
def test_the_tree_is_quantlibs_crr_tree(
    kind: str, s: float, k: float, days: int, r: float, q: float, v: float
) -> None:
    out = run(
        spot=s,
        strike=k,
        maturity=days / 365,
        rate=r,
        dividend_yield=q,
        volatility=v,
        option_type=kind,
        steps=801,
    )
    reference = quantlib_american(kind, s, k, days, r, q, v, "crr", steps=801)
    assert out["price"] == pytest.approx(reference, rel=1e-4)


def test_textbook_american_put() -> None:
    # S = K = 100, r = 5%, sigma = 20%, T = 1: 6.0904 (e.g. Hull; a 10,000-step tree).
    assert run(steps=5000)["price"] == pytest.approx(6.0904, abs=5e-4)


def test_european_tree_converges_to_black_scholes() -> None:
    out = run(exercise="european", steps=4000)
    assert out["price"] == pytest.approx(out["european_price"], rel=1e-3)
    assert out["early_exercise_premium"] == 0.0


def test_american_call_without_dividends_equals_the_european_call() -> None:
    for rate in (0.0, 0.03, 0.1):
        out = run(option_type="call", rate=rate, steps=1500)
        assert out["price"] == out["european_tree_price"]
        assert out["early_exercise_premium"] == 0.0
        assert out["exercise_boundary"]["time"] == []
    lsm = run(option_type="call", method="lsm", paths=100_000, seed=3)
    assert lsm["early_exercise_premium"] == 0.0
    assert abs(lsm["price"] - lsm["european_price"]) < 4 * lsm["std_error"]


def test_the_early_exercise_premium_is_never_negative() -> None:
    rng = np.random.default_rng(9)
    for _ in range(40):
        out = run(
            spot=float(rng.uniform(50, 150)),
            strike=100.0,
            maturity=float(rng.uniform(0.05, 3)),
            rate=float(rng.uniform(-0.02, 0.1)),
            dividend_yield=float(rng.uniform(0, 0.08)),
            volatility=float(rng.uniform(0.05, 0.8)),
            option_type=str(rng.choice(["call", "put"])),
            steps=300,
        )
        assert out["early_exercise_premium"] >= 0.0
        assert out["price"] >= out["european_tree_price"]


def test_tree_greeks_are_close_to_black_scholes_for_a_european() -> None:
    out = run(exercise="european", steps=4000)
    d1 = (math.log(1.0) + (0.05 + 0.02) * 1.0) / 0.2
    assert out["delta"] == pytest.approx(-0.5 * math.erfc(d1 / math.sqrt(2)), abs=1e-3)


def test_the_put_exercise_boundary_rises_towards_the_strike() -> None:
    boundary = run(steps=2000)["exercise_boundary"]
    t, s = np.asarray(boundary["time"]), np.asarray(boundary["spot"])
    assert t.size > 10 and (np.diff(t) > 0).all()
    assert (s < 100).all() and s[-1] > s[0]  # later, exercise starts closer to the strike


@pytest.mark.parametrize(("kind", "s", "k", "days", "r", "q", "v"), CASES[:4])
def test_lsm_is_within_its_standard_errors_and_low_bias_of_the_tree(
    kind: str, s: float, k: float, days: int, r: float, q: float, v: float
) -> None:
    common = dict(
        spot=s,
        strike=k,
        maturity=days / 365,
        rate=r,
        dividend_yield=q,
        volatility=v,
        option_type=kind,
    )
    tree = run(**common, steps=2000)["price"]
    mc = run(**common, method="lsm", paths=100_000, seed=11)
    se = mc["std_error"]
    assert 0 < se < 0.01 * tree
    assert tree - 4 * se - 0.01 * tree <= mc["price"] <= tree + 4 * se
    assert mc["ci95_low"] < mc["price"] < mc["ci95_high"]


def test_lsm_runs_in_chunks_with_progress_cancel_and_a_reproducible_seed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(american, "CHUNK_BYTES", 50 * 8 * 2 * 5000)  # 5,000 pairs a chunk
    ctx = NullContext()
    first = run(ctx, method="lsm", paths=40_000, seed=5)
    assert len(ctx.calls) >= 1 + 4 and ctx.calls[-1] == 1.0
    assert ctx.calls == sorted(ctx.calls)
    assert run(method="lsm", paths=40_000, seed=5)["price"] == first["price"]
    with pytest.raises(Cancelled):
        run(NullContext(cancel_after=2), method="lsm", paths=40_000, seed=5)


def test_too_few_steps_for_the_drift_is_a_calculation_error() -> None:
    with pytest.raises(CalculationError, match="more steps"):
        run(rate=0.9, volatility=0.05, steps=1)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"spot": 0}, "spot"),
        ({"option_type": "straddle"}, "option_type"),
        ({"exercise": "bermudan"}, "exercise"),
        ({"method": "pde"}, "method"),
        ({"steps": 0}, "steps"),
        ({"steps": 20_001}, "steps"),
        ({"paths": 1001}, "paths"),
        ({"exercise_dates": 100, "regression_paths": 200_000}, "regression_paths"),
    ],
)
def test_bad_inputs_name_the_field(params: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        AmericanOptionParams(**{**MARKET, "option_type": "put", **params})
    assert {e["loc"][0] for e in info.value.errors()} == {field}


def test_a_tree_of_one_or_two_steps_prices_and_leaves_what_it_cannot_measure_null() -> None:
    one = to_json(run(steps=1))
    assert one["price"] > 0 and one["delta"] is None and one["gamma"] is None
    two = to_json(run(steps=2))
    assert two["delta"] is not None and two["gamma"] is not None
