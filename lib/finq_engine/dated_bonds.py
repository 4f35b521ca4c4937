"""Fixed-coupon bonds with dates: day counts, accrued interest, clean and dirty prices,
yield from price and price from yield, durations and convexity, many bonds at once.

Schedule. Coupon dates run backward from `maturity` in steps of 12 / `frequency` months
(unadjusted: no holiday calendar), each on the maturity's day of the month, clamped to the
month's end (a maturity on the last day of a month puts every coupon on a month's end). The
schedule is regular: the coupon period holding `settlement` is a full one (no odd first
coupon, no issue date). A coupon paid on the settlement date belongs to the seller.

Amounts and accrual follow the day count (`day_count`), as QuantLib's FixedRateBond does: a
coupon pays face x coupon_rate x DCF(start, end) and accrued interest is face x coupon_rate x
DCF(previous coupon, settlement), where DCF is

- `30/360 US` (bond basis): D1 = 31 -> 30; D2 = 31 -> 30 when D1 >= 30; the last day of
  February counts as the 30th for D1, and for D2 when D1 is also February's last day;
- `30E/360` (Eurobond basis): D1 = 31 -> 30 and D2 = 31 -> 30;
- `ACT/360`, `ACT/365F`: actual days / 360 or / 365;
- `ACT/ACT ICMA`: actual days / days of the coupon period / frequency, so a full period is
  exactly 1 / frequency years.

Yield. Compounded `frequency` times a year; the time to each flow is counted in the day
count's years, stepwise: from settlement to the next coupon DCF(previous, next) -
DCF(previous, settlement), then DCF(c_{k-1}, c_k) per period (QuantLib's CashFlows::npv with
an InterestRate). Then

    dirty price P = sum_k CF_k (1 + y/f)^(-f T_k),   clean = dirty - accrued
    Macaulay duration = sum_k T_k PV_k / P,   modified = Macaulay / (1 + y/f)
    convexity = sum_k T_k (T_k + 1/f) PV_k / (P (1 + y/f)^2)

and a yield is found from a clean price by Newton's method safeguarded by bisection on
[YIELD_MIN, YIELD_MAX], for every bond at once (P is decreasing in y: one root).

All bonds' coupons are one flat array (bond by bond, in date order), so 10,000 bonds are a
few array operations over their coupons and per-bond sums are `np.add.reduceat`; dates are
computed in integer civil-calendar arithmetic. The total number of coupons in a request is
bounded by `MAX_CELLS`.
"""

import datetime as dt
from typing import Annotated, Any, Literal, TypeVar, Union

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from finq_engine.black_scholes import check_broadcast
from finq_engine.context import RunContext
from finq_engine.errors import CalculationError
from finq_engine.stats import FloatArray

MAX_BONDS = 100_000
MAX_CELLS = 5_000_000
YIELD_MIN = -0.9
YIELD_MAX = 10.0
YIELD_TOL = 1e-13
DayCount = Literal["30/360 US", "30E/360", "ACT/360", "ACT/365F", "ACT/ACT ICMA"]
DAY_COUNTS: tuple[str, ...] = ("30/360 US", "30E/360", "ACT/360", "ACT/365F", "ACT/ACT ICMA")
Frequency = Literal[1, 2, 4, 12]


T = TypeVar("T")
# One value for every bond, or one per bond.
OneOrList = Union[T, Annotated[list[T], Field(min_length=1, max_length=MAX_BONDS)]]  # noqa: UP007


_FIELDS = (
    "settlement",
    "maturity",
    "coupon_rate",
    "frequency",
    "day_count",
    "face_value",
    "yield_",
    "price",
)


