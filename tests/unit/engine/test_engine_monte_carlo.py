"""Monte Carlo options against closed forms, an independent simulation, and its own contract.

Path counts are modest so the module runs in a few seconds; every statistical comparison is
"within 4 standard errors" (a false alarm about once in 16,000 runs, and the seeds are fixed).
"""

import math
import tracemalloc
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError
from scipy import stats

from finq_engine import monte_carlo
from finq_engine.context import NullContext
from finq_engine.errors import Cancelled
from finq_engine.monte_carlo import (
    CHUNK_BYTES,
    MAX_PATH_STEPS,
    MonteCarloOptionParams,
    monte_carlo_option,
    plan_chunks,
)

MARKET = {
    "spot": 100.0,
    "strike": 100.0,
    "maturity": 1.0,
    "rate": 0.05,
    "volatility": 0.2,
    "dividend_yield": 0.01,
}
# The market above as black_scholes' positional arguments: s, k, t, r, v, q.
MARKET_ARGS = (
    MARKET["spot"],
    MARKET["strike"],
    MARKET["maturity"],
    MARKET["rate"],
    MARKET["volatility"],
    MARKET["dividend_yield"],
)


def N(x: float) -> float:
    """The standard normal CDF."""
    return float(stats.norm.cdf(x))


def run(ctx: NullContext | None = None, /, **params: Any) -> dict[str, Any]:
    merged = {**MARKET, "option_type": "call", "seed": 12345, **params}
    return monte_carlo_option(MonteCarloOptionParams(**merged), ctx or NullContext())


def black_scholes(kind: str, s: float, k: float, t: float, r: float, v: float, q: float) -> float:
    d1 = (math.log(s / k) + (r - q + v * v / 2) * t) / (v * math.sqrt(t))
    d2 = d1 - v * math.sqrt(t)
    if kind == "call":
        return s * math.exp(-q * t) * N(d1) - k * math.exp(-r * t) * N(d2)
    return k * math.exp(-r * t) * N(-d2) - s * math.exp(-q * t) * N(-d1)


def geometric_asian(
    kind: str, s: float, k: float, t: float, r: float, v: float, q: float, n: int
) -> float:
    """Discretely monitored geometric-average option (fixing at iT/n, i = 1..n), closed form."""
    mu = math.log(s) + (r - q - v * v / 2) * t * (n + 1) / (2 * n)
    var = v * v * t * (n + 1) * (2 * n + 1) / (6 * n * n)
    sd = math.sqrt(var)
    d1 = (mu - math.log(k) + var) / sd
    d2 = d1 - sd
    fwd = math.exp(mu + var / 2)
    if kind == "call":
        return math.exp(-r * t) * (fwd * N(d1) - k * N(d2))
    return math.exp(-r * t) * (k * N(-d2) - fwd * N(-d1))


def barrier_call_bgk(
    style: str, s: float, k: float, t: float, r: float, v: float, q: float, h: float, steps: int
) -> float:
    """Continuous knock-out call (Hull) with the Broadie-Glasserman-Kou shift for discrete
    monitoring: the barrier moves away from spot by exp(0.5826 v sqrt(dt))."""
    shift = math.exp(0.5826 * v * math.sqrt(t / steps))
    h = h / shift if style == "barrier_down_and_out" else h * shift
    vt = v * math.sqrt(t)
    lam = (r - q + v * v / 2) / (v * v)
    vanilla = black_scholes("call", s, k, t, r, v, q)
    ds, dk = s * math.exp(-q * t), k * math.exp(-r * t)
    # (H/S)^(2 lambda) and (H/S)^(2 lambda - 2); float ** float is typed Any (could be complex)
    ratio_a: float = (h / s) ** (2 * lam)
    ratio_b: float = (h / s) ** (2 * lam - 2)
    if style == "barrier_down_and_out":  # H <= K
        y = math.log(h * h / (s * k)) / vt + lam * vt
        knock_in = ds * ratio_a * N(y) - dk * ratio_b * N(y - vt)
        return vanilla - knock_in
    # up-and-out, H > K
    x1 = math.log(s / h) / vt + lam * vt
    y = math.log(h * h / (s * k)) / vt + lam * vt
    y1 = math.log(h / s) / vt + lam * vt
    knock_in = (
        ds * N(x1)
        - dk * N(x1 - vt)
        - ds * ratio_a * (N(-y) - N(-y1))
        + dk * ratio_b * (N(-y + vt) - N(-y1 + vt))
    )
    return vanilla - knock_in


