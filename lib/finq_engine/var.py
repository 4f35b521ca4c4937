"""Portfolio Value-at-Risk and Conditional VaR (expected shortfall), three ways.

* parametric: portfolio returns are normal with mean w.mu and variance w'Sigma w (daily
  figures scaled by the horizon h: mean x h, covariance x h); VaR and CVaR are closed form.
* monte_carlo: the same model, simulated. Asset returns are mu h + F z with F F' = Sigma h
  (F from an eigendecomposition, so singular but positive semi-definite matrices work and only
  the non-degenerate factors are drawn). Only the portfolio P&L w'(mu h + F z) is kept, one
  float per scenario; the normals are drawn in chunks with per-chunk seeded streams. Under
  this normal model the P&L is itself normal, so the simulation converges to the parametric
  figures: it is the cross-check, and the path to non-linear positions later.
* historical: the portfolio's P&L on each observed day; the one-day figures are scaled by
  sqrt(h) (the usual square-root-of-time rule).

Weights are fractions of `portfolio_value` (negative for short positions; they need not sum
to 1). `var` is the loss at the (1 - confidence) quantile of P&L and `cvar` the mean loss at
or beyond it, both as positive amounts of money (a negative VaR means even that quantile is a
gain). Sample quantiles use NumPy's default linear interpolation.
"""

import math
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from finq_engine.context import RunContext, check_cancelled
from finq_engine.errors import CalculationError
from finq_engine.stats import FloatArray, norm_pdf, norm_ppf
from finq_engine.summaries import histogram

MAX_ASSETS = 1000
MAX_RETURN_CELLS = 1_000_000
MIN_HISTORY_DAYS = 10
MAX_SIMULATIONS = 5_000_000
CHUNK_BYTES = 32 * 2**20
SYMMETRY_RTOL = 1e-8
PSD_RTOL = 1e-10

Method = Literal["parametric", "monte_carlo", "historical"]
Weight = Annotated[float, Field(ge=-1e6, le=1e6)]
DailyReturn = Annotated[float, Field(ge=-1, le=10)]
Covariance = Annotated[float, Field(ge=-100, le=100)]
_MODEL_METHODS = ("parametric", "monte_carlo")


def _weights_count(info: ValidationInfo) -> int | None:
    weights = info.data.get("weights")
    return len(weights) if weights is not None else None


def _required_for(value: Any, info: ValidationInfo, methods: tuple[str, ...]) -> bool:
    """True when the field must be checked; raise when it is missing or not applicable."""
    method = info.data.get("method")
    if method is None:  # method itself was invalid; that error is enough
        return False
    if method in methods:
        if value is None:
            raise ValueError(f"required for method {method}")
        return True
    if value is not None:
        raise ValueError(f"only used by method {' or '.join(methods)}, not {method}")
    return False


