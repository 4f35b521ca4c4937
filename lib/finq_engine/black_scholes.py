"""Black-Scholes-Merton prices and Greeks for European options, vectorised over inputs.

Every numeric input is a number or a list; lists broadcast together (equal lengths, or length
1), so a volatility surface slice or a strike ladder is one request and one pass of array
arithmetic. With `grid` the lists are instead the axes of a grid and every combination is
priced (200 spots x 500 strikes: 700 numbers sent, 100,000 options priced); the result is
flattened row-major in field order and carries each axis' value per option. The normal CDF
comes from `finq_engine.stats` (Cody's erfc), never a per-element Python call.

Conventions: continuous compounding; `rate` and `dividend_yield` are continuously compounded
annual decimals; vega and rho are per 1.00 (100 percentage points) change of volatility and
rate; theta is the change of value per year of calendar time passing (-dV/dT), so it is
usually negative for long options.
"""

import math
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from finq_engine.context import RunContext
from finq_engine.errors import CalculationError
from finq_engine.stats import FloatArray, norm_cdf, norm_pdf

MAX_ELEMENTS = 1_000_000

Positive = Annotated[float, Field(gt=0, le=1e12)]
Maturity = Annotated[float, Field(gt=0, le=100)]
Rate = Annotated[float, Field(ge=-1, le=1)]
Volatility = Annotated[float, Field(gt=0, le=10)]
# A number, or a non-empty bounded list of numbers with the same bounds.
PositiveOrList = Positive | Annotated[list[Positive], Field(min_length=1, max_length=MAX_ELEMENTS)]
MaturityOrList = Maturity | Annotated[list[Maturity], Field(min_length=1, max_length=MAX_ELEMENTS)]
RateOrList = Rate | Annotated[list[Rate], Field(min_length=1, max_length=MAX_ELEMENTS)]
VolatilityOrList = (
    Volatility | Annotated[list[Volatility], Field(min_length=1, max_length=MAX_ELEMENTS)]
)

_NUMERIC_FIELDS = ("spot", "strike", "maturity", "rate", "volatility", "dividend_yield")


def check_broadcast(value: Any, info: ValidationInfo, fields: tuple[str, ...]) -> Any:
    """Lists must share one length (or have length 1) so they broadcast element by element.

    Checked per field against the fields validated before it (in `fields` order), so the
    error names the first field whose length disagrees.
    """
    if not isinstance(value, list) or len(value) == 1:
        return value
    for other in fields:
        if other == info.field_name:
            break
        seen = info.data.get(other)
        if isinstance(seen, list) and len(seen) != 1 and len(seen) != len(value):
            raise ValueError(
                f"has {len(value)} elements but {other} has {len(seen)}; "
                "lists must have equal length or length 1"
            )
    return value


def check_grid_size(value: Any, info: ValidationInfo, fields: tuple[str, ...]) -> Any:
    """A grid's lists (length > 1) are its axes: their lengths' product, up to this field (in
    `fields` order), must be at most MAX_ELEMENTS; the error names the field that passes it."""
    if not isinstance(value, list) or len(value) == 1:
        return value
    axes = [
        (f, len(seen))
        for f in fields[: fields.index(info.field_name)]
        if isinstance(seen := info.data.get(f), list) and len(seen) > 1
    ]
    axes.append((str(info.field_name), len(value)))
    combinations = math.prod(n for _, n in axes)
    if combinations > MAX_ELEMENTS:
        counts = " x ".join(f"{f} {n}" for f, n in axes)
        raise ValueError(
            f"grid has {combinations:,} combinations ({counts}), at most {MAX_ELEMENTS:,}"
        )
    return value