class DatedBondParams(BaseModel):
    """Fixed-coupon bonds with settlement and maturity dates and a day count: clean and dirty
    price, accrued interest, yield, durations, convexity; numbers or lists that broadcast
    (one element per bond, up to 100,000 bonds); the cash flows of a single bond."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, populate_by_name=True)

    settlement: OneOrList[dt.date] = Field(description="Settlement date (YYYY-MM-DD), or a list.")
    maturity: OneOrList[dt.date] = Field(description="Maturity date, after settlement; or a list.")
    coupon_rate: OneOrList[Annotated[float, Field(ge=0, le=1)]] = Field(
        description="Annual coupon rate, decimal; or a list."
    )
    frequency: OneOrList[Frequency] = Field(default=2, description="Coupons a year; or a list.")
    day_count: OneOrList[DayCount] = Field(
        default="30/360 US",
        description="30/360 US, 30E/360, ACT/360, ACT/365F or ACT/ACT ICMA; or a list.",
    )
    face_value: OneOrList[Annotated[float, Field(gt=0, le=1e12)]] = Field(
        default=100.0, description="Face (par) value; or a list."
    )
    yield_: OneOrList[Annotated[float, Field(ge=YIELD_MIN, le=YIELD_MAX)]] | None = Field(
        default=None,
        alias="yield",
        description="Yield to maturity, compounded `frequency` times a year. Give this or price.",
    )
    price: OneOrList[Annotated[float, Field(gt=0, le=1e15)]] | None = Field(
        default=None,
        validate_default=True,
        description="Clean price (per the bond's face value). Give this or yield.",
    )

    @field_validator(*_FIELDS)
    @classmethod
    def _broadcastable(cls, value: Any, info: ValidationInfo) -> Any:
        return check_broadcast(value, info, _FIELDS)

    @field_validator("maturity")
    @classmethod
    def _after_settlement(cls, value: Any, info: ValidationInfo) -> Any:
        settlement = info.data.get("settlement")
        if settlement is None:
            return value
        s = np.asarray(settlement, dtype="datetime64[D]")
        m = np.asarray(value, dtype="datetime64[D]")
        bad = np.broadcast_to(m <= s, np.broadcast_shapes(s.shape, m.shape)).reshape(-1)
        if bad.any():
            where = "" if bad.size == 1 else f" (bond {int(np.argmax(bad))})"
            raise ValueError(f"must be after the settlement date{where}")
        return value

    @field_validator("price")
    @classmethod
    def _one_of_and_reachable(cls, value: Any, info: ValidationInfo) -> Any:
        if "yield_" not in info.data:
            return value
        if (value is None) == (info.data["yield_"] is None):
            raise ValueError("give exactly one of yield or price")
        if value is None or any(f not in info.data for f in _FIELDS[:6]):
            return value
        bonds = Bonds.from_fields(*(info.data[f] for f in _FIELDS[:6]))
        clean = np.broadcast_to(np.asarray(value, dtype=np.float64), bonds.accrued.shape)
        high = bonds.dirty(np.full(bonds.accrued.shape, YIELD_MIN)) - bonds.accrued
        low = bonds.dirty(np.full(bonds.accrued.shape, YIELD_MAX)) - bonds.accrued
        bad = ~((low < clean) & (clean < high))
        if bad.any():
            i = int(np.argmax(bad))
            where = "" if bad.size == 1 else f" (bond {i})"
            raise ValueError(
                f"implies a yield outside [{YIELD_MIN}, {YIELD_MAX}]{where}; the clean price "
                f"must be between {low[i]:.6g} and {high[i]:.6g}"
            )
        return value

    @property
    def is_scalar(self) -> bool:
        return not any(isinstance(getattr(self, f), list) for f in _FIELDS)


Days = NDArray[np.int64]


def _ymd(d: NDArray[np.datetime64]) -> tuple[Days, Days, Days]:
    """Year, month, day of dates, in integer arithmetic (Hinnant's civil_from_days): NumPy's
    datetime64[M] and [Y] conversions cost far more."""
    z = d.astype(np.int64) + 719_468
    era = z // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = np.where(mp < 10, mp + 3, mp - 9)
    year = yoe + era * 400 + (month <= 2)
    return year, month, day


def _days(year: Days, month: Days, day: Days) -> NDArray[np.datetime64]:
    """Dates from year, month, day (Hinnant's days_from_civil)."""
    y = year - (month <= 2)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * np.where(month > 2, month - 3, month + 9) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    out: NDArray[np.datetime64] = (era * 146_097 + doe - 719_468).astype("datetime64[D]")
    return out


_DAYS_IN_MONTH = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])


def _days_in_month(year: Days, month: Days) -> Days:
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    out: Days = _DAYS_IN_MONTH[month - 1] + ((month == 2) & leap)
    return out


def _month_end(d: NDArray[np.datetime64]) -> NDArray[np.bool_]:
    year, month, day = _ymd(d)
    out: NDArray[np.bool_] = day == _days_in_month(year, month)
    return out