class PortfolioVarParams(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    weights: list[Weight] = Field(
        min_length=1,
        max_length=MAX_ASSETS,
        description="Weight of each asset as a fraction of portfolio_value (negative = short).",
    )
    portfolio_value: float = Field(gt=0, le=1e15, description="Portfolio value in money.")
    confidence: float = Field(default=0.99, ge=0.5, le=0.9999, description="VaR confidence.")
    horizon_days: int = Field(default=1, ge=1, le=250, description="Horizon in trading days.")
    method: Method = Field(description="parametric, monte_carlo or historical.")
    expected_returns: list[DailyReturn] | None = Field(
        default=None,
        validate_default=True,
        max_length=MAX_ASSETS,
        description="Daily expected return per asset (parametric and monte_carlo).",
    )
    covariance: list[Annotated[list[Covariance], Field(max_length=MAX_ASSETS)]] | None = Field(
        default=None,
        validate_default=True,
        max_length=MAX_ASSETS,
        description="Daily covariance matrix of asset returns, n x n, symmetric positive "
        "semi-definite (parametric and monte_carlo).",
    )
    returns: list[Annotated[list[DailyReturn], Field(max_length=MAX_ASSETS)]] | None = Field(
        default=None,
        validate_default=True,
        max_length=MAX_RETURN_CELLS,
        description="Historical daily returns: one row per day, one column per asset "
        f"(historical; at least {MIN_HISTORY_DAYS} rows, at most {MAX_RETURN_CELLS:,} cells).",
    )
    simulations: int = Field(
        default=100_000, ge=1000, le=MAX_SIMULATIONS, description="Monte Carlo scenarios."
    )
    seed: int | None = Field(
        default=None, ge=0, le=2**63 - 1, description="Seed for reproducible Monte Carlo."
    )

    @field_validator("expected_returns")
    @classmethod
    def _check_expected_returns(
        cls, value: list[float] | None, info: ValidationInfo
    ) -> list[float] | None:
        if not _required_for(value, info, _MODEL_METHODS):
            return value
        assert value is not None
        n = _weights_count(info)
        if n is not None and len(value) != n:
            raise ValueError(f"has {len(value)} entries but weights has {n}")
        return value

    @field_validator("covariance")
    @classmethod
    def _check_covariance(
        cls, value: list[list[float]] | None, info: ValidationInfo
    ) -> list[list[float]] | None:
        if not _required_for(value, info, _MODEL_METHODS):
            return value
        assert value is not None
        n = _weights_count(info)
        if n is not None and len(value) != n:
            raise ValueError(f"has {len(value)} rows but weights has {n} entries")
        if any(len(row) != len(value) for row in value):
            raise ValueError("must be a square matrix")
        cov = np.asarray(value, dtype=np.float64)
        scale = float(np.abs(cov).max(initial=0.0))
        if np.abs(cov - cov.T).max(initial=0.0) > SYMMETRY_RTOL * scale:
            raise ValueError("must be symmetric")
        eig = np.linalg.eigvalsh(cov)
        if eig.size and eig[0] < -PSD_RTOL * np.abs(eig).max():
            raise ValueError(f"must be positive semi-definite (smallest eigenvalue {eig[0]:.3g})")
        return value

    @field_validator("returns")
    @classmethod
    def _check_returns(
        cls, value: list[list[float]] | None, info: ValidationInfo
    ) -> list[list[float]] | None:
        if not _required_for(value, info, ("historical",)):
            return value
        assert value is not None
        if len(value) < MIN_HISTORY_DAYS:
            raise ValueError(f"needs at least {MIN_HISTORY_DAYS} rows (days)")
        n = _weights_count(info)
        if n is not None and any(len(row) != n for row in value):
            raise ValueError(f"every row must have one return per asset ({n})")
        if len(value) * len(value[0]) > MAX_RETURN_CELLS:
            raise ValueError(f"at most {MAX_RETURN_CELLS:,} cells")
        return value


def tail_measures(pnl: FloatArray, confidence: float) -> tuple[float, float]:
    """VaR and CVaR (positive losses) of a sample of P&L (also used by the CSV analytics)."""
    losses = -pnl
    var = float(np.quantile(losses, confidence))
    cvar = float(losses[losses >= var].mean())
    return var, cvar


def _parametric(p: PortfolioVarParams) -> tuple[float, float]:
    w = np.asarray(p.weights)
    h = p.horizon_days
    mean = float(w @ np.asarray(p.expected_returns)) * h
    variance = float(w @ np.asarray(p.covariance) @ w) * h
    sd = math.sqrt(max(variance, 0.0))
    z = float(norm_ppf(p.confidence))
    tail = float(norm_pdf(z)) / (1.0 - p.confidence)
    return p.portfolio_value * (z * sd - mean), p.portfolio_value * (tail * sd - mean)


def _factor(cov: FloatArray) -> FloatArray:
    """F with F F' = cov, dropping numerically null directions (robust when only PSD)."""
    eig, vec = np.linalg.eigh(cov)
    keep = eig > max(float(eig[-1]), 0.0) * cov.shape[0] * np.finfo(np.float64).eps
    factor: FloatArray = vec[:, keep] * np.sqrt(eig[keep])
    return factor


def _monte_carlo(p: PortfolioVarParams, ctx: RunContext) -> tuple[float, float, dict[str, Any]]:
    w = np.asarray(p.weights)
    h = p.horizon_days
    mean = float(w @ np.asarray(p.expected_returns)) * h
    loading = w @ _factor(np.asarray(p.covariance) * h)  # portfolio exposure to each factor
    k = max(loading.size, 1)
    n = p.simulations
    chunk = max(1, min(n, CHUNK_BYTES // (8 * k)))
    n_chunks = math.ceil(n / chunk)
    children = np.random.SeedSequence(p.seed).spawn(n_chunks)
    pnl = np.empty(n)
    buffer = np.empty(chunk * k)
    for i, child in enumerate(children):
        check_cancelled(ctx)
        start = i * chunk
        m = min(chunk, n - start)
        z = buffer[: m * k].reshape(m, k)
        np.random.Generator(np.random.PCG64(child)).standard_normal(out=z)
        if loading.size:
            # einsum, not `@`: BLAS sums differently with its thread count, and a seeded run
            # must be bit-identical whatever the worker's BLAS settings.
            np.einsum("ij,j->i", z, loading, out=pnl[start : start + m])
        else:
            pnl[start : start + m] = 0.0
        ctx.progress((start + m) / n, f"{start + m:,} of {n:,} scenarios")
    pnl += mean
    pnl *= p.portfolio_value
    var, cvar = tail_measures(pnl, p.confidence)
    return var, cvar, histogram(-pnl)


def _historical(p: PortfolioVarParams) -> tuple[float, float, dict[str, Any]]:
    pnl = p.portfolio_value * (np.asarray(p.returns) @ np.asarray(p.weights))
    var, cvar = tail_measures(pnl, p.confidence)
    scale = math.sqrt(p.horizon_days)
    return var * scale, cvar * scale, histogram(-pnl * scale)


def portfolio_var(p: PortfolioVarParams, ctx: RunContext) -> dict[str, Any]:
    # The simulated and historical methods also return a bounded histogram of the losses
    # (for the chart; the sample itself is too large to keep). The parametric one has none:
    # its loss distribution is the normal given by the parameters.
    losses: dict[str, Any] | None = None
    if p.method == "monte_carlo":
        var, cvar, losses = _monte_carlo(p, ctx)  # reports progress per chunk
    elif p.method == "historical":
        var, cvar, losses = _historical(p)
        ctx.progress(1.0)
    else:
        var, cvar = _parametric(p)
        ctx.progress(1.0)
    if not (math.isfinite(var) and math.isfinite(cvar)):
        raise CalculationError("VaR is not finite; inputs are too extreme")
    return {
        "var": var,
        "cvar": cvar,
        "method": p.method,
        "confidence": p.confidence,
        "horizon_days": p.horizon_days,
        "loss_histogram": losses,
    }
