"""Loan amortization against numpy-financial's pmt/ipmt/ppmt."""

from typing import Any

import numpy as np
import numpy_financial as npf
import pytest
from pydantic import ValidationError

from finq_engine.amortization import LoanAmortizationParams, loan_amortization
from finq_engine.context import NullContext


def run(**params: Any) -> dict[str, Any]:
    return loan_amortization(LoanAmortizationParams(**params), NullContext())


@pytest.mark.parametrize(
    ("principal", "rate", "years", "per_year"),
    [(10_000, 0.05, 30, 12), (250_000, 0.0675, 15, 12), (5_000, 0.12, 3, 52), (1e6, 0.03, 10, 4)],
)
def test_schedule_matches_numpy_financial(
    principal: float, rate: float, years: int, per_year: int
) -> None:
    out = run(principal=principal, annual_rate=rate, years=years, periods_per_year=per_year)
    n, r = years * per_year, rate / per_year
    assert out["periods"] == n
    assert out["payment"] == pytest.approx(-npf.pmt(r, n, principal), abs=0.005)
    per = np.arange(1, n + 1)
    interest = -npf.ipmt(r, per, n, principal)
    principal_paid = -npf.ppmt(r, per, n, principal)
    schedule = out["schedule"]
    np.testing.assert_allclose([row["interest"] for row in schedule], interest, atol=0.0051)
    np.testing.assert_allclose([row["principal"] for row in schedule], principal_paid, atol=0.0051)
    assert schedule[-1]["balance"] == 0.0
    assert out["total_interest"] == pytest.approx(interest.sum(), abs=0.01 * n)


def test_zero_rate_splits_principal_evenly() -> None:
    out = run(principal=1200, annual_rate=0, years=1)
    assert out["payment"] == 100.0 and out["total_interest"] == 0.0
    assert [row["balance"] for row in out["schedule"]][-1] == 0.0


def test_extra_payment_shortens_the_loan_and_matches_nper() -> None:
    principal, rate, extra = 200_000, 0.06, 300.0
    base = run(principal=principal, annual_rate=rate, years=30)
    faster = run(principal=principal, annual_rate=rate, years=30, extra_payment=extra)
    expected = npf.nper(rate / 12, -(base["payment"] + extra), principal)
    assert faster["periods"] == int(np.ceil(expected))
    assert faster["total_interest"] < base["total_interest"]
    paid = sum(row["principal"] for row in faster["schedule"])
    assert paid == pytest.approx(principal, abs=0.01 * faster["periods"])


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"principal": 0, "annual_rate": 0.05, "years": 30}, "principal"),
        ({"principal": 1000, "annual_rate": -0.01, "years": 30}, "annual_rate"),
        ({"principal": 1000, "annual_rate": float("nan"), "years": 30}, "annual_rate"),
        ({"principal": 1000, "annual_rate": 0.05, "years": 0}, "years"),
    ],
)
def test_bad_inputs_name_the_field(params: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        LoanAmortizationParams(**params)
    assert {e["loc"][0] for e in info.value.errors()} == {field}
