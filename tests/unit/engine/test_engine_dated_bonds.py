"""Bonds with dates against QuantLib's FixedRateBond (test-only), by day count, to 1e-8.

Tolerance: both sides sum the same few dozen discounted flows in double precision, so they
agree to round-off; 1e-8 (relative, on prices per 100 of face) leaves room for QuantLib's
yield solver, asked for 1e-12, and nothing more.
"""

import datetime as dt
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from finq_engine.context import NullContext
from finq_engine.dated_bonds import DAY_COUNTS, DatedBondParams, dated_bonds
from finq_engine.jsonsafe import to_json

ql = pytest.importorskip("QuantLib")


def run(**params: Any) -> dict[str, Any]:
    out: dict[str, Any] = to_json(dated_bonds(DatedBondParams(**params), NullContext()))
    return out


def ql_day_count(name: str) -> Any:
    return {
        "30/360 US": ql.Thirty360(ql.Thirty360.USA),
        "30E/360": ql.Thirty360(ql.Thirty360.European),
        "ACT/360": ql.Actual360(),
        "ACT/365F": ql.Actual365Fixed(),
        "ACT/ACT ICMA": ql.ActualActual(ql.ActualActual.ISMA),
    }[name]


def ql_date(d: str) -> Any:
    y, m, day = (int(x) for x in d.split("-"))
    return ql.Date(day, m, y)


