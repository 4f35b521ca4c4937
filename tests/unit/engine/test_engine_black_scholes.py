"""Black-Scholes against textbook values, an independent SciPy formula, parity and bumps."""

import itertools
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from scipy import stats

from finq_engine.black_scholes import MAX_ELEMENTS, BlackScholesParams, black_scholes
from finq_engine.context import NullContext

HULL = {"spot": 42, "strike": 40, "maturity": 0.5, "rate": 0.1, "volatility": 0.2}


def run(**params: Any) -> dict[str, Any]:
    return black_scholes(BlackScholesParams(**params), NullContext())


def N(x: float) -> float:
    """The standard normal CDF (SciPy's)."""
    return float(stats.norm.cdf(x))


def scipy_price(s: float, k: float, t: float, r: float, v: float, q: float, kind: str) -> float:
    d1 = (math.log(s / k) + (r - q + v * v / 2) * t) / (v * math.sqrt(t))
    d2 = d1 - v * math.sqrt(t)
    if kind == "call":
        return s * math.exp(-q * t) * N(d1) - k * math.exp(-r * t) * N(d2)
    return k * math.exp(-r * t) * N(-d2) - s * math.exp(-q * t) * N(-d1)


def test_hull_example_call_and_put() -> None:
    # Hull, Options, Futures and Other Derivatives, example 15.6: c = 4.76, p = 0.81.
    assert round(run(**HULL, option_type="call")["price"], 2) == 4.76
    assert round(run(**HULL, option_type="put")["price"], 2) == 0.81


def test_scalar_inputs_give_floats() -> None:
    out = run(**HULL, option_type="call")
    assert set(out) == {"price", "delta", "gamma", "vega", "theta", "rho"}
    assert all(isinstance(v, float) for v in out.values())


def test_matches_independent_scipy_formula_on_arrays() -> None:
    rng = np.random.default_rng(7)
    n = 200
    s, k = rng.uniform(20, 200, n), rng.uniform(20, 200, n)
    t, v = rng.uniform(0.05, 5, n), rng.uniform(0.05, 1.0, n)
    r, q = rng.uniform(-0.02, 0.1, n), rng.uniform(0, 0.05, n)
    for kind in ("call", "put"):
        out = run(
            spot=s.tolist(),
            strike=k.tolist(),
            maturity=t.tolist(),
            rate=r.tolist(),
            volatility=v.tolist(),
            dividend_yield=q.tolist(),
            option_type=kind,
        )
        expected = [
            scipy_price(si, ki, ti, ri, vi, qi, kind)
            for si, ki, ti, ri, vi, qi in zip(s, k, t, r, v, q, strict=True)
        ]
        np.testing.assert_allclose(out["price"], expected, rtol=1e-10, atol=1e-10)


def test_put_call_parity_with_dividends() -> None:
    strikes = np.linspace(50, 150, 41).tolist()
    common = {"spot": 100, "strike": strikes, "maturity": 1.5, "rate": 0.03, "volatility": 0.3}
    common["dividend_yield"] = 0.02
    call = np.asarray(run(**common, option_type="call")["price"])
    put = np.asarray(run(**common, option_type="put")["price"])
    forward_gap = 100 * math.exp(-0.02 * 1.5) - np.asarray(strikes) * math.exp(-0.03 * 1.5)
    np.testing.assert_allclose(call - put, forward_gap, atol=1e-11)


@pytest.mark.parametrize("kind", ["call", "put"])
@pytest.mark.parametrize(
    "case",
    [
        {"spot": 42, "strike": 40, "maturity": 0.5, "rate": 0.1, "volatility": 0.2},
        {
            "spot": 100,
            "strike": 120,
            "maturity": 2.0,
            "rate": 0.03,
            "volatility": 0.45,
            "dividend_yield": 0.02,
        },
        {
            "spot": 80,
            "strike": 75,
            "maturity": 0.1,
            "rate": -0.01,
            "volatility": 0.15,
            "dividend_yield": 0.04,
        },
    ],
)
def test_greeks_match_finite_differences(kind: str, case: dict[str, float]) -> None:
    base = run(**case, option_type=kind)

    def price(**bump: float) -> float:
        params = {**case, **{k: case.get(k, 0.0) + v for k, v in bump.items()}}
        return float(run(**params, option_type=kind)["price"])

    hs, hv, ht, hr = 1e-5 * case["spot"], 1e-5, 1e-5, 1e-5
    delta = (price(spot=hs) - price(spot=-hs)) / (2 * hs)
    gamma = (price(spot=hs) - 2 * base["price"] + price(spot=-hs)) / hs**2
    vega = (price(volatility=hv) - price(volatility=-hv)) / (2 * hv)
    theta = -(price(maturity=ht) - price(maturity=-ht)) / (2 * ht)  # per year of time passing
    rho = (price(rate=hr) - price(rate=-hr)) / (2 * hr)
    assert base["delta"] == pytest.approx(delta, rel=1e-6, abs=1e-8)
    assert base["gamma"] == pytest.approx(gamma, rel=1e-4, abs=1e-7)
    assert base["vega"] == pytest.approx(vega, rel=1e-6, abs=1e-7)
    assert base["theta"] == pytest.approx(theta, rel=1e-6, abs=1e-7)
    assert base["rho"] == pytest.approx(rho, rel=1e-6, abs=1e-7)


