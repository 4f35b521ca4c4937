"""Portfolio VaR: parametric against the normal formula (SciPy), Monte Carlo against
parametric, historical against an independent NumPy quantile."""

import math
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError
from scipy import stats

from finq_engine import var as var_module
from finq_engine.context import NullContext
from finq_engine.errors import Cancelled
from finq_engine.var import PortfolioVarParams, portfolio_var

WEIGHTS = [0.4, 0.35, 0.25]
MU = [0.0005, 0.0003, 0.0001]
VOLS = np.array([0.02, 0.015, 0.008])
CORR = np.array([[1.0, 0.6, 0.2], [0.6, 1.0, 0.3], [0.2, 0.3, 1.0]])
COV = (np.outer(VOLS, VOLS) * CORR).tolist()
VALUE = 2_500_000.0


def run(ctx: NullContext | None = None, /, **params: Any) -> dict[str, Any]:
    base = {"weights": WEIGHTS, "portfolio_value": VALUE}
    return portfolio_var(PortfolioVarParams(**{**base, **params}), ctx or NullContext())


def normal_reference(confidence: float, horizon: int) -> tuple[float, float]:
    w = np.array(WEIGHTS)
    mean = float(w @ MU) * horizon
    sd = math.sqrt(float(w @ np.array(COV) @ w) * horizon)
    dist = stats.norm(loc=mean, scale=sd)
    var = -dist.ppf(1 - confidence) * VALUE
    # Expected shortfall of a normal: mean loss beyond the quantile.
    z = stats.norm.ppf(confidence)
    cvar = (sd * stats.norm.pdf(z) / (1 - confidence) - mean) * VALUE
    return var, cvar


@pytest.mark.parametrize(("confidence", "horizon"), [(0.99, 1), (0.95, 10), (0.999, 250)])
def test_parametric_matches_normal_formula(confidence: float, horizon: int) -> None:
    out = run(
        method="parametric",
        expected_returns=MU,
        covariance=COV,
        confidence=confidence,
        horizon_days=horizon,
    )
    var, cvar = normal_reference(confidence, horizon)
    assert out["var"] == pytest.approx(var, rel=1e-12)
    assert out["cvar"] == pytest.approx(cvar, rel=1e-12)
    assert out["cvar"] > out["var"] > 0
    assert out == {**out, "method": "parametric", "confidence": confidence, "horizon_days": horizon}


def test_monte_carlo_agrees_with_parametric() -> None:
    # 200k scenarios: the 1% quantile's sampling error is ~0.4% of VaR; allow 2%.
    common = {"expected_returns": MU, "covariance": COV, "confidence": 0.99, "horizon_days": 5}
    mc = run(method="monte_carlo", simulations=200_000, seed=11, **common)
    exact = run(method="parametric", **common)
    assert mc["var"] == pytest.approx(exact["var"], rel=0.02)
    assert mc["cvar"] == pytest.approx(exact["cvar"], rel=0.02)


def test_monte_carlo_handles_singular_psd_covariance() -> None:
    # Asset 3 is an exact copy of asset 1: the covariance is PSD with a zero eigenvalue, which
    # a Cholesky factorisation would reject.
    v = np.array([0.02, 0.01])
    base = np.outer(v, v) * np.array([[1.0, 0.5], [0.5, 1.0]])
    cov = np.zeros((3, 3))
    idx = [0, 1, 0]
    cov[:, :] = base[np.ix_(idx, idx)]
    common = {
        "weights": [0.3, 0.4, 0.3],
        "expected_returns": [0.0, 0.0, 0.0],
        "covariance": cov.tolist(),
    }
    mc = run(method="monte_carlo", simulations=200_000, seed=5, **common)
    exact = run(method="parametric", **common)
    assert mc["var"] == pytest.approx(exact["var"], rel=0.02)


def test_monte_carlo_zero_covariance_is_the_mean() -> None:
    out = run(
        method="monte_carlo",
        expected_returns=[0.001, 0.001, 0.001],
        covariance=np.zeros((3, 3)).tolist(),
        simulations=1000,
    )
    assert out["var"] == pytest.approx(-0.001 * VALUE)
    assert out["cvar"] == pytest.approx(-0.001 * VALUE)


def test_monte_carlo_same_seed_identical() -> None:
    common = {"method": "monte_carlo", "expected_returns": MU, "covariance": COV}
    assert run(seed=3, simulations=5000, **common) == run(seed=3, simulations=5000, **common)


def test_monte_carlo_progress_per_chunk_and_cancel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(var_module, "CHUNK_BYTES", 8 * 3 * 1000)  # 1,000 scenarios per chunk
    common = {"method": "monte_carlo", "expected_returns": MU, "covariance": COV, "seed": 1}
    ctx = NullContext()
    run(ctx, simulations=4500, **common)
    assert len(ctx.calls) == 5 and ctx.calls[-1] == 1.0
    cancelling = NullContext(cancel_after=1)
    with pytest.raises(Cancelled):
        run(cancelling, simulations=4500, **common)
    assert len(cancelling.calls) == 1


