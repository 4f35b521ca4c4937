"""The mix: the one table of what the simulated users submit, and its inputs."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

# ---------------------------------------------------------------------------------------------
# Inputs of the mix (fixed, generated once, deterministic).
_rng = random.Random(20240601)


def _ladder(low: float, high: float, n: int) -> list[float]:
    """n strikes evenly spaced from low to high (a strike ladder / smile slice)."""
    return [round(low + (high - low) * i / (n - 1), 4) for i in range(n)]


def _projects(scenarios: int, periods: int) -> list[list[float]]:
    """Capital-budgeting scenarios: an outlay, then uncertain yearly inflows."""
    return [
        [-round(_rng.uniform(800, 1200), 2)]
        + [round(_rng.uniform(60, 260), 2) for _ in range(periods - 1)]
        for _ in range(scenarios)
    ]


def _norm_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2))


def _option_chain(quotes: int) -> dict[str, Any]:
    """A quoted option chain: mid prices of calls and puts across strikes (a smile)."""
    strikes = _ladder(60, 140, quotes)
    kinds = ["put" if k < 100 else "call" for k in strikes]
    # Prices from a smile sigma(K) = 0.2 + 0.1 (ln(K/100))^2 at T = 0.5, r = 3%: fixed numbers.
    prices = []
    for k, kind in zip(strikes, kinds, strict=True):
        v, t, r = 0.2 + 0.1 * math.log(k / 100) ** 2, 0.5, 0.03
        d1 = (math.log(100 / k) + (r + v * v / 2) * t) / (v * math.sqrt(t))
        d2 = d1 - v * math.sqrt(t)
        call = 100 * _norm_cdf(d1) - k * math.exp(-r * t) * _norm_cdf(d2)
        prices.append(round(call if kind == "call" else call - 100 + k * math.exp(-r * t), 6))
    return {
        "price": prices,
        "spot": 100.0,
        "strike": strikes,
        "maturity": 0.5,
        "rate": 0.03,
        "option_type": kinds,
    }


def _dated_book(bonds: int) -> dict[str, Any]:
    """A book of dated bonds: settlement today, maturities over 30 years, clean prices."""
    counts = ["30/360 US", "30E/360", "ACT/360", "ACT/365F", "ACT/ACT ICMA"]
    return {
        "settlement": "2025-06-16",
        "maturity": [f"{2026 + i % 30}-{1 + i % 12:02d}-15" for i in range(bonds)],
        "coupon_rate": [round(0.01 + 0.0002 * i, 4) for i in range(bonds)],
        "frequency": [(1, 2, 4, 12)[i % 4] for i in range(bonds)],
        "day_count": [counts[i % 5] for i in range(bonds)],
        "price": [round(_rng.uniform(85, 110), 3) for _ in range(bonds)],
    }


def _covariance(n: int, vol: float = 0.012, corr: float = 0.3) -> list[list[float]]:
    """Daily covariance of n assets with a common correlation (positive definite)."""
    return [[vol * vol * (1.0 if i == j else corr) for j in range(n)] for i in range(n)]


# ---------------------------------------------------------------------------------------------
# THE MIX: the one table to edit. `weight`: share of submissions. `params`: the request, sizes
# included. `cpu_ms`: cost of one task on one core (validation + calculation + JSON), measured
# in-process with BLAS threads 1 by `python loadtest/calibrate.py` (re-run it after editing a
# row; it prints the weighted mean, which is kept near 100 ms). A `seed` is replaced by a
# random one at each submission.
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Mix:
    type: str
    weight: int
    cpu_ms: float
    size: str
    params: dict[str, Any] = field(repr=False)


MIX: tuple[Mix, ...] = (
    #   type                   weight cpu_ms  size
    Mix(
        "loan_amortization",
        25,
        1.1,
        "30-year monthly mortgage, 360-row schedule",
        {"principal": 320_000, "annual_rate": 0.0475, "years": 30},
    ),
    Mix(
        "bond_analytics",
        20,
        0.05,
        "30-year semi-annual bond priced from its yield",
        {"face_value": 1000, "coupon_rate": 0.045, "maturity": 30, "frequency": 2, "yield": 0.0515},
    ),
    Mix(
        "dated_bond_analytics",
        5,
        9.5,
        "yields of 200 dated bonds from clean prices (5 day counts)",
        _dated_book(200),
    ),
    Mix(
        "cash_flow_analysis",
        15,
        3.5,
        "NPV/IRR/MIRR/payback of 100 scenarios x 25 years",
        {
            "cash_flows": _projects(100, 25),
            "discount_rate": 0.08,
            "finance_rate": 0.06,
            "reinvest_rate": 0.07,
        },
    ),
    Mix(
        "black_scholes",
        15,
        0.3,
        "price + Greeks of a 500-strike ladder",
        {
            "spot": 100.0,
            "strike": _ladder(50, 150, 500),
            "maturity": 0.5,
            "rate": 0.03,
            "volatility": 0.22,
            "dividend_yield": 0.01,
            "option_type": "call",
        },
    ),
    Mix(
        "implied_volatility",
        5,
        3.3,
        "implied volatilities of a 2,000-quote chain (calls and puts)",
        _option_chain(2000),
    ),
    Mix(
        "american_option",
        5,
        15.4,
        "American put on a 1,000-step binomial tree (and its European twin)",
        {
            "spot": 100,
            "strike": 105,
            "maturity": 1,
            "rate": 0.04,
            "volatility": 0.25,
            "dividend_yield": 0.01,
            "option_type": "put",
            "method": "binomial",
            "steps": 1000,
        },
    ),
    Mix(
        "portfolio_var",
        10,
        120.0,
        "Monte Carlo VaR/CVaR, 40 assets, 250k scenarios",
        {
            "weights": [1 / 40] * 40,
            "portfolio_value": 25_000_000,
            "confidence": 0.99,
            "horizon_days": 10,
            "method": "monte_carlo",
            "expected_returns": [0.0002] * 40,
            "covariance": _covariance(40),
            "simulations": 250_000,
            "seed": 1,
        },
    ),
    Mix(
        "monte_carlo_option",
        15,
        600.0,
        "arithmetic Asian call, 375k paths x 252 steps",
        {
            "spot": 100,
            "strike": 105,
            "maturity": 1,
            "rate": 0.03,
            "volatility": 0.2,
            "option_type": "call",
            "style": "asian_arithmetic",
            "paths": 375_000,
            "steps": 252,
            "seed": 1,
        },
    ),
)


def mean_cpu_ms(mix: tuple[Mix, ...] = MIX) -> float:
    """Weighted mean cost of one task of the mix, from the table's `cpu_ms`."""
    return sum(m.weight * m.cpu_ms for m in mix) / sum(m.weight for m in mix)


def request_params(entry: Mix) -> dict[str, Any]:
    """The params of one submission: the row's, with a fresh seed where the type takes one
    (so no two simulations are the same, as with real users)."""
    if "seed" not in entry.params:
        return entry.params
    return {**entry.params, "seed": random.randrange(2**62)}
