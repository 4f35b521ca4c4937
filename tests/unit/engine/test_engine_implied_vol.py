"""Implied volatility: round trips through Black-Scholes, QuantLib (test-only), bounds, fields.

Tolerance. A double price determines the volatility only to about its rounding error divided
by vega (d sigma = d price / vega). Round trips are checked to 1e-8 in volatility wherever
vega >= 1e-7 x max(S, K), where that rounding error (~1e-16 x price) moves sigma by < 1e-9;
elsewhere the price itself does not pin the volatility down to 1e-8 and only the price is
checked (the solution reprices the quote).
"""

import math
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from finq_engine.black_scholes import bs_price_greeks
from finq_engine.context import NullContext
from finq_engine.errors import Cancelled
from finq_engine.implied_vol import (
    REASON_ABOVE,
    REASON_BELOW,
    REASON_TOO_HIGH,
    ImpliedVolParams,
    implied_vol,
    implied_volatility,
)
from finq_engine.jsonsafe import to_json

ql = pytest.importorskip("QuantLib")


def run(ctx: NullContext | None = None, /, **params: Any) -> dict[str, Any]:
    out: dict[str, Any] = to_json(implied_vol(ImpliedVolParams(**params), ctx or NullContext()))
    return out


def random_market(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "spot": rng.uniform(50, 150, n),
        "strike": rng.uniform(40, 160, n),
        "maturity": rng.uniform(0.02, 5, n),
        "rate": rng.uniform(-0.01, 0.08, n),
        "dividend_yield": rng.uniform(0, 0.05, n),
        "vol": rng.uniform(0.03, 2.0, n),
        "is_call": rng.random(n) < 0.5,
    }


def test_round_trip_through_black_scholes_to_1e_8_where_the_price_determines_it() -> None:
    m = random_market(200_000, 1)
    args = (m["spot"], m["strike"], m["maturity"], m["rate"], m["vol"], m["dividend_yield"])
    call, put = bs_price_greeks(*args, True), bs_price_greeks(*args, False)
    price = np.where(m["is_call"], call["price"], put["price"])
    vol, code = implied_volatility(
        price, m["spot"], m["strike"], m["maturity"], m["rate"], m["dividend_yield"], m["is_call"]
    )
    determined = call["vega"] >= 1e-7 * np.maximum(m["spot"], m["strike"])
    solved = code == 0
    assert solved[determined].all()
    assert np.abs(vol - m["vol"])[determined].max() < 1e-8
    # Everywhere a volatility was returned it reprices the quote (to its rounding).
    again = bs_price_greeks(*args[:4], np.where(solved, vol, 0.2), args[5], True)["price"]
    again_put = bs_price_greeks(*args[:4], np.where(solved, vol, 0.2), args[5], False)["price"]
    repriced = np.where(m["is_call"], again, again_put)
    assert np.abs(repriced - price)[solved].max() < 1e-9 * np.maximum(m["spot"], m["strike"]).max()


def quantlib_implied_vol(
    price: float, s: float, k: float, t: float, r: float, q: float, is_call: bool
) -> float:
    """QuantLib's BlackScholesMertonProcess implied volatility (flat curves, ACT/365F)."""
    today = ql.Date(2, 1, 2025)
    ql.Settings.instance().evaluationDate = today
    dc = ql.Actual365Fixed()
    days = round(t * 365)
    option = ql.VanillaOption(
        ql.PlainVanillaPayoff(ql.Option.Call if is_call else ql.Option.Put, k),
        ql.EuropeanExercise(today + days),
    )
    process = ql.BlackScholesMertonProcess(
        ql.QuoteHandle(ql.SimpleQuote(s)),
        ql.YieldTermStructureHandle(ql.FlatForward(today, q, dc)),
        ql.YieldTermStructureHandle(ql.FlatForward(today, r, dc)),
        ql.BlackVolTermStructureHandle(ql.BlackConstantVol(today, ql.NullCalendar(), 0.2, dc)),
    )
    return float(option.impliedVolatility(price, process, 1e-12, 10_000, 1e-4, 5.0))


