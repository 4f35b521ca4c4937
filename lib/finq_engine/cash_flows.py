"""NPV, IRR, MIRR and payback of periodic cash flows, for one series or many scenarios at once.

Flows are end-of-period amounts at t = 0, 1, ..., n-1; the first is not discounted (the
numpy-financial convention). Scenarios are rows of one matrix, so NPV is one matrix-vector
product and IRR is solved for every scenario in the same array operations.

IRR. NPV(r) can have several roots; like `numpy_financial.irr` we return the real root
closest to zero, searched on [-0.9999, 1e6]. Instead of polynomial roots per scenario
(`np.roots` is an eigenvalue problem per row), NPV's sign is evaluated on a fixed grid of
rates for all scenarios with one matrix product; the sign changes nearest zero on each side
bracket the candidates, which a safeguarded Newton iteration (bisection whenever Newton leaves
the bracket) refines to full precision, all brackets at once. Two roots closer together than
the grid spacing (0.005 near zero) cancel out and are not seen; a series with one sign change
always has exactly one root, which is found. A series whose flows never change sign has no
IRR at all and is rejected at validation.

To avoid overflow, NPV's sign at a negative rate is computed as NPV(r) (1+r)^(n-1), which has
the same sign and only non-positive powers of (1+r).

Payback is the first time the cumulative flow, having been negative, returns to zero,
interpolated linearly within the period; 0 when it is never negative, null when it never pays
back. MIRR follows numpy-financial: positive flows compound at `reinvest_rate`, negative ones
are discounted at `finance_rate`.
"""

import math
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from finq_engine.context import RunContext
from finq_engine.errors import CalculationError
from finq_engine.stats import FloatArray

MAX_PERIODS = 10_000
MAX_SCENARIOS = 10_000
MAX_CELLS = 1_000_000
IRR_LOW = -0.9999
IRR_HIGH = 1e6
_NEWTON_ITERATIONS = 200
# Sign-scan grid over the IRR range: fine near zero, geometric towards both ends.
_RATE_GRID = np.unique(
    np.concatenate(
        [
            IRR_LOW,
            -1.0 + np.geomspace(1e-4, 1e-2, 24),
            np.arange(-198, 201) / 200.0,
            np.arange(100, 301) / 100.0,
            np.geomspace(3.0, IRR_HIGH, 80),
        ],
        axis=None,
    )
)

Flow = Annotated[float, Field(ge=-1e15, le=1e15)]
Series = Annotated[list[Flow], Field(min_length=2, max_length=MAX_PERIODS)]
Rate = Annotated[float, Field(gt=-1, le=10)]