def independent_paths(paths: int, steps: int, seed: int) -> np.ndarray:
    """Price paths (paths x steps) from a plain full-matrix simulation, not the engine's."""
    s, _, t, r, v, q = MARKET_ARGS
    dt = t / steps
    z = np.random.default_rng(seed).standard_normal((paths, steps))
    return s * np.exp(np.cumsum((r - q - v * v / 2) * dt + v * math.sqrt(dt) * z, axis=1))


def within(result: dict[str, Any], reference: float, k: float = 4.0, extra: float = 0.0) -> None:
    gap = abs(result["price"] - reference)
    assert gap <= k * result["std_error"] + extra, (result, reference)


# --- prices against references ---------------------------------------------------------------


@pytest.mark.parametrize("kind", ["call", "put"])
@pytest.mark.parametrize("antithetic", [True, False])
def test_european_matches_black_scholes(kind: str, antithetic: bool) -> None:
    out = run(option_type=kind, style="european", paths=200_000, antithetic=antithetic)
    reference = black_scholes(kind, *MARKET_ARGS)
    within(out, reference)
    assert out["ci95_low"] < out["price"] < out["ci95_high"]
    assert out["ci95_high"] - out["price"] == pytest.approx(1.959964 * out["std_error"])
    assert out["steps"] == 1 and out["paths"] == 200_000


@pytest.mark.parametrize("kind", ["call", "put"])
def test_geometric_asian_matches_closed_form(kind: str) -> None:
    steps = 50
    out = run(option_type=kind, style="asian_geometric", paths=100_000, steps=steps)
    within(out, geometric_asian(kind, *MARKET_ARGS, n=steps))
    assert out["steps"] == steps


def test_arithmetic_asian_matches_independent_simulation() -> None:
    steps, paths = 24, 100_000
    out = run(style="asian_arithmetic", paths=paths, steps=steps)
    prices = independent_paths(paths, steps, seed=99)
    payoff = math.exp(-0.05) * np.maximum(prices.mean(axis=1) - 100.0, 0.0)
    ref, ref_se = payoff.mean(), payoff.std(ddof=1) / math.sqrt(paths)
    assert abs(out["price"] - ref) <= 4 * math.hypot(out["std_error"], ref_se)


def test_arithmetic_asian_call_dominates_geometric_pathwise() -> None:
    # Same seed and steps -> same normals; AM >= GM on every path, so the prices are ordered.
    common = {"paths": 20_000, "steps": 12}
    arithmetic = run(style="asian_arithmetic", **common)["price"]
    geometric = run(style="asian_geometric", **common)["price"]
    assert arithmetic > geometric


@pytest.mark.parametrize(
    ("style", "barrier"), [("barrier_up_and_out", 130.0), ("barrier_down_and_out", 90.0)]
)
def test_barrier_matches_independent_simulation(style: str, barrier: float) -> None:
    steps, paths = 50, 100_000
    out = run(style=style, barrier=barrier, paths=paths, steps=steps)
    prices = independent_paths(paths, steps, seed=7)
    if style == "barrier_up_and_out":
        alive = prices.max(axis=1) < barrier
    else:
        alive = prices.min(axis=1) > barrier
    payoff = math.exp(-0.05) * np.maximum(prices[:, -1] - 100.0, 0.0) * alive
    ref, ref_se = payoff.mean(), payoff.std(ddof=1) / math.sqrt(paths)
    assert abs(out["price"] - ref) <= 4 * math.hypot(out["std_error"], ref_se)
    vanilla = black_scholes("call", *MARKET_ARGS)
    assert out["price"] < vanilla - 4 * out["std_error"]


def test_down_and_out_matches_broadie_glasserman_kou() -> None:
    # The continuity correction is accurate for down-and-out calls (for up-and-out calls, whose
    # payoff is largest at the barrier, it is biased by ~1% here, so that case is checked
    # against the independent simulation only).
    steps = 50
    out = run(style="barrier_down_and_out", barrier=90.0, paths=100_000, steps=steps)
    reference = barrier_call_bgk("barrier_down_and_out", *MARKET_ARGS, h=90.0, steps=steps)
    within(out, reference, extra=0.005 * reference)