def make_history(days: int = 750, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.multivariate_normal(MU, COV, size=days) + rng.standard_t(4, (days, 3)) * 0.002


@pytest.mark.parametrize("confidence", [0.95, 0.99, 0.975])
def test_historical_matches_numpy_quantile(confidence: float) -> None:
    history = make_history()
    out = run(method="historical", returns=history.tolist(), confidence=confidence)
    pnl = VALUE * (history @ np.array(WEIGHTS))
    expected_var = -np.quantile(pnl, 1 - confidence)
    losses = -pnl
    expected_cvar = losses[losses >= expected_var].mean()
    assert out["var"] == pytest.approx(expected_var, rel=1e-9)
    assert out["cvar"] == pytest.approx(expected_cvar, rel=1e-9)


def test_historical_scales_by_square_root_of_horizon() -> None:
    history = make_history().tolist()
    one = run(method="historical", returns=history)
    nine = run(method="historical", returns=history, horizon_days=9)
    assert nine["var"] == pytest.approx(3 * one["var"], rel=1e-12)
    assert nine["cvar"] == pytest.approx(3 * one["cvar"], rel=1e-12)


# --- validation --------------------------------------------------------------------------------


def error_fields(**params: Any) -> set[Any]:
    base = {"weights": WEIGHTS, "portfolio_value": VALUE}
    with pytest.raises(ValidationError) as info:
        PortfolioVarParams(**{**base, **params})
    return {e["loc"][0] for e in info.value.errors()}


def test_missing_fields_for_the_method_are_named() -> None:
    assert error_fields(method="parametric", covariance=COV) == {"expected_returns"}
    assert error_fields(method="monte_carlo", expected_returns=MU) == {"covariance"}
    assert error_fields(method="historical") == {"returns"}


def test_fields_of_another_method_are_rejected() -> None:
    history = make_history(20).tolist()
    assert error_fields(method="historical", returns=history, covariance=COV) == {"covariance"}
    assert error_fields(
        method="parametric", expected_returns=MU, covariance=COV, returns=history
    ) == {"returns"}


def test_non_psd_covariance_is_rejected() -> None:
    bad = np.outer(VOLS, VOLS) * np.array([[1, 0.9, -0.9], [0.9, 1, 0.9], [-0.9, 0.9, 1]])
    assert np.linalg.eigvalsh(bad)[0] < 0
    assert error_fields(method="parametric", expected_returns=MU, covariance=bad.tolist()) == {
        "covariance"
    }


def test_asymmetric_or_misshaped_covariance_is_rejected() -> None:
    asym = np.array(COV)
    asym[0, 1] *= 1.001
    assert error_fields(method="parametric", expected_returns=MU, covariance=asym.tolist()) == {
        "covariance"
    }
    assert error_fields(
        method="parametric", expected_returns=MU, covariance=[row[:2] for row in COV]
    ) == {"covariance"}
    assert error_fields(
        method="parametric", expected_returns=MU, covariance=np.eye(2).tolist()
    ) == {"covariance"}


def test_tiny_negative_eigenvalue_within_tolerance_is_accepted() -> None:
    v = np.array([1.0, 1.0, 1.0]) / math.sqrt(3)
    cov = 1e-4 * np.outer(v, v) - 1e-16 * np.eye(3)  # rank one, eigenvalue -1e-16 ~ round-off
    out = run(method="parametric", expected_returns=MU, covariance=cov.tolist())
    assert out["var"] > 0


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"expected_returns": MU[:2], "covariance": COV}, "expected_returns"),
        ({"expected_returns": [float("nan"), 0.0, 0.0], "covariance": COV}, "expected_returns"),
        ({"expected_returns": MU, "covariance": COV, "confidence": 0.3}, "confidence"),
        ({"expected_returns": MU, "covariance": COV, "confidence": 1.0}, "confidence"),
        ({"expected_returns": MU, "covariance": COV, "horizon_days": 0}, "horizon_days"),
        ({"expected_returns": MU, "covariance": COV, "horizon_days": 251}, "horizon_days"),
        ({"expected_returns": MU, "covariance": COV, "portfolio_value": 0}, "portfolio_value"),
        ({"expected_returns": MU, "covariance": COV, "weights": []}, "weights"),
        ({"expected_returns": MU, "covariance": COV, "weights": [0.1] * 1001}, "weights"),
    ],
)
def test_bad_parametric_inputs(params: dict[str, Any], field: str) -> None:
    assert field in error_fields(method="parametric", **params)


def test_bad_historical_inputs() -> None:
    history = make_history(20)
    assert error_fields(method="historical", returns=history[:9].tolist()) == {"returns"}
    assert error_fields(method="historical", returns=history[:, :2].tolist()) == {"returns"}
    too_many = np.zeros((1001, 1000)).tolist()
    assert error_fields(method="historical", weights=[0.001] * 1000, returns=too_many) == {
        "returns"
    }


def test_bad_monte_carlo_inputs() -> None:
    common = {"method": "monte_carlo", "expected_returns": MU, "covariance": COV}
    assert error_fields(simulations=5_000_001, **common) == {"simulations"}
    assert error_fields(simulations=10, **common) == {"simulations"}