class BlackScholesParams(BaseModel):
    """European option prices and Greeks (Black-Scholes-Merton). Each numeric input is a
    number or a list: lists broadcast element by element, or, with `grid`, every combination
    of their values is priced."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    # Declared first: the numeric fields' validator reads it from `info.data`.
    grid: bool = Field(
        default=False,
        description=(
            "Price every combination: each list of more than one number is an axis of a grid "
            "(numbers and one-element lists are constants), the lists may differ in length and "
            "the product of their lengths is at most 1,000,000. The result is flattened "
            "row-major in field order (spot varies slowest, then strike, maturity, rate, "
            "volatility, dividend_yield) and carries, for each list field, its value per "
            "option under the field's name. False: lists broadcast element by element "
            "(equal lengths, or length 1)."
        ),
    )
    spot: PositiveOrList = Field(description="Spot price of the underlying. Number or list.")
    strike: PositiveOrList = Field(description="Strike price. Number or list.")
    maturity: MaturityOrList = Field(description="Time to expiry in years. Number or list.")
    rate: RateOrList = Field(
        description="Continuously compounded risk-free rate, decimal. Number or list."
    )
    volatility: VolatilityOrList = Field(
        description="Annualised volatility, decimal (0.2 = 20%). Number or list."
    )
    dividend_yield: RateOrList = Field(
        default=0.0, description="Continuous dividend yield, decimal. Number or list."
    )
    option_type: Literal["call", "put"] = Field(description="Call or put.")

    @field_validator(*_NUMERIC_FIELDS)
    @classmethod
    def _broadcastable(cls, value: float | list[float], info: ValidationInfo) -> Any:
        if "grid" not in info.data:  # `grid` itself is wrong, and reported
            return value
        if info.data["grid"]:
            return check_grid_size(value, info, _NUMERIC_FIELDS)
        return check_broadcast(value, info, _NUMERIC_FIELDS)

    @property
    def is_scalar(self) -> bool:
        return not any(isinstance(getattr(self, f), list) for f in _NUMERIC_FIELDS)


def bs_price_greeks(
    spot: FloatArray,
    strike: FloatArray,
    maturity: FloatArray,
    rate: FloatArray,
    volatility: FloatArray,
    dividend_yield: FloatArray,
    is_call: bool,
) -> dict[str, FloatArray]:
    """Closed-form price and Greeks; arrays broadcast together."""
    sqrt_t = np.sqrt(maturity)
    vol_sqrt_t = volatility * sqrt_t
    d1 = (np.log(spot / strike) + (rate - dividend_yield + 0.5 * volatility**2) * maturity) / (
        vol_sqrt_t
    )
    d2 = d1 - vol_sqrt_t
    disc_q = np.exp(-dividend_yield * maturity)
    disc_r = np.exp(-rate * maturity)
    fwd_s = spot * disc_q  # spot net of dividends
    pv_k = strike * disc_r
    pdf_d1 = norm_pdf(d1)

    gamma = disc_q * pdf_d1 / (spot * vol_sqrt_t)
    vega = fwd_s * pdf_d1 * sqrt_t
    decay = -fwd_s * pdf_d1 * volatility / (2.0 * sqrt_t)
    if is_call:
        n_d1 = norm_cdf(d1)
        n_d2 = norm_cdf(d2)
        price = fwd_s * n_d1 - pv_k * n_d2
        delta = disc_q * n_d1
        theta = decay - rate * pv_k * n_d2 + dividend_yield * fwd_s * n_d1
        rho = maturity * pv_k * n_d2
    else:
        n_md1 = norm_cdf(-d1)
        n_md2 = norm_cdf(-d2)
        price = pv_k * n_md2 - fwd_s * n_md1
        delta = -disc_q * n_md1
        theta = decay + rate * pv_k * n_md2 - dividend_yield * fwd_s * n_md1
        rho = -maturity * pv_k * n_md2
    return {
        "price": price,
        "delta": delta,
        "gamma": gamma,
        "vega": vega,
        "theta": theta,
        "rho": rho,
    }


def grid_inputs(
    p: BlackScholesParams,
) -> tuple[list[FloatArray], dict[str, FloatArray], tuple[int, ...]]:
    """The grid's inputs in field order, each shaped to broadcast along its own axis (an open
    mesh, as np.ix_ makes), the axes' coordinates (each axis' value per combination, row-major)
    and the grid's shape. A number or one-element list is a 0-d constant; with no axis the
    shape is () for numbers only, (1,) when a one-element list was given (as without grid)."""
    values = {f: np.asarray(getattr(p, f), dtype=np.float64).reshape(-1) for f in _NUMERIC_FIELDS}
    axes = [f for f in _NUMERIC_FIELDS if values[f].size > 1]
    mesh = dict(zip(axes, np.ix_(*(values[f] for f in axes)), strict=True))
    shape = tuple(values[f].size for f in axes) or (() if p.is_scalar else (1,))
    inputs = [mesh[f] if f in mesh else values[f].reshape(()) for f in _NUMERIC_FIELDS]
    coords = {f: np.broadcast_to(mesh[f], shape).reshape(-1) for f in axes}
    return inputs, coords, shape


def black_scholes(p: BlackScholesParams, ctx: RunContext) -> dict[str, Any]:
    coords: dict[str, FloatArray] = {}
    if p.grid:
        inputs, coords, shape = grid_inputs(p)
    else:
        inputs = list(
            np.broadcast_arrays(
                *(np.asarray(getattr(p, f), dtype=np.float64) for f in _NUMERIC_FIELDS)
            )
        )
        shape = inputs[0].shape
    spot, strike, maturity, rate, vol, div = inputs
    with np.errstate(all="ignore"):
        out = bs_price_greeks(spot, strike, maturity, rate, vol, div, p.option_type == "call")
    if p.grid:  # flattened row-major (each output spans every axis already; this makes sure)
        out = {k: np.broadcast_to(v, shape).reshape(-1) for k, v in out.items()}
    for name, values in out.items():
        bad = ~np.isfinite(values)
        if bad.any():
            i = int(np.flatnonzero(bad.ravel())[0])
            raise CalculationError(f"{name} is not finite for element {i} (inputs too extreme)")
    ctx.progress(1.0)
    if p.is_scalar:
        return {k: float(v.reshape(-1)[0]) for k, v in out.items()}
    return {**coords, **out}