@pytest.mark.parametrize(
    ("style", "barrier"), [("barrier_up_and_out", 1e4), ("barrier_down_and_out", 1.0)]
)
def test_far_barrier_is_vanilla(style: str, barrier: float) -> None:
    out = run(style=style, barrier=barrier, paths=40_000, steps=10)
    within(out, black_scholes("call", *MARKET_ARGS))
    european = run(style="european", paths=40_000)
    assert abs(out["price"] - european["price"]) <= 4 * math.hypot(
        out["std_error"], european["std_error"]
    )


@pytest.mark.parametrize("style", ["european", "asian_arithmetic"])
def test_antithetic_reduces_standard_error(style: str) -> None:
    common = {"style": style, "paths": 40_000, "steps": 12}
    assert (
        run(antithetic=True, **common)["std_error"] < run(antithetic=False, **common)["std_error"]
    )


# --- reproducibility, chunking, progress, cancel ---------------------------------------------


def test_same_seed_is_bit_identical_and_seeds_differ() -> None:
    params = {"style": "barrier_up_and_out", "barrier": 125.0, "paths": 20_000, "steps": 30}
    first, second = run(**params), run(**params)
    assert first == second
    assert run(**{**params, "seed": 1})["price"] != first["price"]


def test_no_seed_draws_fresh_entropy() -> None:
    params = {**MARKET, "option_type": "call", "paths": 2_000}
    a = monte_carlo_option(MonteCarloOptionParams(**params), NullContext())
    b = monte_carlo_option(MonteCarloOptionParams(**params), NullContext())
    assert a["price"] != b["price"]


def test_chunk_plan_is_bounded_for_the_largest_run() -> None:
    p = MonteCarloOptionParams(
        **MARKET, option_type="call", style="asian_arithmetic", paths=10_000_000, steps=252
    )
    plan = plan_chunks(p)
    assert plan.chunk_bytes <= CHUNK_BYTES
    assert plan.samples == 5_000_000
    assert (
        plan.n_chunks * plan.chunk_samples
        >= plan.samples
        > (plan.n_chunks - 1) * (plan.chunk_samples)
    )
    assert plan_chunks(p.model_copy(update={"style": "european"})).steps == 1


def test_peak_memory_is_bounded_by_the_chunk_budget() -> None:
    # 50,000 antithetic pairs x 252 steps would be ~100 MB of normals at once; chunked, the
    # peak stays near one 32 MB buffer.
    tracemalloc.start()
    try:
        run(style="asian_arithmetic", paths=100_000, steps=252)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < CHUNK_BYTES + 8 * 2**20


def test_peak_memory_scales_with_budget_not_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(monte_carlo, "CHUNK_BYTES", 2**20)
    tracemalloc.start()
    try:
        run(style="barrier_down_and_out", barrier=80.0, paths=60_000, steps=100)  # 24 MB
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3 * 2**20


def test_progress_is_reported_after_every_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(monte_carlo, "CHUNK_BYTES", 8 * 20 * 1000)  # 1,000 pairs of 20 steps
    ctx = NullContext()
    run(ctx, style="asian_geometric", paths=9_000, steps=20)
    assert len(ctx.calls) == 5  # 4,500 pairs in chunks of 1,000
    assert ctx.calls == sorted(ctx.calls) and ctx.calls[-1] == 1.0
    assert ctx.calls[0] == pytest.approx(1000 / 4500)


def test_cancel_stops_within_one_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(monte_carlo, "CHUNK_BYTES", 8 * 20 * 1000)
    ctx = NullContext(cancel_after=1)
    with pytest.raises(Cancelled):
        run(ctx, style="asian_arithmetic", paths=100_000, steps=20)
    assert len(ctx.calls) == 1


def test_single_chunk_run_completes_despite_cancel_after_one() -> None:
    ctx = NullContext(cancel_after=1)
    run(ctx, style="european", paths=1_000)
    assert ctx.calls == [1.0]


# --- validation --------------------------------------------------------------------------------


