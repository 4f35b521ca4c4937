"""Portfolio analytics on a table of daily prices (an uploaded CSV), vectorised with NumPy.

Per asset, from simple daily returns r_t = P_t / P_{t-1} - 1:

* annualised return: mean(r) x 252 (arithmetic, the convention that goes with the Sharpe ratio);
* annualised volatility: sample standard deviation (ddof=1) x sqrt(252);
* Sharpe ratio: (annualised return - risk_free_rate) / annualised volatility (null when the
  volatility is zero);
* maximum drawdown: the largest fall from a running peak, max_t (1 - P_t / max_{s<=t} P_s),
  as a positive fraction;
* total return: P_last / P_first - 1.

The correlation matrix is that of the daily returns. The portfolio holds constant `weights`
(rebalanced daily): its daily return is r_t . w. Its one-day historical VaR and CVaR, as
fractions of the portfolio's value, follow `finq_engine.var`'s conventions: VaR is the
`confidence` quantile of the losses -r_t . w (NumPy's linear interpolation), CVaR the mean of
the losses at or beyond it.

The engine never reads the database: the worker resolves the task's `upload_id` to a
`PriceTable` (checking that the upload belongs to the task's owner) and passes it in.
"""

import math
import uuid
from collections.abc import Sequence
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from finq_engine.context import RunContext, check_cancelled
from finq_engine.errors import CalculationError
from finq_engine.prices import PriceTable
from finq_engine.stats import FloatArray
from finq_engine.var import tail_measures

TRADING_DAYS = 252
MAX_ASSETS = 200
Weight = Annotated[float, Field(ge=-1e6, le=1e6)]


class CsvPortfolioParams(BaseModel):
    """Per-asset return, volatility, Sharpe ratio and drawdown, correlations, and the
    portfolio's historical VaR/CVaR, from a CSV of daily prices uploaded beforehand."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    upload_id: uuid.UUID = Field(
        description="Id of one of your uploads (POST /api/v1/uploads): daily prices, one "
        "column per asset."
    )
    weights: list[Weight] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_ASSETS,
        description="Portfolio weights, one per asset in the upload's column order (fractions "
        "of the portfolio, negative for shorts). Default: equal weights.",
    )
    risk_free_rate: float = Field(
        default=0.0, ge=-1, le=1, description="Annual risk-free rate for the Sharpe ratio."
    )
    confidence: float = Field(
        default=0.95, ge=0.5, le=0.9999, description="Confidence of the historical VaR/CVaR."
    )


def check_against_upload(p: CsvPortfolioParams, n_assets: int) -> list[tuple[str, str]]:
    """Problems of `p` given the upload's shape, as (field, message): empty when it fits.

    The API calls this at submission (422 on the field) and the engine again before computing.
    """
    problems = []
    if p.weights is not None:
        if len(p.weights) != n_assets:
            problems.append(
                ("weights", f"has {len(p.weights)} entries but the upload has {n_assets} assets")
            )
        elif not any(p.weights):
            problems.append(("weights", "must not all be zero"))
    return problems


def max_drawdown(values: FloatArray) -> FloatArray:
    """Largest fall from a running peak, column by column, as a positive fraction."""
    peaks = np.maximum.accumulate(values, axis=0)
    out: FloatArray = (1.0 - values / peaks).max(axis=0)
    return out


def drawdown_curve(values: FloatArray) -> FloatArray:
    """Fall from the running peak at each date (0 at a new high)."""
    out: FloatArray = 1.0 - values / np.maximum.accumulate(values, axis=0)
    return out


def portfolio_analytics(
    prices: FloatArray,
    weights: FloatArray,
    risk_free_rate: float,
    confidence: float,
    ctx: RunContext,
    assets: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The analytics of a (dates x assets) matrix of positive prices; see the module doc."""
    n_rows, n_assets = prices.shape
    names = list(assets) if assets is not None else [f"asset {i + 1}" for i in range(n_assets)]
    if n_rows < 3:
        raise CalculationError("at least 3 dates are needed")
    with np.errstate(divide="ignore", invalid="ignore"):
        returns = prices[1:] / prices[:-1] - 1.0
        ctx.progress(0.2, "returns")
        check_cancelled(ctx)
        annual_return = returns.mean(axis=0) * TRADING_DAYS
        annual_vol = returns.std(axis=0, ddof=1) * math.sqrt(TRADING_DAYS)
        sharpe = np.where(annual_vol > 0, (annual_return - risk_free_rate) / annual_vol, np.nan)
        drawdown = max_drawdown(prices)
        total = prices[-1] / prices[0] - 1.0
        ctx.progress(0.4, "per-asset statistics")
        check_cancelled(ctx)
        corr = np.atleast_2d(np.corrcoef(returns, rowvar=False))
        ctx.progress(0.7, "correlations")
        check_cancelled(ctx)
        port = returns @ weights
        value = np.concatenate(([1.0], np.cumprod(1.0 + port)))
        p_return = float(port.mean()) * TRADING_DAYS
        p_vol = float(port.std(ddof=1)) * math.sqrt(TRADING_DAYS)
        p_sharpe = (p_return - risk_free_rate) / p_vol if p_vol > 0 else math.nan
        # A leveraged or short portfolio can lose everything: the curve stops meaning a
        # drawdown once the value is not positive, so the drawdown is then 100 %.
        p_drawdown = float(max_drawdown(value)) if (value > 0).all() else 1.0
        var, cvar = tail_measures(port, confidence)
    ctx.progress(1.0, "portfolio")
    return {
        "assets": names,
        "observations": int(n_rows - 1),
        "weights": weights,
        "per_asset": [
            {
                "asset": a,
                "annual_return": r,
                "annual_volatility": v,
                "sharpe": s,
                "max_drawdown": d,
                "total_return": t,
            }
            for a, r, v, s, d, t in zip(
                names,
                annual_return.tolist(),
                annual_vol.tolist(),
                sharpe.tolist(),
                drawdown.tolist(),
                total.tolist(),
                strict=True,
            )
        ],
        "correlation": corr,
        "portfolio_annual_return": p_return,
        "portfolio_annual_volatility": p_vol,
        "portfolio_sharpe": p_sharpe,
        "portfolio_max_drawdown": p_drawdown,
        "var": var,
        "cvar": cvar,
        "confidence": confidence,
        "risk_free_rate": risk_free_rate,
    }


def resolve_weights(p: CsvPortfolioParams, n_assets: int) -> FloatArray:
    if p.weights is None:
        return np.full(n_assets, 1.0 / n_assets)
    return np.asarray(p.weights, dtype=np.float64)


def csv_portfolio_analytics(
    p: CsvPortfolioParams, ctx: RunContext, table: PriceTable
) -> dict[str, Any]:
    problems = check_against_upload(p, len(table.assets))
    if problems:
        raise CalculationError("; ".join(f"{field}: {msg}" for field, msg in problems))
    weights = resolve_weights(p, len(table.assets))
    out = portfolio_analytics(
        table.prices, weights, p.risk_free_rate, p.confidence, ctx, table.assets
    )
    out["first_date"] = table.dates[0]
    out["last_date"] = table.dates[-1]
    return out
