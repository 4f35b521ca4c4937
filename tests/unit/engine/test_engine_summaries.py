"""The bounded chart summaries results carry: Monte Carlo payoff histogram and convergence,
VaR loss histograms. They must describe the run (counts add up, the curve ends at the price)
without changing it, and stay small whatever the run's size."""

from typing import Any

import numpy as np
import pytest

from finq_engine.context import NullContext
from finq_engine.monte_carlo import HISTOGRAM_SAMPLES, MonteCarloOptionParams, monte_carlo_option
from finq_engine.summaries import MAX_CURVE_POINTS, histogram, thin
from finq_engine.var import PortfolioVarParams, portfolio_var

BASE: dict[str, Any] = {
    "spot": 100,
    "strike": 100,
    "maturity": 1,
    "rate": 0.03,
    "volatility": 0.2,
    "option_type": "call",
    "seed": 9,
}


def mc(**params: Any) -> dict[str, Any]:
    return monte_carlo_option(MonteCarloOptionParams(**{**BASE, **params}), NullContext())


@pytest.mark.parametrize(
    "params",
    [
        {"style": "european", "paths": 2_000_000},
        {"style": "asian_arithmetic", "paths": 300_000, "steps": 64},
        {
            "style": "barrier_up_and_out",
            "barrier": 130,
            "paths": 20_000,
            "steps": 12,
            "antithetic": False,
        },
    ],
)
def test_monte_carlo_summaries_are_bounded_and_consistent(params: dict[str, Any]) -> None:
    result = mc(**params)
    hist, conv = result["payoff_histogram"], result["convergence"]
    samples = params["paths"] // (2 if params.get("antithetic", True) else 1)
    assert 0 < hist["sampled"] <= min(samples, HISTOGRAM_SAMPLES + 64)
    assert sum(hist["counts"]) == hist["sampled"]
    assert len(hist["edges"]) == len(hist["counts"]) + 1 <= 51
    assert hist["edges"][0] >= 0.0  # payoffs are never negative
    # The histogram's mean is the price, up to binning and subsampling.
    edges = np.asarray(hist["edges"])
    centres = (edges[1:] + edges[:-1]) / 2
    mean = float(np.dot(centres, hist["counts"]) / hist["sampled"])
    assert mean == pytest.approx(result["price"], rel=0.1)
    assert 2 <= len(conv["paths"]) <= MAX_CURVE_POINTS
    assert conv["paths"] == sorted(conv["paths"]) and conv["paths"][-1] == params["paths"]
    assert conv["price"][-1] == pytest.approx(result["price"], rel=1e-9)


def test_summaries_do_not_change_the_seeded_price() -> None:
    a, b = (
        mc(style="asian_geometric", paths=50_000, steps=10),
        mc(style="asian_geometric", paths=50_000, steps=10),
    )
    assert a == b


def test_histogram_and_thin_helpers() -> None:
    out = histogram(np.array([1.0, 2.0, 2.0, 3.0, np.nan]), bins=2)
    assert out == {"edges": [1.0, 2.0, 3.0], "counts": [1, 3]}
    assert histogram(np.array([5.0, 5.0]))["counts"][0] == 2
    assert histogram(np.array([np.inf])) == {"edges": [], "counts": []}
    idx = thin(10_000, 100)
    assert len(idx) <= 100 and idx[0] == 0 and idx[-1] == 9_999
    assert thin(5, 100).tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("method", ["monte_carlo", "historical"])
def test_var_loss_histogram_covers_every_scenario(method: str) -> None:
    rng = np.random.default_rng(2)
    params: dict[str, Any] = {
        "weights": [0.6, 0.4],
        "portfolio_value": 1000.0,
        "method": method,
        "confidence": 0.95,
        "horizon_days": 1,
    }
    if method == "historical":
        params["returns"] = rng.normal(0, 0.01, (300, 2)).tolist()
        n = 300
    else:
        params.update(
            expected_returns=[0.0, 0.0],
            covariance=[[1e-4, 0], [0, 4e-4]],
            simulations=20_000,
            seed=1,
        )
        n = 20_000
    result = portfolio_var(PortfolioVarParams(**params), NullContext())
    hist = result["loss_histogram"]
    assert sum(hist["counts"]) == n
    assert hist["edges"][0] <= result["var"] <= hist["edges"][-1]


def test_parametric_var_has_no_histogram() -> None:
    params = PortfolioVarParams(
        weights=[1.0],
        portfolio_value=1.0,
        method="parametric",
        expected_returns=[0.0],
        covariance=[[1e-4]],
    )
    assert portfolio_var(params, NullContext())["loss_histogram"] is None
