"""Bond analytics: textbook prices, price-yield round trips, and finite-difference risk."""

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from finq_engine.bonds import BondParams, bond_analytics, price_at
from finq_engine.context import NullContext


def run(**params: Any) -> dict[str, Any]:
    return bond_analytics(BondParams.model_validate(params), NullContext())


def reference_price(face: float, coupon: float, years: float, freq: int, y: float) -> float:
    """Annuity plus discounted face, the closed form (not the engine's cash-flow sum)."""
    n = round(years * freq)
    i = y / freq
    c = coupon * face / freq
    annuity = n if i == 0 else (1 - (1 + i) ** -n) / i
    return c * annuity + face * (1 + i) ** -n


@pytest.mark.parametrize("frequency", [1, 2, 4, 12])
def test_par_bond_prices_at_face(frequency: int) -> None:
    out = run(face_value=1000, coupon_rate=0.06, maturity=7, frequency=frequency, **{"yield": 0.06})
    assert out["price"] == pytest.approx(1000, rel=1e-13)


def test_textbook_price() -> None:
    # 10-year 5% semi-annual bond at a 6% yield: 2.5 a(20, 3%) + 100 v^20 = 92.56.
    out = run(coupon_rate=0.05, maturity=10, frequency=2, **{"yield": 0.06})
    assert round(out["price"], 2) == 92.56
    assert out["price"] == pytest.approx(reference_price(100, 0.05, 10, 2, 0.06), rel=1e-13)


@pytest.mark.parametrize(
    ("coupon", "years", "freq", "y"),
    [
        (0.05, 10, 2, 0.061),
        (0.0, 30, 1, 0.04),
        (0.08, 0.25, 4, 0.02),
        (0.03, 100, 12, 0.2),
        (0.02, 5, 2, -0.005),
        (0.1, 2, 1, 3.0),
    ],
)
def test_price_yield_round_trip(coupon: float, years: float, freq: int, y: float) -> None:
    priced = run(coupon_rate=coupon, maturity=years, frequency=freq, **{"yield": y})
    assert priced["price"] == pytest.approx(reference_price(100, coupon, years, freq, y), rel=1e-12)
    back = run(coupon_rate=coupon, maturity=years, frequency=freq, price=priced["price"])
    assert back["yield"] == pytest.approx(y, abs=1e-11)
    assert back["price"] == priced["price"]
    for key in ("macaulay_duration", "modified_duration", "convexity"):
        assert back[key] == pytest.approx(priced[key], rel=1e-9)


@pytest.mark.parametrize(
    ("coupon", "years", "freq", "y"),
    [(0.05, 10, 2, 0.045), (0.0, 20, 1, 0.03), (0.07, 3, 12, 0.09), (0.04, 30, 4, 0.01)],
)
def test_duration_and_convexity_match_finite_differences(
    coupon: float, years: float, freq: int, y: float
) -> None:
    out = run(face_value=1000, coupon_rate=coupon, maturity=years, frequency=freq, **{"yield": y})
    h = 1e-5

    def price(rate: float) -> float:
        return reference_price(1000, coupon, years, freq, rate)

    p0, up, down = price(y), price(y + h), price(y - h)
    assert out["modified_duration"] == pytest.approx(-(up - down) / (2 * h) / p0, rel=1e-7)
    assert out["convexity"] == pytest.approx((up - 2 * p0 + down) / h**2 / p0, rel=1e-5)
    assert out["macaulay_duration"] == pytest.approx(
        out["modified_duration"] * (1 + y / freq), rel=1e-14
    )


def test_zero_coupon_macaulay_duration_is_maturity() -> None:
    out = run(coupon_rate=0, maturity=12, frequency=2, **{"yield": 0.05})
    assert out["macaulay_duration"] == pytest.approx(12, rel=1e-14)


def test_yield_given_by_field_name_or_alias_and_schema_says_yield() -> None:
    by_alias = BondParams.model_validate({"coupon_rate": 0.05, "maturity": 5, "yield": 0.04})
    by_name = BondParams.model_validate({"coupon_rate": 0.05, "maturity": 5, "yield_": 0.04})
    assert by_alias.yield_ == by_name.yield_ == 0.04
    properties = BondParams.model_json_schema()["properties"]
    assert "yield" in properties and "yield_" not in properties


@settings(max_examples=100, deadline=None)
@given(
    coupon=st.floats(0, 0.2),
    periods=st.integers(1, 400),
    freq=st.sampled_from([1, 2, 4, 12]),
    yields=st.lists(st.floats(-0.5, 5), min_size=2, max_size=30, unique=True),
)
def test_price_strictly_decreasing_in_yield(
    coupon: float, periods: int, freq: int, yields: list[float]
) -> None:
    n = min(periods, 100 * freq)
    k = np.arange(1, n + 1, dtype=np.float64)
    flows = np.full(n, coupon * 100 / freq)
    flows[-1] += 100
    ys = np.sort(np.asarray(yields))
    prices = price_at(flows, k, freq, ys)
    # Non-increasing up to summation round-off; strictly decreasing for distinct yields.
    assert np.all(np.diff(prices) <= 1e-12 * prices[:-1])
    assert np.all(np.diff(prices)[np.diff(ys) > 1e-6] < 0)


# --- validation --------------------------------------------------------------------------------


def error_fields(**params: Any) -> set[Any]:
    with pytest.raises(ValidationError) as info:
        BondParams.model_validate(params)
    return {e["loc"][0] for e in info.value.errors()}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"coupon_rate": 0.05, "maturity": 10.3, "yield": 0.05}, "maturity"),
        ({"coupon_rate": 0.05, "maturity": 0.5, "frequency": 1, "yield": 0.05}, "maturity"),
        ({"coupon_rate": 0.05, "maturity": 0, "yield": 0.05}, "maturity"),
        ({"coupon_rate": 0.05, "maturity": 101, "yield": 0.05}, "maturity"),
        ({"coupon_rate": 0.05, "maturity": 10}, "price"),  # neither
        ({"coupon_rate": 0.05, "maturity": 10, "yield": 0.05, "price": 99}, "price"),  # both
        ({"coupon_rate": 0.05, "maturity": 10, "price": 0}, "price"),
        ({"coupon_rate": 0.05, "maturity": 10, "price": -5}, "price"),
        ({"coupon_rate": 0.05, "maturity": 10, "price": 1e-6}, "price"),  # yield beyond range
        ({"coupon_rate": 0.05, "maturity": 10, "yield": float("nan")}, "yield"),
        ({"coupon_rate": -0.01, "maturity": 10, "yield": 0.05}, "coupon_rate"),
        ({"coupon_rate": 0.05, "maturity": 10, "frequency": 3, "yield": 0.05}, "frequency"),
        ({"coupon_rate": 0.05, "maturity": 10, "face_value": 0, "yield": 0.05}, "face_value"),
    ],
)
def test_bad_inputs_name_the_field(params: dict[str, Any], field: str) -> None:
    assert error_fields(**params) == {field}