def error_fields(**params: Any) -> set[Any]:
    merged = {**MARKET, "option_type": "call", **params}
    with pytest.raises(ValidationError) as info:
        MonteCarloOptionParams(**merged)
    return {e["loc"][0] for e in info.value.errors()}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"style": "barrier_up_and_out", "barrier": 90.0}, "barrier"),
        ({"style": "barrier_up_and_out", "barrier": 100.0}, "barrier"),
        ({"style": "barrier_down_and_out", "barrier": 110.0}, "barrier"),
        ({"style": "barrier_down_and_out"}, "barrier"),
        ({"style": "european", "barrier": 120.0}, "barrier"),
        ({"style": "barrier_up_and_out", "barrier": float("inf")}, "barrier"),
        ({"paths": 1001}, "paths"),
        ({"paths": 10_000_002}, "paths"),
        ({"paths": 0}, "paths"),
        ({"paths": 10_000_000, "steps": 253}, "steps"),
        ({"steps": 0}, "steps"),
        ({"volatility": 0.0}, "volatility"),
        ({"volatility": -0.1}, "volatility"),
        ({"maturity": 0.0}, "maturity"),
        ({"spot": float("nan")}, "spot"),
        ({"strike": -1.0}, "strike"),
        ({"style": "lookback"}, "style"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_inputs_name_the_field(params: dict[str, Any], field: str) -> None:
    assert error_fields(**params) == {field}


def test_odd_paths_allowed_without_antithetic() -> None:
    out = run(paths=1001, antithetic=False)
    assert out["paths"] == 1001


def test_work_cap_matches_ten_million_daily_paths() -> None:
    assert MAX_PATH_STEPS == 10_000_000 * 252
    MonteCarloOptionParams(**MARKET, option_type="put", paths=10_000_000, steps=252)


# --- Greeks by bumping with common random numbers ----------------------------------------------


def bs_greeks(kind: str) -> dict[str, float]:
    from finq_engine.black_scholes import bs_price_greeks

    a = [np.array([x]) for x in MARKET_ARGS]
    out = bs_price_greeks(a[0], a[1], a[2], a[3], a[4], a[5], kind == "call")
    return {k: float(v[0]) for k, v in out.items()}


@pytest.mark.parametrize("kind", ["call", "put"])
@pytest.mark.parametrize("antithetic", [True, False])
def test_greeks_by_common_random_numbers_match_black_scholes(kind: str, antithetic: bool) -> None:
    """Central differences with 1 % bumps: their bias (h^2 terms, ~1e-5 here) is far below
    the standard errors, so each Greek must lie within 4 of them of the closed form."""
    out = run(option_type=kind, style="european", paths=200_000, antithetic=antithetic, greeks=True)
    exact = bs_greeks(kind)
    for greek in ("delta", "gamma", "vega"):
        se = out[f"{greek}_std_error"]
        assert 0 < se < 0.05 * abs(exact[greek])
        assert abs(out[greek] - exact[greek]) < 4 * se, greek


def test_greeks_of_a_geometric_asian_match_bumps_of_its_closed_form() -> None:
    out = run(option_type="call", style="asian_geometric", steps=12, paths=200_000, greeks=True)
    s, k, t, r, v, q = MARKET_ARGS
    h, dv = 0.01 * s, 0.01 * v

    def price(spot: float, vol: float) -> float:
        return geometric_asian("call", spot, k, t, r, vol, q, 12)

    delta = (price(s + h, v) - price(s - h, v)) / (2 * h)
    gamma = (price(s + h, v) - 2 * price(s, v) + price(s - h, v)) / (h * h)
    vega = (price(s, v + dv) - price(s, v - dv)) / (2 * dv)
    for greek, exact in (("delta", delta), ("gamma", gamma), ("vega", vega)):
        assert abs(out[greek] - exact) < 4 * out[f"{greek}_std_error"], greek


def test_greeks_are_reproducible_and_absent_unless_asked() -> None:
    first = run(style="barrier_up_and_out", barrier=130.0, steps=50, paths=20_000, greeks=True)
    again = run(style="barrier_up_and_out", barrier=130.0, steps=50, paths=20_000, greeks=True)
    assert first["delta"] == again["delta"] and first["vega"] == again["vega"]
    assert "delta" not in run(style="european", paths=20_000)
