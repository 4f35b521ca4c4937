"""NPV, IRR, MIRR and payback of periodic cash flows, for one series or many scenarios at once.

Flows are end-of-period amounts at t = 0, 1, ..., n-1; the first is not discounted (the
numpy-financial convention). Scenarios are rows of one matrix, so NPV is one matrix-vector
product and IRR is solved for every scenario in the same array operations. Scenarios may have
different horizons: shorter ones are padded with zeros, which changes neither NPV, IRR nor
payback; MIRR uses each scenario's own length (its compounding horizon).

IRR. NPV(r) is a polynomial in x = 1/(1+r), and it can have several roots: the result
gives them all (`irrs`, ascending, within [-0.9999, 1e6]), their number (`irr_count`) and, as
`irr`, the root closest to zero (numpy_financial.irr's choice). By Descartes' rule of signs a
series whose flows change sign once has exactly one root. It is found for all such series at
once: NPV's sign is evaluated on a fixed grid of rates with one matrix product, and the
bracketing grid cell is refined by a safeguarded Newton iteration (bisection whenever Newton
leaves the bracket) to full precision. A series with several sign changes may have roots
closer together than any grid, so its roots are the real positive eigenvalues of the
polynomial's companion matrix (as numpy.roots), polished by Newton's method; roots within
1e-7 (relative) of each other are one root (a double root). That costs O(n^3) a series (about
2 ms at 60 periods), so above `ROOTS_MAX_DEGREE` (60) periods the grid is used for such
series too, every bracket refined,
and `irr_count_exact` is false: two roots inside one grid cell (0.005 wide near zero) would
not be seen. A series whose flows never change sign has no IRR and is rejected at validation.

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
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from finq_engine.context import RunContext, check_cancelled
from finq_engine.errors import CalculationError
from finq_engine.stats import FloatArray

MAX_PERIODS = 10_000
MAX_SCENARIOS = 10_000
MAX_CELLS = 1_000_000
IRR_LOW = -0.9999
IRR_HIGH = 1e6
_NEWTON_ITERATIONS = 200
# Series with several sign changes up to this many periods get all their roots exactly.
ROOTS_MAX_DEGREE = 60
_REAL_TOL = 1e-7  # |imaginary part| / |eigenvalue| below which an eigenvalue is real
_SAME_ROOT = 1e-7  # relative distance under which two roots are one
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
            "of such series (scenarios), of any lengths (a shorter one is a shorter project), "
            f"at most {MAX_CELLS:,} numbers in all."
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
        if sum(len(row) for row in rows) > MAX_CELLS:
            raise ValueError(f"at most {MAX_CELLS:,} cash flows in all")
        flows = padded(rows)
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

    @property
    def rows(self) -> list[list[float]]:
        return self.cash_flows if self.is_scenarios else [self.cash_flows]  # type: ignore[return-value,list-item]


def padded(rows: list[list[float]]) -> FloatArray:
    """Rows of different lengths as one matrix, shorter rows padded with zeros at the end."""
    out = np.zeros((len(rows), max(len(row) for row in rows)))
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


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


def sign_changes(flows: FloatArray) -> NDArray[np.int64]:
    """Sign changes of each row, zeros skipped (Descartes: an upper bound on positive roots)."""
    signs = np.sign(flows)
    nonzero = signs != 0
    # Forward-fill zeros with the last nonzero sign so they do not break or add a change.
    idx = np.where(nonzero, np.arange(flows.shape[1]), 0)
    np.maximum.accumulate(idx, axis=1, out=idx)
    filled = np.take_along_axis(signs, idx, axis=1)
    out: NDArray[np.int64] = (filled[:, 1:] * filled[:, :-1] < 0).sum(axis=1)
    return out


def grid_roots(flows: FloatArray) -> tuple[NDArray[np.intp], FloatArray]:
    """Every root the rate grid brackets, refined: (row index, rate) pairs, unsorted."""
    n = flows.shape[1]
    u_grid = np.log1p(_RATE_GRID)
    signs = np.sign(flows @ np.exp(_scaled_power_exponents(u_grid, n) * u_grid[:, None]).T)
    # Exact zeros on the grid (e.g. r = 0 when the flows sum to zero) are roots already.
    zr, zc = np.nonzero(signs == 0)
    rows, cols = np.nonzero(signs[:, :-1] * signs[:, 1:] < 0)
    roots = np.empty(0)
    if rows.size:
        refined = _refine(flows[rows], u_grid[cols], u_grid[cols + 1], signs[rows, cols])
        roots = np.expm1(refined)
    return np.concatenate([zr, rows]), np.concatenate([_RATE_GRID[zc], roots])


def polynomial_roots(row: FloatArray) -> FloatArray:
    """All distinct IRRs of one series from the companion matrix's eigenvalues, ascending."""
    nonzero = np.flatnonzero(row)
    coeffs = row[nonzero[0] : nonzero[-1] + 1]  # x^a factors only add roots at r = infinity
    lam = np.roots(coeffs[::-1])
    x = lam.real[(np.abs(lam.imag) <= _REAL_TOL * np.abs(lam)) & (lam.real > 0)]
    powers = np.arange(coeffs.size, dtype=np.float64)
    with np.errstate(all="ignore"):
        for _ in range(3):  # polish: Newton on the polynomial in x
            xp = x[:, None] ** powers
            value = xp @ coeffs
            slope = (xp[:, :-1] * powers[1:]) @ coeffs[1:]
            step = value / slope
            x = np.where(np.abs(step) < 1e-6 * x, x - step, x)
    rates = np.sort(1.0 / x - 1.0)
    rates = rates[(rates >= IRR_LOW) & (rates <= IRR_HIGH)]
    if rates.size > 1:
        gap = np.diff(rates) > _SAME_ROOT * np.maximum(1.0, np.abs(rates[1:]))
        rates = rates[np.concatenate([[True], gap])]
    return rates


