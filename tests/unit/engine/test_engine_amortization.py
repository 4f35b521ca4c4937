"""Loan amortization: exact floats against numpy-financial, cents against a `decimal` ledger."""

from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import numpy as np
import numpy_financial as npf
import pytest
from pydantic import ValidationError

from finq_engine.amortization import LoanAmortizationParams, loan_amortization
from finq_engine.context import NullContext

CENT = Decimal("0.01")


def run(**params: Any) -> dict[str, Any]:
    return loan_amortization(LoanAmortizationParams(**params), NullContext())


def decimal_ledger(
    principal: str, annual_rate: str, years: int, per_year: int, extra: str = "0"
) -> list[tuple[Decimal, Decimal, Decimal, Decimal]]:
    """An independent statement in `decimal`: (payment, principal, interest, balance) rows."""
    n = years * per_year
    r = Decimal(annual_rate) / per_year
    balance = Decimal(principal)
    if r == 0:
        level = (balance / n).quantize(CENT, ROUND_HALF_UP)
    else:
        level = (balance * r / (1 - (1 + r) ** -n)).quantize(CENT, ROUND_HALF_UP)
    outflow = level + Decimal(extra)
    rows = []
    for period in range(1, n + 1):
        interest = (balance * r).quantize(CENT, ROUND_HALF_UP)
        pay = min(outflow, balance + interest)
        if period == n:
            pay = balance + interest
        balance -= pay - interest
        rows.append((pay, pay - interest, interest, balance))
        if balance == 0:
            break
    return rows


def as_decimal(value: float) -> Decimal:
    return Decimal(repr(value))


def test_a_30_year_5_percent_loan_of_10000_reconciles_to_the_cent() -> None:
    out = run(principal=10_000, annual_rate=0.05, years=30)
    rows = out["schedule"]
    assert out["rounding"] == "cent" and out["periods"] == 360 and out["payment"] == 53.68
    pays = [as_decimal(r["payment"]) for r in rows]
    assert sum(pays) == as_decimal(out["total_paid"])
    assert sum(as_decimal(r["interest"]) for r in rows) == as_decimal(out["total_interest"])
    assert as_decimal(out["total_paid"]) - as_decimal(out["total_interest"]) == Decimal(10_000)
    previous = Decimal(10_000)
    for r in rows:
        pay, prin, inte, bal = (
            as_decimal(r[k]) for k in ("payment", "principal", "interest", "balance")
        )
        assert pay == prin + inte
        assert bal == previous - prin
        assert inte == (previous * Decimal("0.05") / 12).quantize(CENT, ROUND_HALF_UP)
        assert all(x == x.quantize(CENT) for x in (pay, prin, inte, bal))
        previous = bal
    assert previous == 0
    assert all(p == Decimal("53.68") for p in pays[:-1])
    assert as_decimal(out["final_payment"]) == pays[-1]


@pytest.mark.parametrize(
    ("principal", "rate", "years", "per_year", "extra"),
    [
        ("10000", "0.05", 30, 12, "0"),
        ("250000", "0.0675", 15, 12, "0"),
        ("5000", "0.12", 3, 52, "0"),
        ("1000000", "0.03", 10, 4, "0"),
        ("200000", "0.06", 30, 12, "300"),
        ("1200", "0", 1, 12, "0"),
        ("999.99", "0.1999", 7, 365, "1.01"),
    ],
)
def test_cent_schedule_equals_an_independent_decimal_ledger(
    principal: str, rate: str, years: int, per_year: int, extra: str
) -> None:
    out = run(
        principal=float(principal),
        annual_rate=float(rate),
        years=years,
        periods_per_year=per_year,
        extra_payment=float(extra),
    )
    expected = decimal_ledger(principal, rate, years, per_year, extra)
    got = [
        tuple(as_decimal(r[k]) for k in ("payment", "principal", "interest", "balance"))
        for r in out["schedule"]
    ]
    assert got == expected
    assert as_decimal(out["total_paid"]) == sum(row[0] for row in expected)


@pytest.mark.parametrize(
    ("principal", "rate", "years", "per_year"),
    [(10_000, 0.05, 30, 12), (250_000, 0.0675, 15, 12), (5_000, 0.12, 3, 52), (1e6, 0.03, 10, 4)],
)
def test_unrounded_schedule_matches_numpy_financial(
    principal: float, rate: float, years: int, per_year: int
) -> None:
    out = run(
        principal=principal,
        annual_rate=rate,
        years=years,
        periods_per_year=per_year,
        rounding="none",
    )
    n, r = years * per_year, rate / per_year
    assert out["periods"] == n
    assert out["payment"] == pytest.approx(-npf.pmt(r, n, principal), rel=1e-12)
    per = np.arange(1, n + 1)
    schedule = out["schedule"]
    scale = 1e-9 * principal  # closed form vs numpy-financial's own: round-off only
    np.testing.assert_allclose(
        [row["interest"] for row in schedule], -npf.ipmt(r, per, n, principal), atol=scale
    )
    np.testing.assert_allclose(
        [row["principal"] for row in schedule], -npf.ppmt(r, per, n, principal), atol=scale
    )
    assert schedule[-1]["balance"] == 0.0
    # numpy sums pairwise, `sum` left to right: the same rows, round-off apart
    assert out["total_paid"] == pytest.approx(sum(row["payment"] for row in schedule), rel=1e-13)
    assert out["total_interest"] == pytest.approx(out["total_paid"] - principal, rel=1e-9)


def test_cent_and_unrounded_schedules_differ_by_cents_only() -> None:
    cents = run(principal=300_000, annual_rate=0.0475, years=30)
    exact = run(principal=300_000, annual_rate=0.0475, years=30, rounding="none")
    assert cents["periods"] == exact["periods"] == 360
    # The payment is off by at most half a cent a period; compounded, that moves the total
    # by a few dollars at most.
    assert abs(cents["total_paid"] - exact["total_paid"]) < 360 * 0.005 * 2


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
    paid = sum(as_decimal(row["principal"]) for row in faster["schedule"])
    assert paid == Decimal(principal)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"principal": 0, "annual_rate": 0.05, "years": 30}, "principal"),
        ({"principal": 1000, "annual_rate": -0.01, "years": 30}, "annual_rate"),
        ({"principal": 1000, "annual_rate": float("nan"), "years": 30}, "annual_rate"),
        ({"principal": 1000, "annual_rate": 0.05, "years": 0}, "years"),
        ({"principal": 1000, "annual_rate": 0.05, "years": 1, "rounding": "euro"}, "rounding"),
    ],
)
def test_bad_inputs_name_the_field(params: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        LoanAmortizationParams(**params)
    assert {e["loc"][0] for e in info.value.errors()} == {field}