def test_lists_broadcast_with_length_one_and_scalars() -> None:
    out = run(
        spot=[100],
        strike=[90, 100, 110],
        maturity=1,
        rate=[0.05],
        volatility=0.2,
        option_type="call",
    )
    assert all(isinstance(v, np.ndarray) and v.shape == (3,) for v in out.values())
    single = [
        run(spot=100, strike=k, maturity=1, rate=0.05, volatility=0.2, option_type="call")["price"]
        for k in (90, 100, 110)
    ]
    np.testing.assert_allclose(out["price"], single, rtol=1e-14)


def test_deep_in_and_out_of_the_money_limits() -> None:
    far = run(
        spot=100, strike=[1e-3, 1e6], maturity=1, rate=0.05, volatility=0.2, option_type="call"
    )
    assert far["price"][0] == pytest.approx(100 - 1e-3 * math.exp(-0.05), rel=1e-12)
    assert far["price"][1] == 0.0
    assert far["delta"][0] == pytest.approx(1.0) and far["delta"][1] == 0.0


# --- validation: every bad input is a 422 naming its field -----------------------------------


def error_fields(params: dict[str, Any]) -> set[Any]:
    with pytest.raises(ValidationError) as info:
        BlackScholesParams(**params)
    return {e["loc"][0] for e in info.value.errors()}


VALID = {**HULL, "option_type": "call"}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("volatility", 0),
        ("volatility", -0.2),
        ("maturity", 0),
        ("maturity", -1),
        ("spot", 0),
        ("spot", -42),
        ("strike", 0),
        ("spot", float("nan")),
        ("strike", float("inf")),
        ("volatility", [0.2, float("nan")]),
        ("maturity", [0.5, -0.5]),
        ("spot", []),
        ("option_type", "straddle"),
    ],
)
def test_bad_values_name_the_field(field: str, value: Any) -> None:
    assert error_fields({**VALID, field: value}) == {field}


def test_unequal_list_lengths_name_the_later_field() -> None:
    assert error_fields({**VALID, "spot": [40, 42, 44], "volatility": [0.2, 0.3]}) == {"volatility"}


def test_too_many_elements() -> None:
    assert error_fields({**VALID, "strike": [40.0] * (MAX_ELEMENTS + 1)}) == {"strike"}


def test_unknown_field_rejected() -> None:
    assert error_fields({**VALID, "vol": 0.2}) == {"vol"}


# --- the grid form: every combination of the lists ----------------------------------------

GREEKS = ("price", "delta", "gamma", "vega", "theta", "rho")
SURFACE = {
    "grid": True,
    "spot": [80.0, 95.0, 100.0, 120.0],
    "strike": [70.0, 90.0, 100.0, 110.0, 140.0],
    "maturity": [0.25, 1.5],
    "rate": 0.03,
    "volatility": [0.15, 0.4, 0.9],
    "dividend_yield": [0.01],
}


def expanded(params: dict[str, Any]) -> dict[str, Any]:
    """The grid's combinations written out as equal-length lists, spot varying slowest."""
    fields = ("spot", "strike", "maturity", "rate", "volatility", "dividend_yield")
    axes = [f for f in fields if isinstance(params.get(f), list) and len(params[f]) > 1]
    rows = list(itertools.product(*(params[f] for f in axes)))
    flat = {f: [row[i] for row in rows] for i, f in enumerate(axes)}
    return {**{k: v for k, v in params.items() if k != "grid"}, **flat}


@pytest.mark.parametrize("kind", ["call", "put"])
def test_a_grid_prices_what_its_combinations_written_out_price(kind: str) -> None:
    grid = run(**SURFACE, option_type=kind)
    flat = run(**expanded(SURFACE), option_type=kind)
    assert len(grid["price"]) == 4 * 5 * 2 * 3
    for name in GREEKS:
        np.testing.assert_allclose(grid[name], flat[name], rtol=1e-12, atol=0)


