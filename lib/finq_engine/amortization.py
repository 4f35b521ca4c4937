"""Loan amortization: level payments, optional extra principal each period.

Two roundings (`rounding`):

- `"cent"` (the default) is a lender's statement, exact in integer cents: the principal and
  the extra payment are taken to the cent, the level payment is rounded to the nearest cent,
  each period's interest is the rounded balance times the periodic rate rounded to the
  nearest cent (halves up), principal = payment - interest, and the last payment is whatever
  clears the balance (balance + interest). Every row satisfies payment = principal + interest
  and balance = previous balance - principal exactly, and the totals are sums of the rows.
  The rate is read as the decimal it was written as (0.05 is exactly 5/100), so the cents do
  not depend on binary floating point. A cent schedule is a recurrence (each row rounds on
  the previous one), so it runs as a loop of Python integers: a few microseconds a row.
- `"none"` is for analysts: exact floats throughout, from the closed form of the balance
  (one vectorised expression), with the same identities up to floating-point round-off.
"""

from fractions import Fraction
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from finq_engine.context import RunContext

MAX_PERIODS = 100 * 365


class LoanAmortizationParams(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    principal: float = Field(gt=0, le=1e15, description="Amount borrowed.")
    annual_rate: float = Field(ge=0, le=10, description="Nominal annual rate, decimal (0.05 = 5%).")
    years: float = Field(gt=0, le=100, description="Term in years.")
    periods_per_year: int = Field(default=12, ge=1, le=365, description="Payments per year.")
    extra_payment: float = Field(
        default=0, ge=0, le=1e15, description="Extra principal paid every period."
    )
    rounding: Literal["cent", "none"] = Field(
        default="cent",
        description='"cent": a statement in cents (payment rounded to the cent, interest '
        "rounded on the rounded balance, the last payment clears the balance exactly, totals "
        'are sums of the rows); "none": exact floats throughout.',
    )

    @model_validator(mode="after")
    def _whole_number_of_periods(self) -> "LoanAmortizationParams":
        n = self.years * self.periods_per_year
        if abs(n - round(n)) > 1e-9:
            raise ValueError("years x periods_per_year must be a whole number of periods")
        if self.rounding == "cent" and round(self.principal * 100) < 1:
            raise ValueError("principal must be at least one cent")
        return self

    @property
    def periods(self) -> int:
        return round(self.years * self.periods_per_year)


def level_payment(principal: float, rate: float, periods: int) -> float:
    """The payment that repays `principal` in `periods` equal instalments at `rate` per period."""
    if rate == 0:
        return principal / periods
    return principal * rate / (1.0 - (1.0 + rate) ** -periods)


def _round_half_up(value: Fraction) -> int:
    """The integer nearest to a non-negative fraction, halves up."""
    return (2 * value.numerator + value.denominator) // (2 * value.denominator)


def _level_payment_cents(principal_cents: int, rate: Fraction, periods: int) -> int:
    """The level payment in cents, from the exact rational formula (no float round-off)."""
    if rate == 0:
        return _round_half_up(Fraction(principal_cents, periods))
    growth = (1 + rate) ** periods
    return _round_half_up(principal_cents * rate * growth / (growth - 1))


def cent_schedule(p: LoanAmortizationParams) -> dict[str, Any]:
    """The statement in integer cents (see the module's docstring)."""
    n = p.periods
    rate = Fraction(repr(p.annual_rate)) / p.periods_per_year  # the decimal as written
    num, den = rate.numerator, rate.denominator
    balance = round(p.principal * 100)
    payment = _level_payment_cents(balance, rate, n)
    outflow = payment + round(p.extra_payment * 100)
    pays, prins, ints, bals = [], [], [], []
    for period in range(1, n + 1):
        interest = (2 * balance * num + den) // (2 * den)  # balance x rate, halves up
        due = balance + interest
        pay = due if period == n or due <= outflow else outflow
        balance -= pay - interest
        pays.append(pay)
        ints.append(interest)
        prins.append(pay - interest)
        bals.append(balance)
        if balance == 0:
            break
    return {
        "payment": payment / 100,
        "final_payment": pays[-1] / 100,
        "periods": len(pays),
        "total_paid": sum(pays) / 100,
        "total_interest": sum(ints) / 100,
        "schedule": [
            {
                "period": i + 1,
                "payment": a / 100,
                "principal": b / 100,
                "interest": c / 100,
                "balance": d / 100,
            }
            for i, (a, b, c, d) in enumerate(zip(pays, prins, ints, bals, strict=True))
        ],
    }


def exact_schedule(p: LoanAmortizationParams) -> dict[str, Any]:
    """Floats throughout, from the closed form of the balance after k periods."""
    n = p.periods
    r = p.annual_rate / p.periods_per_year
    payment = level_payment(p.principal, r, n)
    outflow = payment + p.extra_payment
    k = np.arange(0, n + 1, dtype=np.float64)
    if r == 0:
        balance = p.principal - outflow * k
    else:
        growth = (1.0 + r) ** k
        balance = p.principal * growth - outflow * (growth - 1.0) / r
    # The loan is repaid at the first period whose closed-form balance reaches zero; round-off
    # leaves dust at the nominal end, so compare against a relative tolerance.
    paid = np.flatnonzero(balance[1:] <= 1e-9 * p.principal)
    periods = int(paid[0]) + 1 if paid.size else n
    balance = np.clip(balance[: periods + 1], 0.0, None)
    balance[periods] = 0.0
    opening = balance[:-1]
    interest = opening * r
    payments = np.full(periods, outflow)
    payments[-1] = opening[-1] + interest[-1]  # the last instalment clears what is left
    principal_paid = payments - interest
    schedule = [
        {"period": i + 1, "payment": a, "principal": b, "interest": c, "balance": d}
        for i, (a, b, c, d) in enumerate(
            zip(
                payments.tolist(),
                principal_paid.tolist(),
                interest.tolist(),
                balance[1:].tolist(),
                strict=True,
            )
        )
    ]
    return {
        "payment": payment,
        "final_payment": float(payments[-1]),
        "periods": periods,
        "total_paid": float(payments.sum()),
        "total_interest": float(interest.sum()),
        "schedule": schedule,
    }


def loan_amortization(p: LoanAmortizationParams, ctx: RunContext) -> dict[str, Any]:
    out = cent_schedule(p) if p.rounding == "cent" else exact_schedule(p)
    ctx.progress(1.0)
    return {"rounding": p.rounding, **out}