def day_count_fraction(
    code: Days,
    d1: NDArray[np.datetime64],
    d2: NDArray[np.datetime64],
    period_days: Days,
    frequency: Days,
) -> FloatArray:
    """DCF(d1, d2) per convention code (index in DAY_COUNTS); for ICMA, d1..d2 lies in one
    coupon period of `period_days` days."""
    actual = (d2 - d1).astype(np.int64).astype(np.float64)
    y1, m1, dd1 = _ymd(d1)
    y2, m2, dd2 = _ymd(d2)
    # 30/360 US
    feb1 = (m1 == 2) & _month_end(d1)
    feb2 = (m2 == 2) & _month_end(d2)
    us2 = np.where(feb1 & feb2, 30, dd2)
    us1 = np.where(feb1, 30, dd1)
    us2 = np.where((us2 == 31) & (us1 >= 30), 30, us2)
    us1 = np.where(us1 == 31, 30, us1)
    # 30E/360
    e1 = np.minimum(dd1, 30)
    e2 = np.minimum(dd2, 30)
    base = 360 * (y2 - y1) + 30 * (m2 - m1)
    out: FloatArray = np.select(
        [code == 0, code == 1, code == 2, code == 3],
        [(base + us2 - us1) / 360.0, (base + e2 - e1) / 360.0, actual / 360.0, actual / 365.0],
        actual / np.maximum(period_days, 1) / frequency,
    )
    return out


class Bonds:
    """The schedules of many bonds as flat arrays of coupons, bond by bond in date order
    (`first[b]` is bond b's next coupon, `count[b]` its coupons left): only real coupons are
    stored, so a book of annual and monthly bonds costs its coupons, not bonds x the most."""

    def __init__(
        self,
        settlement: NDArray[np.datetime64],
        maturity: NDArray[np.datetime64],
        coupon_rate: FloatArray,
        frequency: Days,
        day_count: Days,
        face: FloatArray,
    ) -> None:
        self.frequency = frequency.astype(np.float64)
        step = 12 // frequency
        mat_y, mat_m, mat_d = _ymd(maturity)
        set_y, set_m, _ = _ymd(settlement)
        mat_index = mat_y * 12 + mat_m - 1  # months since year 0
        set_index = set_y * 12 + set_m - 1
        eom = mat_d == _days_in_month(mat_y, mat_m)

        def coupon_date(bond: Days, k: Days) -> NDArray[np.datetime64]:
            """The k-th coupon date before maturity of each `bond` (k = 0 is maturity), on
            the maturity's day clamped to the month's end, or on the month's end."""
            index = mat_index[bond] - k * step[bond]
            year, month = index // 12, index % 12 + 1
            last = _days_in_month(year, month)
            return _days(year, month, np.where(eom[bond], last, np.minimum(mat_d[bond], last)))

        # Coupons after settlement: every one in a later month, and the one in settlement's
        # month (if the schedule has one there) when its day is after settlement's.
        later = (mat_index - set_index - 1) // step + 1
        bonds = np.arange(maturity.size)
        same_month = (mat_index - set_index) % step == 0
        in_month = coupon_date(bonds, later)
        count = later + (same_month & (in_month > settlement))
        total = int(count.sum())
        if total > MAX_CELLS:
            raise CalculationError(f"at most {MAX_CELLS:,} coupons in all")
        self.count = count
        self.first = np.concatenate([[0], np.cumsum(count)[:-1]])
        b = np.repeat(bonds, count)
        j = np.arange(total) - self.first[b]  # 0 for the next coupon
        k = count[b] - 1 - j  # periods before maturity
        self.bond = b
        self.pay = coupon_date(b, k)
        start = coupon_date(b, k + 1)
        self.previous = coupon_date(bonds, count)
        self.next = self.pay[self.first]
        period_days = (self.pay - start).astype(np.int64)
        dcf = day_count_fraction(day_count[b], start, self.pay, period_days, frequency[b])
        self.amounts = face[b] * coupon_rate[b] * dcf
        self.amounts[self.first + count - 1] += face
        accrued_dcf = day_count_fraction(
            day_count, self.previous, settlement, period_days[self.first], frequency
        )
        self.accrued = face * coupon_rate * accrued_dcf
        # Stepwise times: the first from settlement, then whole periods (in the day count).
        steps = dcf.copy()
        steps[self.first] -= accrued_dcf
        # A cumulative sum per bond: each bond's first step also takes away the previous
        # bonds' total, so the running sum restarts near zero (no large sums to cancel), and
        # the residual left at each bond's start is removed exactly.
        reset = steps.copy()
        reset[self.first[1:]] -= np.add.reduceat(steps, self.first)[:-1]
        running = np.cumsum(reset)
        self.times = running - (running[self.first] - steps[self.first])[b]

    def per_bond(self, values: FloatArray) -> FloatArray:
        """Sum of `values` (one per coupon) for each bond."""
        out: FloatArray = np.add.reduceat(values, self.first)
        return out

    def discount(self, y: FloatArray) -> FloatArray:
        f = self.frequency[self.bond]
        out: FloatArray = np.exp(-f * self.times * np.log1p(y[self.bond] / f))
        return out

    def dirty(self, y: FloatArray) -> FloatArray:
        return self.per_bond(self.amounts * self.discount(y))

    def solve_yield(self, clean: FloatArray) -> FloatArray:
        target = clean + self.accrued
        lo = np.full(target.shape, YIELD_MIN)
        hi = np.full(target.shape, YIELD_MAX)
        y = np.full(target.shape, 0.05)
        f = self.frequency
        for _ in range(200):
            pv = self.amounts * self.discount(y)
            diff = self.per_bond(pv) - target
            slope = -self.per_bond(pv * self.times) / (1.0 + y / f)
            lo = np.where(diff > 0, y, lo)
            hi = np.where(diff > 0, hi, y)
            with np.errstate(divide="ignore", invalid="ignore"):
                step = y - diff / slope
            nxt = np.where((step > lo) & (step < hi), step, 0.5 * (lo + hi))
            done = (np.abs(nxt - y) <= YIELD_TOL) | (hi - lo <= YIELD_TOL) | (diff == 0)
            y = np.where(diff == 0, y, nxt)
            if done.all():
                return y
        raise CalculationError("yield iteration did not converge")

    @classmethod
    def from_fields(
        cls,
        settlement: Any,
        maturity: Any,
        coupon_rate: Any,
        frequency: Any,
        day_count: Any,
        face: Any,
    ) -> "Bonds":
        codes = np.vectorize(DAY_COUNTS.index, otypes=[np.int64])(np.asarray(day_count))
        s, m, c, f, d, fv = np.broadcast_arrays(
            np.asarray(settlement, dtype="datetime64[D]"),
            np.asarray(maturity, dtype="datetime64[D]"),
            np.asarray(coupon_rate, dtype=np.float64),
            np.asarray(frequency, dtype=np.int64),
            codes,
            np.asarray(face, dtype=np.float64),
        )
        return cls(*(a.reshape(-1) for a in (s, m, c, f, d, fv)))