def test_agrees_with_quantlib_on_calls_and_puts() -> None:
    m = random_market(60, 7)
    days = np.round(m["maturity"] * 365)
    t = days / 365  # whole days, as QuantLib's dates count them
    vol_in = np.clip(m["vol"], 0.05, 1.5)
    args = (m["spot"], m["strike"], t, m["rate"], vol_in, m["dividend_yield"])
    price = np.where(
        m["is_call"], bs_price_greeks(*args, True)["price"], bs_price_greeks(*args, False)["price"]
    )
    vega = bs_price_greeks(*args, True)["vega"]
    keep = vega > 1e-3 * m["spot"]  # QuantLib's own solver stops at accuracy 1e-12 in price
    ours, code = implied_volatility(
        price, m["spot"], m["strike"], t, m["rate"], m["dividend_yield"], m["is_call"]
    )
    assert (code[keep] == 0).all()
    theirs = [
        quantlib_implied_vol(
            float(price[i]),
            float(m["spot"][i]),
            float(m["strike"][i]),
            float(t[i]),
            float(m["rate"][i]),
            float(m["dividend_yield"][i]),
            bool(m["is_call"][i]),
        )
        for i in np.flatnonzero(keep)
    ]
    # QuantLib's Brent stops at 1e-12 in price: divided by vega >= 1e-3 x S, < 1e-8 in vol.
    np.testing.assert_allclose(ours[keep], theirs, atol=1e-8)
    np.testing.assert_allclose(ours[keep], vol_in[keep], atol=1e-8)


def test_textbook_example_hull() -> None:
    # Hull: S=21, K=20, r=0.1, T=0.25, call price 1.875 -> implied volatility about 23.5%.
    out = run(price=1.875, spot=21, strike=20, maturity=0.25, rate=0.1, option_type="call")
    assert out["volatility"] == pytest.approx(0.2345, abs=5e-4)
    assert out["reason"] is None and out["solved"] == 1


def test_put_call_parity_gives_the_same_volatility() -> None:
    s, k, t, r, q, vol = 100.0, 120.0, 0.75, 0.03, 0.02, 0.31
    a = [np.array([x]) for x in (s, k, t, r, vol, q)]
    c = float(bs_price_greeks(a[0], a[1], a[2], a[3], a[4], a[5], True)["price"][0])
    p = c - s * math.exp(-q * t) + k * math.exp(-r * t)
    out = run(
        price=[c, p],
        spot=s,
        strike=k,
        maturity=t,
        rate=r,
        dividend_yield=q,
        option_type=["call", "put"],
    )
    assert out["volatility"] == pytest.approx([vol, vol], abs=1e-10)


def test_quotes_outside_the_no_arbitrage_bounds_get_null_and_a_reason() -> None:
    s, k, t, r = 100.0, 90.0, 1.0, 0.05
    lower_call = s - k * math.exp(-r * t)
    out = run(
        price=[lower_call - 0.5, lower_call, 100.5, 150.0, 89.0, 99.999999, 20.0],
        spot=s,
        strike=k,
        maturity=t,
        rate=r,
        option_type=["call", "call", "call", "call", "put", "call", "call"],
    )
    assert out["reason"][:5] == [
        REASON_BELOW,
        REASON_BELOW,
        REASON_ABOVE,
        REASON_ABOVE,
        REASON_ABOVE,
    ]
    assert out["volatility"][:5] == [None] * 5
    assert out["reason"][5] == REASON_TOO_HIGH and out["volatility"][5] is None
    assert out["reason"][6] is None and 0 < out["volatility"][6] < 1
    assert (out["solved"], out["unsolved"]) == (1, 6)


def test_a_million_quotes_in_chunks_with_progress_and_cancel() -> None:
    ctx = NullContext()
    n = 1_000_000
    out = run(ctx, price=[5.0] * n, spot=100, strike=100, maturity=1, rate=0.0, option_type="call")
    assert out["solved"] == n and len(out["volatility"]) == n
    assert ctx.calls[-1] == 1.0 and len(ctx.calls) == 4
    with pytest.raises(Cancelled):
        run(
            NullContext(cancel_after=1),
            price=[5.0] * n,
            spot=100,
            strike=100,
            maturity=1,
            rate=0.0,
            option_type="call",
        )


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"price": -1}, "price"),
        ({"price": [1, 2], "strike": [90, 100, 110]}, "strike"),
        ({"option_type": "straddle"}, "option_type"),
        ({"option_type": ["call", "put", "put"], "price": [1, 2]}, "option_type"),
        ({"maturity": 0}, "maturity"),
        ({"spot": float("nan")}, "spot"),
    ],
)
def test_bad_inputs_name_the_field(params: dict[str, Any], field: str) -> None:
    base = {
        "price": 5,
        "spot": 100,
        "strike": 100,
        "maturity": 1,
        "rate": 0.02,
        "option_type": "call",
    }
    with pytest.raises(ValidationError) as info:
        ImpliedVolParams(**{**base, **params})
    assert {e["loc"][0] for e in info.value.errors()} == {field}