class Roots:
    """All IRRs of every row, and whether the count is exact."""

    def __init__(self, flows: FloatArray, ctx: RunContext | None = None) -> None:
        s = flows.shape[0]
        self.roots: list[FloatArray] = [np.empty(0)] * s
        self.exact = np.ones(s, dtype=bool)
        changes = sign_changes(flows)
        # Trimmed lengths: up to the last nonzero flow (trailing zeros change no root).
        lengths = flows.shape[1] - np.argmax(flows[:, ::-1] != 0, axis=1)
        by_poly = (changes > 1) & (lengths - 1 <= ROOTS_MAX_DEGREE)
        for j, i in enumerate(np.flatnonzero(by_poly).tolist()):
            if ctx is not None and j % 256 == 255:  # ~0.5 s of eigenvalues at most between
                check_cancelled(ctx)
            self.roots[i] = polynomial_roots(flows[i])
        on_grid = np.flatnonzero(~by_poly)
        self.exact[on_grid] = changes[on_grid] <= 1
        # Group by (trimmed) length so each group's negative-rate scaling fits its horizon.
        for length in np.unique(lengths[on_grid]).tolist():
            members = on_grid[lengths[on_grid] == length]
            rows, rates = grid_roots(flows[members, :length])
            order = np.lexsort((rates, rows))
            rows, rates = rows[order], rates[order]
            for j, chunk in enumerate(
                np.split(rates, np.searchsorted(rows, np.arange(1, members.size)))
            ):
                self.roots[int(members[j])] = chunk

    def closest_to_zero(self) -> FloatArray:
        return np.array([r[np.argmin(np.abs(r))] if r.size else np.nan for r in self.roots])


def irr(flows: FloatArray) -> FloatArray:
    """IRR of each row (the real root closest to zero in [IRR_LOW, IRR_HIGH]); NaN if none."""
    return Roots(flows).closest_to_zero()


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


def mirr(
    flows: FloatArray, finance_rate: float, reinvest_rate: float, lengths: FloatArray | None = None
) -> FloatArray:
    """Modified IRR per row, as numpy_financial.mirr on each row's own `lengths` (default all)."""
    n = np.full(flows.shape[0], flows.shape[1]) if lengths is None else lengths
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


def _scalar_or_list(values: FloatArray | list[Any], scenarios: bool) -> Any:
    if isinstance(values, np.ndarray):
        values = [v if math.isfinite(v) else None for v in values.tolist()]
    return values if scenarios else values[0]


def cash_flow_analysis(p: CashFlowParams, ctx: RunContext) -> dict[str, Any]:
    rows = p.rows
    flows = padded(rows)
    lengths = np.array([len(row) for row in rows], dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        values = npv(flows, p.discount_rate)
    if not np.isfinite(values).all():
        raise CalculationError("NPV overflows: discount_rate is too negative for this horizon")
    ctx.progress(0.1)
    with np.errstate(over="ignore", under="ignore"):
        roots = Roots(flows, ctx)
    ctx.progress(0.9)
    modified = None
    if p.finance_rate is not None and p.reinvest_rate is not None:
        with np.errstate(all="ignore"):
            m = mirr(flows, p.finance_rate, p.reinvest_rate, lengths)
        modified = _scalar_or_list(m, p.is_scenarios)
    scen = p.is_scenarios
    result = {
        "npv": _scalar_or_list(values, scen),
        "irr": _scalar_or_list(roots.closest_to_zero(), scen),
        "irr_count": _scalar_or_list([int(r.size) for r in roots.roots], scen),
        "irrs": _scalar_or_list([r.tolist() for r in roots.roots], scen),
        "irr_count_exact": _scalar_or_list(roots.exact.tolist(), scen),
        "mirr": modified,
        "payback_period": _scalar_or_list(payback_period(flows), scen),
    }
    ctx.progress(1.0)
    return result