def _dates(d: NDArray[np.datetime64]) -> list[str]:
    return [str(x) for x in d.tolist()]


def dated_bonds(p: DatedBondParams, ctx: RunContext) -> dict[str, Any]:
    bonds = Bonds.from_fields(*(getattr(p, f) for f in _FIELDS[:6]))
    shape = bonds.accrued.shape
    if p.price is not None:
        clean = np.broadcast_to(np.asarray(p.price, dtype=np.float64), shape).copy()
        y = bonds.solve_yield(clean)
    else:
        y = np.broadcast_to(np.asarray(p.yield_, dtype=np.float64), shape).copy()
    pv = bonds.amounts * bonds.discount(y)
    dirty = bonds.per_bond(pv)
    if p.price is None:
        clean = dirty - bonds.accrued
    growth = 1.0 + y / bonds.frequency
    t = bonds.times
    macaulay = bonds.per_bond(t * pv) / dirty
    f = bonds.frequency[bonds.bond]
    convexity = bonds.per_bond(t * (t + 1.0 / f) * pv) / (dirty * growth**2)
    out: dict[str, Any] = {
        "clean_price": clean,
        "dirty_price": dirty,
        "accrued_interest": bonds.accrued,
        "yield": y,
        "macaulay_duration": macaulay,
        "modified_duration": macaulay / growth,
        "convexity": convexity,
        "previous_coupon_date": _dates(bonds.previous),
        "next_coupon_date": _dates(bonds.next),
        "coupons_remaining": bonds.count,
    }
    ctx.progress(1.0)
    if not p.is_scalar:
        return out
    scalar: dict[str, Any] = {
        k: v[0] if isinstance(v, list) else v.reshape(-1)[0] for k, v in out.items()
    }
    n = int(bonds.count[0])
    scalar["cash_flows"] = {
        "date": _dates(bonds.pay[:n]),
        "amount": bonds.amounts[:n],
        "time": bonds.times[:n],
        "present_value": pv[:n],
    }
    return scalar
