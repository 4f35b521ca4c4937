"""Loan amortization: level payments, optional extra principal each period, closed form.

The balance after k periods has a closed form, so the whole schedule is one vectorised
expression instead of a loop over periods; extra payments only change the per-period outflow.
"""

from typing import Any

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

    @model_validator(mode="after")
    def _whole_number_of_periods(self) -> "LoanAmortizationParams":
        n = self.years * self.periods_per_year
        if abs(n - round(n)) > 1e-9:
            raise ValueError("years x periods_per_year must be a whole number of periods")
        return self

    @property
    def periods(self) -> int:
        return round(self.years * self.periods_per_year)


def level_payment(principal: float, rate: float, periods: int) -> float:
    """The payment that repays `principal` in `periods` equal instalments at `rate` per period."""
    if rate == 0:
        return principal / periods
    return principal * rate / (1.0 - (1.0 + rate) ** -periods)


def loan_amortization(p: LoanAmortizationParams, ctx: RunContext) -> dict[str, Any]:
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
    # leaves a few cents of dust at the nominal end, so compare against a relative tolerance.
    paid = np.flatnonzero(balance[1:] <= 1e-9 * p.principal)
    periods = int(paid[0]) + 1 if paid.size else n
    balance = np.clip(balance[: periods + 1], 0.0, None)
    balance[periods] = 0.0

    opening = balance[:-1]
    interest = opening * r
    payments = np.full(periods, outflow)
    payments[-1] = opening[-1] + interest[-1]  # the last instalment clears what is left
    principal_paid = payments - interest
    ctx.progress(1.0)

    total_paid = float(payments.sum())
    schedule = [
        {"period": i + 1, "payment": pay, "principal": prin, "interest": inte, "balance": bal}
        for i, (pay, prin, inte, bal) in enumerate(
            zip(
                np.round(payments, 2).tolist(),
                np.round(principal_paid, 2).tolist(),
                np.round(interest, 2).tolist(),
                np.round(balance[1:], 2).tolist(),
                strict=True,
            )
        )
    ]
    return {
        "payment": round(payment, 2),
        "periods": periods,
        "total_paid": round(total_paid, 2),
        "total_interest": round(total_paid - p.principal, 2),
        "schedule": schedule,
    }
