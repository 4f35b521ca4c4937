"""Implied volatility of European options from their prices, vectorised over quotes.

Every quote is reduced to the normalised price of an out-of-the-money call (Jäckel's
normalisation): with forward F = S e^{(r-q)T}, discount D = e^{-rT}, x = -|ln(F/K)| and
s = sigma sqrt(T), the undiscounted out-of-the-money price divided by sqrt(F K) is

    b(x, s) = e^{x/2} N(x/s + s/2) - e^{-x/2} N(x/s - s/2),   0 < b < e^{x/2},

increasing in s with derivative e^{x/2} phi(x/s + s/2). An in-the-money quote becomes its
out-of-the-money twin by put-call parity (c - p = D (F - K)), and a put with x > 0 is the call
with -x, so one solver serves calls and puts on both sides of the forward.

The solver is Newton's method, on b itself above b's inflection point and on 1 / ln b below
it (that keeps deep out-of-the-money quotes, whose prices span hundreds of orders of
magnitude, well scaled; see `solve_normalised`), starting at the inflection point and
safeguarded by a bracket [lo, hi] that every evaluation tightens: a Newton step
that leaves the bracket is replaced by bisection, so every quote converges (bisection alone
would need about 50 halvings). Quotes that have converged leave the working set. The
iteration stops when the step is below 1e-14 in s, so the volatility is as accurate as the
price determines it: its error is about the price's rounding error divided by vega, under
1e-8 wherever vega is not negligible (see the tests).

Quotes outside the no-arbitrage bounds get no volatility (null) and a reason: an undiscounted
call lies strictly between max(F - K, 0) and F, a put between max(K - F, 0) and K. A quote
at the lower bound has no time value (volatility 0 or undetermined), one above what a
volatility of `VOL_MAX` gives is reported as such rather than extrapolated.
"""

from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from finq_engine.black_scholes import (
    MAX_ELEMENTS,
    MaturityOrList,
    PositiveOrList,
    RateOrList,
    check_broadcast,
)
from finq_engine.context import RunContext, check_cancelled
from finq_engine.stats import FloatArray, norm_cdf, norm_pdf

VOL_MAX = 10.0
_MAX_ITERATIONS = 100
_S_TOL = 1e-14
# Quotes per chunk: progress and a cancel check between chunks, bounded scratch memory.
CHUNK = 250_000

OptionType = Literal["call", "put"]
_FIELDS = ("price", "spot", "strike", "maturity", "rate", "dividend_yield", "option_type")

REASON_BELOW = "price at or below the no-arbitrage lower bound (discounted intrinsic value)"
REASON_ABOVE = (
    "price at or above the no-arbitrage upper bound (S e^-qT for a call, K e^-rT for a put)"
)
REASON_TOO_HIGH = f"price implies a volatility above {VOL_MAX:g}"