class CashFlowParams(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    cash_flows: Series | Annotated[list[Series], Field(min_length=1, max_length=MAX_SCENARIOS)] = (
        Field(
            description="Cash flows per period, the first at t=0 (not discounted); or a list "
            f"of such series (scenarios) of equal length, at most {MAX_CELLS:,} numbers in all."
        )
    )
    discount_rate: Rate = Field(description="Discount rate per period for NPV, decimal.")
    finance_rate: Rate | None = Field(
        default=None, description="MIRR: rate paid on negative flows (with reinvest_rate)."
    )
    reinvest_rate: Rate | None = Field(
        default=None,
        validate_default=True,
        description="MIRR: rate earned on positive flows (with finance_rate).",
    )

    @field_validator("cash_flows")
    @classmethod
    def _check_flows(cls, value: list[float] | list[list[float]]) -> Any:
        rows = value if isinstance(value[0], list) else [value]
        length = len(rows[0])
        if any(len(row) != length for row in rows):
            raise ValueError("all scenarios must have the same number of periods")
        if len(rows) * length > MAX_CELLS:
            raise ValueError(f"at most {MAX_CELLS:,} cash flows in all")
        flows = np.asarray(rows, dtype=np.float64)
        one_sign = ~((flows > 0).any(axis=1) & (flows < 0).any(axis=1))
        if one_sign.any():
            where = "" if len(rows) == 1 else f" (scenario {int(np.argmax(one_sign))})"
            raise ValueError(
                "IRR needs at least one sign change: flows must include both a negative and "
                f"a positive amount{where}"
            )
        return value

    @field_validator("reinvest_rate")
    @classmethod
    def _mirr_rates_together(cls, value: float | None, info: ValidationInfo) -> float | None:
        if "finance_rate" in info.data and (info.data["finance_rate"] is None) != (value is None):
            raise ValueError("finance_rate and reinvest_rate must be given together (for MIRR)")
        return value

    @property
    def is_scenarios(self) -> bool:
        return isinstance(self.cash_flows[0], list)


def npv(flows: FloatArray, rate: float) -> FloatArray:
    """NPV of each row at one rate per period."""
    t = np.arange(flows.shape[1], dtype=np.float64)
    out: FloatArray = flows @ np.exp(-t * math.log1p(rate))
    return out


def _scaled_power_exponents(u: FloatArray, n: int) -> FloatArray:
    """Exponent multipliers (k - t) so that sum cf_t exp((k - t) u) has NPV's sign, no overflow.

    k = n - 1 for negative rates (u < 0) and 0 otherwise, so every power of (1 + r) is <= 1.
    """
    t = np.arange(n, dtype=np.float64)
    k = np.where(u < 0, n - 1.0, 0.0)
    out: FloatArray = k[..., None] - t
    return out


def irr(flows: FloatArray) -> FloatArray:
    """IRR of each row (the real root closest to zero in [IRR_LOW, IRR_HIGH]); NaN if none."""
    s, n = flows.shape
    u_grid = np.log1p(_RATE_GRID)
    signs = np.sign(flows @ np.exp(_scaled_power_exponents(u_grid, n) * u_grid[:, None]).T)

    best = np.full(s, np.nan)
    best_abs = np.full(s, np.inf)

    def offer(rows: np.ndarray, rates: FloatArray) -> None:
        better = np.abs(rates) < best_abs[rows]
        best[rows[better]] = rates[better]
        best_abs[rows[better]] = np.abs(rates[better])

    # Exact zeros on the grid (e.g. r = 0 when the flows sum to zero) are roots already.
    zr, zc = np.nonzero(signs == 0)
    offer(zr, _RATE_GRID[zc])

    # Brackets: adjacent grid rates with opposite signs. Per scenario keep the nearest to zero
    # on each side; any root in a farther bracket is farther from zero.
    change = signs[:, :-1] * signs[:, 1:] < 0
    negative_side = _RATE_GRID[1:] <= 0
    lo_idx: list[np.ndarray] = []
    rows_idx: list[np.ndarray] = []
    for side_mask, pick_last in ((negative_side, True), (~negative_side, False)):
        cand = change & side_mask
        has = cand.any(axis=1)
        if pick_last:
            col = cand.shape[1] - 1 - np.argmax(cand[:, ::-1], axis=1)
        else:
            col = np.argmax(cand, axis=1)
        rows_idx.append(np.flatnonzero(has))
        lo_idx.append(col[has])
    rows = np.concatenate(rows_idx)
    cols = np.concatenate(lo_idx)
    if rows.size:
        lo = u_grid[cols]
        hi = u_grid[cols + 1]
        sign_lo = signs[rows, cols]
        roots = _refine(flows[rows], lo, hi, sign_lo)
        offer(rows, np.expm1(roots))
    return best


def _refine(flows: FloatArray, lo: FloatArray, hi: FloatArray, sign_lo: FloatArray) -> FloatArray:
    """Safeguarded Newton on h(u) = sum cf_t exp((k - t) u), u = log(1 + r), per bracket.

    Brackets that have converged drop out of the working set, so a few ill-conditioned
    roots do not keep the whole batch iterating.
    """
    n = flows.shape[1]
    x = 0.5 * (lo + hi)
    active = np.arange(x.size)
    exponents = _scaled_power_exponents(lo, n)  # k is fixed per bracket (one side of zero)
    lo, hi = lo.copy(), hi.copy()
    for _ in range(_NEWTON_ITERATIONS):
        xa, la, ha = x[active], lo[active], hi[active]
        ex = exponents[active]
        fa = flows[active]
        powers = np.exp(ex * xa[:, None])
        h = np.einsum("ij,ij->i", fa, powers)
        dh = np.einsum("ij,ij->i", fa * ex, powers)
        same = np.sign(h) == sign_lo[active]
        la = np.where(same, xa, la)
        ha = np.where(same, ha, xa)
        with np.errstate(divide="ignore", invalid="ignore"):
            step = xa - h / dh
        inside = np.isfinite(step) & (step > la) & (step < ha)
        new = np.where(inside, step, 0.5 * (la + ha))
        new = np.where(h == 0, xa, new)
        tol = 1e-14 * np.maximum(1.0, np.abs(new))
        done = (np.abs(new - xa) <= tol) | (ha - la <= tol)
        x[active], lo[active], hi[active] = new, la, ha
        active = active[~done]
        if not active.size:
            break
    return x  # always inside its bracket, which bisection has shrunk at worst


def mirr(flows: FloatArray, finance_rate: float, reinvest_rate: float) -> FloatArray:
    """Modified IRR per row, as numpy_financial.mirr."""
    n = flows.shape[1]
    gains = np.abs(npv(np.where(flows > 0, flows, 0.0), reinvest_rate))
    costs = np.abs(npv(np.where(flows < 0, flows, 0.0), finance_rate))
    out: FloatArray = (gains / costs) ** (1.0 / (n - 1)) * (1.0 + reinvest_rate) - 1.0
    return out


def payback_period(flows: FloatArray) -> FloatArray:
    """Periods until the cumulative flow, once negative, is back at zero; NaN if never."""
    cum = np.cumsum(flows, axis=1)
    negative = cum < 0
    ever_negative = negative.any(axis=1)
    first_negative = np.argmax(negative, axis=1)
    n = flows.shape[1]
    after = np.arange(n) > first_negative[:, None]
    recovered = (cum >= 0) & after
    pays_back = recovered.any(axis=1)
    t = np.argmax(recovered, axis=1)
    rows = np.arange(flows.shape[0])
    prev = cum[rows, np.maximum(t - 1, 0)]
    step = flows[rows, t]
    with np.errstate(divide="ignore", invalid="ignore"):
        period = (t - 1) + (-prev) / step
    out: FloatArray = np.where(~ever_negative, 0.0, np.where(pays_back, period, np.nan))
    return out


def _scalar_or_list(values: FloatArray, scenarios: bool) -> Any:
    items = [v if math.isfinite(v) else None for v in values.tolist()]
    return items if scenarios else items[0]


def cash_flow_analysis(p: CashFlowParams, ctx: RunContext) -> dict[str, Any]:
    flows = np.asarray(p.cash_flows if p.is_scenarios else [p.cash_flows], dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        values = npv(flows, p.discount_rate)
    if not np.isfinite(values).all():
        raise CalculationError("NPV overflows: discount_rate is too negative for this horizon")
    ctx.progress(0.1)
    with np.errstate(over="ignore", under="ignore"):
        rates = irr(flows)
    ctx.progress(0.9)
    modified = None
    if p.finance_rate is not None and p.reinvest_rate is not None:
        with np.errstate(all="ignore"):
            modified = _scalar_or_list(mirr(flows, p.finance_rate, p.reinvest_rate), p.is_scenarios)
    result = {
        "npv": _scalar_or_list(values, p.is_scenarios),
        "irr": _scalar_or_list(rates, p.is_scenarios),
        "mirr": modified,
        "payback_period": _scalar_or_list(payback_period(flows), p.is_scenarios),
    }
    ctx.progress(1.0)
    return result
