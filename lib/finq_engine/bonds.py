"""Fixed-coupon bond price, yield, duration and convexity, valued on a coupon date.

The bond pays `coupon_rate * face_value / frequency` at the end of each of the
`maturity * frequency` periods and the face value with the last coupon; there is no accrued
interest because valuation is on a coupon date. The yield is compounded `frequency` times a
year (the street convention), so with i = yield / frequency:

    P(y) = sum_k CF_k (1 + i)^-k
    Macaulay duration = sum_k t_k CF_k (1 + i)^-k / P            (years, t_k = k / frequency)
    modified duration = -(dP/dy) / P = Macaulay / (1 + i)          (years)
    convexity = (d2P/dy2) / P = sum_k t_k (t_k + 1/f) CF_k (1 + i)^-(k+2) / P   (years^2)

Given a price, the yield is found by Newton's method safeguarded by bisection on the yield
range accepted as input (P is strictly decreasing in y, so the root is unique), to 1e-12.
"""

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from finq_engine.context import RunContext
from finq_engine.errors import CalculationError
from finq_engine.stats import FloatArray

YIELD_MIN = -0.9
YIELD_MAX = 10.0
YIELD_TOL = 1e-12
MAX_MATURITY = 100


class BondParams(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, populate_by_name=True)

    face_value: float = Field(default=100.0, gt=0, le=1e12, description="Face (par) value.")
    coupon_rate: float = Field(ge=0, le=1, description="Annual coupon rate, decimal.")
    frequency: Literal[1, 2, 4, 12] = Field(default=2, description="Coupons per year.")
    maturity: float = Field(
        gt=0,
        le=MAX_MATURITY,
        description="Years to maturity; a whole number of coupon periods.",
    )
    yield_: float | None = Field(
        default=None,
        alias="yield",
        ge=YIELD_MIN,
        le=YIELD_MAX,
        description="Yield to maturity, compounded `frequency` times a year. Give this or price.",
    )
    price: float | None = Field(
        default=None,
        gt=0,
        le=1e15,
        validate_default=True,
        description="Clean price (= dirty on a coupon date). Give this or yield.",
    )

    @field_validator("maturity")
    @classmethod
    def _whole_periods(cls, value: float, info: ValidationInfo) -> float:
        frequency = info.data.get("frequency")
        if frequency is not None:
            n = value * frequency
            if abs(n - round(n)) > 1e-9:
                raise ValueError(
                    f"must be a whole number of coupon periods (multiple of 1/{frequency} year)"
                )
        return value

    @field_validator("price")
    @classmethod
    def _exactly_one_and_reachable(cls, value: float | None, info: ValidationInfo) -> Any:
        if "yield_" not in info.data:  # yield itself was invalid; that error is enough
            return value
        if (value is None) == (info.data["yield_"] is None):
            raise ValueError("give exactly one of yield or price")
        needed = ("face_value", "coupon_rate", "frequency", "maturity")
        if value is not None and all(k in info.data for k in needed):
            flows, k, f = _schedule(*(info.data[k] for k in needed))
            high = float(price_at(flows, k, f, np.array([YIELD_MIN]))[0])
            low = float(price_at(flows, k, f, np.array([YIELD_MAX]))[0])
            if not low < value < high:
                raise ValueError(
                    f"implies a yield outside [{YIELD_MIN}, {YIELD_MAX}]; "
                    f"price must be between {low:.6g} and {high:.6g}"
                )
        return value


def _schedule(
    face_value: float, coupon_rate: float, frequency: int, maturity: float
) -> tuple[FloatArray, FloatArray, int]:
    """Cash flows per period and their period numbers 1..n."""
    n = round(maturity * frequency)
    k = np.arange(1, n + 1, dtype=np.float64)
    flows = np.full(n, coupon_rate * face_value / frequency)
    flows[-1] += face_value
    return flows, k, frequency


def price_at(flows: FloatArray, k: FloatArray, frequency: int, yields: FloatArray) -> FloatArray:
    """Price at each of `yields` (vectorised over yields and cash flows)."""
    log_growth = np.log1p(np.asarray(yields, dtype=np.float64) / frequency)
    out: FloatArray = np.exp(-np.multiply.outer(log_growth, k)) @ flows
    return out


def solve_yield(
    flows: FloatArray, k: FloatArray, frequency: int, targets: FloatArray
) -> FloatArray:
    """Yields whose prices are `targets` (vectorised over targets).

    Newton's method on P(y) - target, with the bracket [lo, hi] tightened after every
    evaluation (P is decreasing) and a bisection step whenever Newton would leave it.
    """
    targets = np.asarray(targets, dtype=np.float64)
    lo = np.full(targets.shape, YIELD_MIN)
    hi = np.full(targets.shape, YIELD_MAX)
    # Start from the textbook approximation (coupon + pull to par per year) / mean price.
    face = flows[-1] - flows[0] if flows.size > 1 else flows[-1]
    years = k[-1] / frequency
    coupon = flows[0] * frequency if flows.size > 1 else 0.0
    y: FloatArray = np.clip((coupon + (face - targets) / years) / (0.5 * (face + targets)), lo, hi)
    for _ in range(200):
        disc = np.exp(-np.multiply.outer(np.log1p(y / frequency), k))
        pv = disc * flows
        diff = pv.sum(axis=-1) - targets
        slope = -(pv @ k) / (frequency + y)  # dP/dy
        lo = np.where(diff > 0, y, lo)  # price too high: the yield is above y
        hi = np.where(diff > 0, hi, y)
        with np.errstate(divide="ignore", invalid="ignore"):
            step = y - diff / slope
        nxt = np.where((step > lo) & (step < hi), step, 0.5 * (lo + hi))
        done = (np.abs(nxt - y) <= YIELD_TOL) | (hi - lo <= YIELD_TOL) | (diff == 0)
        y = np.where(diff == 0, y, nxt)
        if done.all():
            return y
    raise CalculationError("yield iteration did not converge")


def bond_analytics(p: BondParams, ctx: RunContext) -> dict[str, Any]:
    flows, k, f = _schedule(p.face_value, p.coupon_rate, p.frequency, p.maturity)
    if p.yield_ is not None:
        y = p.yield_
    else:
        assert p.price is not None
        y = float(solve_yield(flows, k, f, np.array(p.price)))
    growth = 1.0 + y / f
    pv = flows * growth**-k
    price = float(pv.sum()) if p.price is None else p.price
    t = k / f
    macaulay = float((t * pv).sum()) / price
    modified = macaulay / growth
    convexity = float((t * (t + 1.0 / f) * pv).sum()) / (price * growth**2)
    ctx.progress(1.0)
    return {
        "price": price,
        "yield": y,
        "macaulay_duration": macaulay,
        "modified_duration": modified,
        "convexity": convexity,
    }