def quantlib_bond(
    settlement: str, maturity: str, previous: str, coupon: float, freq: int, day_count: str
) -> tuple[Any, Any]:
    settle = ql_date(settlement)
    ql.Settings.instance().evaluationDate = settle
    mat = ql_date(maturity)
    schedule = ql.Schedule(
        ql_date(previous),
        mat,
        ql.Period(12 // freq, ql.Months),
        ql.NullCalendar(),
        ql.Unadjusted,
        ql.Unadjusted,
        ql.DateGeneration.Backward,
        ql.Date.isEndOfMonth(mat),
    )
    dc = ql_day_count(day_count)
    bond = ql.FixedRateBond(0, 100.0, schedule, [coupon], dc)
    return bond, dc


CASES = [
    ("2025-03-15", "2035-08-15", 0.045, 2),
    ("2024-02-29", "2031-08-31", 0.03, 2),
    ("2025-01-31", "2030-07-31", 0.05, 4),
    ("2025-06-10", "2027-02-28", 0.0625, 12),
    ("2026-11-02", "2056-05-15", 0.02, 1),
    ("2025-08-15", "2030-08-15", 0.04, 2),  # settlement on a coupon date: no accrued
]


@pytest.mark.parametrize("day_count", DAY_COUNTS)
@pytest.mark.parametrize(("settlement", "maturity", "coupon", "freq"), CASES)
def test_price_accrued_yield_durations_and_convexity_match_quantlib(
    settlement: str, maturity: str, coupon: float, freq: int, day_count: str
) -> None:
    y = 0.0473
    out = run(
        settlement=settlement,
        maturity=maturity,
        coupon_rate=coupon,
        frequency=freq,
        day_count=day_count,
        yield_=y,
    )
    bond, dc = quantlib_bond(
        settlement, maturity, out["previous_coupon_date"], coupon, freq, day_count
    )
    settle = ql_date(settlement)
    rate = ql.InterestRate(y, dc, ql.Compounded, freq)
    assert out["clean_price"] == pytest.approx(
        ql.BondFunctions.cleanPrice(bond, rate, settle), rel=1e-8
    )
    assert out["accrued_interest"] == pytest.approx(bond.accruedAmount(settle), rel=1e-8, abs=1e-12)
    assert out["macaulay_duration"] == pytest.approx(
        ql.BondFunctions.duration(bond, rate, ql.Duration.Macaulay, settle), rel=1e-8
    )
    assert out["modified_duration"] == pytest.approx(
        ql.BondFunctions.duration(bond, rate, ql.Duration.Modified, settle), rel=1e-8
    )
    assert out["convexity"] == pytest.approx(
        ql.BondFunctions.convexity(bond, rate, settle), rel=1e-8
    )
    # And back: the yield from that clean price.
    back = run(
        settlement=settlement,
        maturity=maturity,
        coupon_rate=coupon,
        frequency=freq,
        day_count=day_count,
        price=out["clean_price"],
    )
    assert back["yield"] == pytest.approx(y, abs=1e-10)
    assert back["dirty_price"] == pytest.approx(out["dirty_price"], rel=1e-12)
    flows = out["cash_flows"]
    theirs = [(cf.date().ISO(), cf.amount()) for cf in bond.cashflows() if cf.date() > settle]
    merged: dict[str, float] = {}
    for d, a in theirs:
        merged[d] = merged.get(d, 0.0) + a
    assert flows["date"] == list(merged)
    np.testing.assert_allclose(flows["amount"], list(merged.values()), rtol=1e-12)


def test_ten_thousand_bonds_in_one_request_equal_their_single_runs() -> None:
    rng = np.random.default_rng(3)
    n = 10_000
    base = np.datetime64("2025-01-01")
    settle = base + rng.integers(0, 365, n)
    mature = settle + rng.integers(200, 30 * 365, n)
    params = {
        "settlement": [str(d) for d in settle.tolist()],
        "maturity": [str(d) for d in mature.tolist()],
        "coupon_rate": rng.uniform(0, 0.08, n).round(4).tolist(),
        "frequency": rng.choice([1, 2, 4, 12], n).tolist(),
        "day_count": rng.choice(list(DAY_COUNTS), n).tolist(),
        "yield": rng.uniform(0.0, 0.09, n).tolist(),
    }
    many = run(**params)
    assert len(many["clean_price"]) == n
    for i in (0, 17, 4242, n - 1):
        one = run(**{k: v[i] for k, v in params.items()})
        for key in ("clean_price", "accrued_interest", "macaulay_duration", "convexity"):
            assert many[key][i] == pytest.approx(one[key], rel=1e-13)


def test_a_par_bond_on_a_coupon_date_prices_at_par() -> None:
    out = run(
        settlement="2025-05-15",
        maturity="2035-05-15",
        coupon_rate=0.05,
        frequency=2,
        day_count="ACT/ACT ICMA",
        yield_=0.05,
    )
    assert out["clean_price"] == pytest.approx(100.0, rel=1e-12)
    assert out["accrued_interest"] == 0.0


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"maturity": "2024-01-01"}, "maturity"),
        ({"maturity": "2025-03-15"}, "maturity"),
        ({"day_count": "ACT/ACT ISDA"}, "day_count"),
        ({"frequency": 3}, "frequency"),
        ({"yield": None, "price": 1e9}, "price"),
        ({"price": 99.0}, "price"),
        ({"settlement": "2025-02-30"}, "settlement"),
        # Lists that do not broadcast: the later field in the schema's order is named.
        ({"coupon_rate": [0.01, 0.02], "maturity": ["2030-01-01"] * 3}, "coupon_rate"),
    ],
)
def test_bad_inputs_name_the_field(params: dict[str, Any], field: str) -> None:
    base = {
        "settlement": "2025-03-15",
        "maturity": "2030-03-15",
        "coupon_rate": 0.04,
        "yield": 0.05,
    }
    with pytest.raises(ValidationError) as info:
        DatedBondParams(**{**base, **params})
    assert {e["loc"][0] for e in info.value.errors()} == {field}


def test_dates_are_accepted_as_date_objects_too() -> None:
    out = run(
        settlement=dt.date(2025, 3, 15),
        maturity=dt.date(2030, 3, 15),
        coupon_rate=0.04,
        yield_=0.04,
    )
    assert out["clean_price"] == pytest.approx(100.0, rel=1e-12)