class ImpliedVolParams(BaseModel):
    """Black-Scholes-Merton implied volatility of European calls and puts from their prices;
    numbers or lists that broadcast (up to 1,000,000 quotes). A quote outside the
    no-arbitrage bounds gets a null volatility and a reason."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    price: PositiveOrList = Field(description="Option price (premium). Number or list.")
    spot: PositiveOrList = Field(description="Spot price of the underlying. Number or list.")
    strike: PositiveOrList = Field(description="Strike price. Number or list.")
    maturity: MaturityOrList = Field(description="Time to expiry in years. Number or list.")
    rate: RateOrList = Field(
        description="Continuously compounded risk-free rate, decimal. Number or list."
    )
    dividend_yield: RateOrList = Field(
        default=0.0, description="Continuous dividend yield, decimal. Number or list."
    )
    option_type: (
        OptionType | Annotated[list[OptionType], Field(min_length=1, max_length=MAX_ELEMENTS)]
    ) = Field(description='"call" or "put", or a list of them (one per quote).')

    @field_validator(*_FIELDS)
    @classmethod
    def _broadcastable(cls, value: Any, info: ValidationInfo) -> Any:
        return check_broadcast(value, info, _FIELDS)

    @property
    def is_scalar(self) -> bool:
        return not any(isinstance(getattr(self, f), list) for f in _FIELDS)


def normalised_otm_call(x: FloatArray, s: FloatArray) -> FloatArray:
    """b(x, s) for x <= 0, s > 0 (see the module's docstring)."""
    d1 = x / s + 0.5 * s
    out: FloatArray = np.exp(0.5 * x) * norm_cdf(d1) - np.exp(-0.5 * x) * norm_cdf(d1 - s)
    return out


def solve_normalised(x: FloatArray, beta: FloatArray, s_max: FloatArray) -> FloatArray:
    """s with b(x, s) = beta, for 0 < beta < b(x, s_max); x <= 0. Vectorised.

    b is convex below its inflection point s_c = sqrt(2|x|) and concave above. Above it
    Newton runs on b itself (from s_c, a concave increasing function is approached
    monotonically); below, on 1 / ln b, which is nearly quadratic in s where b behaves like
    exp(-x^2 / 2 s^2) (Jäckel's choice for the lower branch).
    """
    s_c = np.sqrt(-2.0 * x)
    lower = beta < normalised_otm_call(x, np.maximum(s_c, 1e-300))
    inv_log_beta = 1.0 / np.log(beta)
    lo = np.zeros_like(x)
    hi = s_max.copy()
    s = np.where(s_c > 0, np.minimum(s_c, 0.5 * s_max), beta * np.sqrt(2.0 * np.pi))
    s = np.clip(s, 1e-8, 0.5 * s_max)
    active = np.arange(x.size)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        for _ in range(_MAX_ITERATIONS):
            xa, sa, la, ha = x[active], s[active], lo[active], hi[active]
            b = normalised_otm_call(xa, sa)
            below = b < beta[active]
            la = np.where(below, sa, la)
            ha = np.where(below, ha, sa)
            vega = np.exp(0.5 * xa) * norm_pdf(xa / sa + 0.5 * sa)
            log_b = np.log(b)
            step = np.where(
                lower[active],
                # h = 1/ln b - 1/ln beta, h' = -(vega / b) / ln(b)^2
                sa + (1.0 / log_b - inv_log_beta[active]) * log_b * log_b * b / vega,
                sa - (b - beta[active]) / vega,
            )
            tol = _S_TOL * np.maximum(1.0, sa)
            # Converged when Newton's own step is below the tolerance (it may then fail to
            # move inside a bracket that just closed on `sa`), or the bracket is that small.
            done = (np.abs(step - sa) <= tol) | (b == beta[active]) | (ha - la <= tol)
            inside = np.isfinite(step) & (step > la) & (step < ha)
            new = np.where(inside, step, 0.5 * (la + ha))
            s[active], lo[active], hi[active] = np.where(done, sa, new), la, ha
            active = active[~done]
            if not active.size:
                break
    return s


def implied_volatility(
    price: FloatArray,
    spot: FloatArray,
    strike: FloatArray,
    maturity: FloatArray,
    rate: FloatArray,
    dividend_yield: FloatArray,
    is_call: np.ndarray,
) -> tuple[FloatArray, np.ndarray]:
    """Volatilities (NaN where none) and a reason code per quote: 0 solved, 1 below the
    lower bound, 2 at or above the upper bound, 3 above VOL_MAX."""
    discount = np.exp(-rate * maturity)
    forward = spot * np.exp((rate - dividend_yield) * maturity)
    undiscounted = price / discount
    intrinsic = np.where(is_call, forward - strike, strike - forward)
    upper = np.where(is_call, forward, strike)
    code = np.zeros(price.shape, dtype=np.int8)
    code[undiscounted <= np.maximum(intrinsic, 0.0)] = 1
    code[undiscounted >= upper] = 2
    # Out-of-the-money time value: the price itself when out of the money, else minus the
    # intrinsic value (parity), normalised by sqrt(F K).
    otm = np.where(intrinsic > 0, undiscounted - intrinsic, undiscounted)
    x = -np.abs(np.log(forward / strike))
    beta = otm / np.sqrt(forward * strike)
    s_max = VOL_MAX * np.sqrt(maturity)
    code[(code == 0) & ~(beta > 0)] = 1  # no time value left after rounding
    ok = code == 0
    with np.errstate(all="ignore"):
        reachable = beta < normalised_otm_call(x, s_max)
    code[ok & ~reachable] = 3
    ok = code == 0
    vol = np.full(price.shape, np.nan)
    vol[ok] = solve_normalised(x[ok], beta[ok], s_max[ok]) / np.sqrt(maturity[ok])
    return vol, code


_REASONS = (None, REASON_BELOW, REASON_ABOVE, REASON_TOO_HIGH)


def implied_vol(p: ImpliedVolParams, ctx: RunContext) -> dict[str, Any]:
    numeric = _FIELDS[:-1]
    arrays = [np.asarray(getattr(p, f), dtype=np.float64) for f in numeric]
    kinds = np.asarray(p.option_type) == "call"
    *fields, is_call = np.broadcast_arrays(*arrays, kinds)
    flat = [a.reshape(-1) for a in fields]
    calls = is_call.reshape(-1)
    n = calls.size
    vol = np.empty(n)
    code = np.empty(n, dtype=np.int8)
    for start in range(0, n, CHUNK):
        check_cancelled(ctx)
        part = slice(start, min(n, start + CHUNK))
        price, spot, strike, maturity, rate, div = (a[part] for a in flat)
        vol[part], code[part] = implied_volatility(
            price, spot, strike, maturity, rate, div, calls[part]
        )
        ctx.progress(part.stop / n, f"{part.stop:,} of {n:,} quotes")
    reasons = [_REASONS[c] for c in code.tolist()]
    solved = int((code == 0).sum())
    if p.is_scalar:
        return {
            "volatility": vol[0],
            "reason": reasons[0],
            "solved": solved,
            "unsolved": n - solved,
        }
    return {"volatility": vol, "reason": reasons, "solved": solved, "unsolved": n - solved}