def test_a_grid_is_row_major_with_spot_varying_slowest() -> None:
    market = {"maturity": 0.5, "rate": 0.02, "volatility": 0.25, "option_type": "call"}
    out = run(**market, grid=True, spot=[90, 110], strike=[80, 100, 120])
    by_hand = [
        run(**market, spot=s, strike=k)["price"]
        for s, k in [(90, 80), (90, 100), (90, 120), (110, 80), (110, 100), (110, 120)]
    ]
    np.testing.assert_allclose(out["price"], by_hand, rtol=1e-12)


def test_a_grid_result_carries_each_list_fields_value_per_option_first() -> None:
    out = run(**SURFACE, option_type="call")
    assert list(out) == ["spot", "strike", "maturity", "volatility", *GREEKS]
    flat = expanded(SURFACE)
    for name in ("spot", "strike", "maturity", "volatility"):
        assert out[name].tolist() == flat[name]
    assert all(v.shape == (120,) for v in out.values())


def test_a_grid_of_numbers_only_gives_floats_as_without_grid() -> None:
    assert run(**HULL, grid=True, option_type="call") == run(**HULL, option_type="call")


def test_a_grid_of_one_list_is_the_list_form_with_its_coordinates() -> None:
    strikes = [90.0, 100.0, 110.0, 120.0]
    params = {**HULL, "strike": strikes, "option_type": "put"}
    grid, flat = run(**params, grid=True), run(**params)
    assert grid["strike"].tolist() == strikes
    assert {k: v.tolist() for k, v in grid.items() if k != "strike"} == {
        k: v.tolist() for k, v in flat.items()
    }


def test_put_call_parity_holds_on_a_grid() -> None:
    call = run(**SURFACE, option_type="call")
    put = run(**SURFACE, option_type="put")
    s, k, t, v = call["spot"], call["strike"], call["maturity"], call["volatility"]
    assert v.size == call["price"].size  # volatility is an axis, parity does not involve it
    forward_gap = s * np.exp(-0.01 * t) - k * np.exp(-0.03 * t)
    np.testing.assert_allclose(call["price"] - put["price"], forward_gap, rtol=1e-10)


def test_unequal_list_lengths_are_a_grid_but_refused_without_one() -> None:
    params = {**VALID, "spot": [40, 42, 44], "volatility": [0.2, 0.3]}
    assert len(run(**params, grid=True)["price"]) == 6
    with pytest.raises(ValidationError) as info:
        BlackScholesParams(**params)
    (problem,) = info.value.errors()
    assert problem["loc"] == ("volatility",)
    assert "has 2 elements but spot has 3; lists must have equal length or length 1" in str(
        problem["msg"]
    )


def test_a_grid_over_the_element_bound_is_refused_naming_its_counts() -> None:
    params = {**VALID, "grid": True, "spot": [42.0] * 2000, "strike": [40.0] * 1000}
    with pytest.raises(ValidationError) as info:
        BlackScholesParams(**params)
    (problem,) = info.value.errors()
    assert problem["loc"] == ("strike",)
    assert (
        "grid has 2,000,000 combinations (spot 2000 x strike 1000), at most 1,000,000"
        in problem["msg"]
    )
    # 2000 x 500 is the bound itself; a one-element list is a constant, not an axis.
    assert BlackScholesParams(**{**params, "strike": [40.0] * 500, "volatility": [0.2]}).grid


# --- properties --------------------------------------------------------------------------------

market = st.fixed_dictionaries(
    {
        "strike": st.floats(1, 1000),
        "maturity": st.floats(0.01, 5),
        "rate": st.floats(-0.05, 0.2),
        "dividend_yield": st.floats(0, 0.1),
        "volatility": st.floats(0.01, 2),
    }
)


@settings(max_examples=150, deadline=None)
@given(market=market, spots=st.lists(st.floats(1, 1000), min_size=2, max_size=20))
def test_call_price_monotone_in_spot_and_within_bounds(
    market: dict[str, float], spots: list[float]
) -> None:
    spots = sorted(spots)
    t, r, q, k = market["maturity"], market["rate"], market["dividend_yield"], market["strike"]
    s = np.asarray(spots)
    fwd, pv_k = s * math.exp(-q * t), k * math.exp(-r * t)
    tol = 1e-9 * (s + k)
    call = np.asarray(run(**market, spot=spots, option_type="call")["price"])
    put = np.asarray(run(**market, spot=spots, option_type="put")["price"])
    assert np.all(np.diff(call) >= -tol[1:])
    assert np.all(np.diff(put) <= tol[1:])
    assert np.all(call >= np.maximum(fwd - pv_k, 0) - tol)
    assert np.all(call <= fwd + tol)
    assert np.all(put >= np.maximum(pv_k - fwd, 0) - tol)
    assert np.all(put <= pv_k + tol)
