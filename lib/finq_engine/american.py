"""American (and European) vanilla options: a CRR binomial tree and Longstaff-Schwartz.

Binomial (`method: "binomial"`, the deterministic method). Cox-Ross-Rubinstein: N steps of
dt = T/N, u = exp(sigma sqrt(dt)), d = 1/u, risk-neutral p = (exp((r-q) dt) - d) / (u - d),
which must lie in (0, 1) (else more steps are needed). Backward induction runs on one vector
per time level (the Python loop is over levels only, so N = 10,000 is 50 million node updates
in array operations), and the node prices of level n are those of level n+1 times u, never
recomputed with exp. An American value is max(continuation, exercise) at every node. The
American and European prices come from the same tree, so the early-exercise premium is
American - European >= 0 by construction, and a call on a stock without dividends (q <= 0,
r >= 0) is never exercised early: its American and European tree prices are equal. Delta,
gamma and theta come from the nodes of the first two levels. The tree's error is O(1/N) and
oscillates with N (odd and even N bracket the limit); at N = 2,000 it is about 1e-3 of the
price at the money.

Longstaff-Schwartz (`method: "lsm"`). GBM is simulated exactly at `exercise_dates` equally
spaced dates. Two independent sets of paths:

1. regression: `regression_paths` paths (antithetic pairs) held in memory; backward from
   expiry, the discounted realised cash flow of the in-the-money paths is regressed by least
   squares on the basis 1, x, x^2, x^3 with x = S / K (a cubic in moneyness, the
   polynomial basis of Longstaff and Schwartz 2001), giving one set of coefficients per date;
2. pricing: `paths` fresh paths in chunks of bounded memory (like `monte_carlo_option`):
   each path is exercised at the first date where it is in the money and the exercise value
   is at least the fitted continuation value (always at expiry when in the money). Progress
   is reported and a cancel honoured between chunks.

Because the pricing paths are independent of the fit, the estimate is of a feasible exercise
policy's value: it is biased low (by the policy's suboptimality, typically under 0.5 % of the
price with this basis and 50 dates), and its standard error (over antithetic pair averages)
is an honest one. Discrete exercise dates bias it low too (Bermudan, not American). The
European price reported beside it is the Black-Scholes closed form, and the premium is
max(0, LSM - European): a negative difference is only noise and the low bias. A call without
dividends is priced as European (never exercised early, by the same theorem as above).
"""

import math
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from finq_engine.black_scholes import bs_price_greeks
from finq_engine.context import RunContext, check_cancelled
from finq_engine.errors import CalculationError
from finq_engine.stats import FloatArray, norm_ppf
from finq_engine.summaries import thin

MAX_TREE_STEPS = 20_000
MAX_LSM_PATHS = 4_000_000
MAX_EXERCISE_DATES = 252
MAX_REGRESSION_CELLS = 10_000_000  # regression_paths x exercise_dates held in memory
CHUNK_BYTES = 32 * 2**20
BASIS_DEGREE = 3
_Z_975 = float(norm_ppf(0.975))


class AmericanOptionParams(BaseModel):
    """American or European vanilla call or put: a CRR binomial tree (deterministic) or
    Longstaff-Schwartz Monte Carlo (with a standard error), the European price and the
    early-exercise premium."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    spot: float = Field(gt=0, le=1e12, description="Spot price of the underlying.")
    strike: float = Field(gt=0, le=1e12, description="Strike price.")
    maturity: float = Field(gt=0, le=100, description="Time to expiry in years.")
    rate: float = Field(ge=-1, le=1, description="Continuously compounded risk-free rate.")
    volatility: float = Field(gt=0, le=10, description="Annualised volatility, decimal.")
    dividend_yield: float = Field(default=0.0, ge=-1, le=1, description="Continuous yield.")
    option_type: Literal["call", "put"] = Field(description="Call or put.")
    exercise: Literal["american", "european"] = Field(
        default="american", description="Exercise at any time (american) or at expiry only."
    )
    method: Literal["binomial", "lsm"] = Field(
        default="binomial",
        description='"binomial": CRR tree (deterministic); "lsm": Longstaff-Schwartz Monte Carlo.',
    )
    steps: int = Field(
        default=2000, ge=1, le=MAX_TREE_STEPS, description="Binomial: time steps of the tree."
    )
    paths: int = Field(
        default=200_000,
        ge=100,
        le=MAX_LSM_PATHS,
        description="LSM: pricing paths (even: antithetic pairs).",
    )
    exercise_dates: int = Field(
        default=50,
        ge=1,
        le=MAX_EXERCISE_DATES,
        description="LSM: equally spaced exercise dates up to and including expiry.",
    )
    regression_paths: int = Field(
        default=50_000,
        ge=1000,
        le=500_000,
        description="LSM: paths (even) of the separate regression set fitting the exercise rule.",
    )
    seed: int | None = Field(
        default=None, ge=0, le=2**63 - 1, description="LSM: seed for a reproducible result."
    )

    @field_validator("paths", "regression_paths")
    @classmethod
    def _even(cls, value: int) -> int:
        if value % 2:
            raise ValueError("must be even (paths come in antithetic pairs)")
        return value

    @field_validator("regression_paths")
    @classmethod
    def _bounded_memory(cls, value: int, info: ValidationInfo) -> int:
        dates = info.data.get("exercise_dates")
        if dates is not None and value * dates > MAX_REGRESSION_CELLS:
            raise ValueError(
                f"regression_paths x exercise_dates must be at most {MAX_REGRESSION_CELLS:,}"
            )
        return value


def _payoff(s: FloatArray, strike: float, is_call: bool) -> FloatArray:
    out: FloatArray = np.maximum(s - strike if is_call else strike - s, 0.0)
    return out


def never_early(p: AmericanOptionParams) -> bool:
    """A call on an asset without dividends is worth more alive than exercised (r >= 0)."""
    return p.option_type == "call" and p.dividend_yield <= 0 and p.rate >= 0


def binomial(
    p: AmericanOptionParams, american: bool, ctx: RunContext | None = None
) -> dict[str, Any]:
    """CRR tree price, delta, gamma, theta and (American) the exercise boundary."""
    n = p.steps
    dt = p.maturity / n
    u = math.exp(p.volatility * math.sqrt(dt))
    d = 1.0 / u
    prob = (math.exp((p.rate - p.dividend_yield) * dt) - d) / (u - d)
    if not 0.0 < prob < 1.0:
        raise CalculationError(
            f"the tree's up probability is {prob:.4g}, outside (0, 1): use more steps "
            "(|r - q| sqrt(dt) must be below sigma)"
        )
    disc = math.exp(-p.rate * dt)
    pu, pd = disc * prob, disc * (1.0 - prob)
    is_call = p.option_type == "call"
    s = p.spot * np.exp(p.volatility * math.sqrt(dt) * (2.0 * np.arange(n + 1) - n))
    v = _payoff(s, p.strike, is_call)
    boundary_t: list[float] = []
    boundary_s: list[float] = []
    early = american and not never_early(p)
    levels: dict[int, tuple[FloatArray, FloatArray]] = {n: (s, v)}  # the first three kept
    for level in range(n - 1, -1, -1):
        if ctx is not None and level % 1024 == 0:
            check_cancelled(ctx)
        s = s[:-1] * u
        v = pu * v[1:] + pd * v[:-1]
        if early:
            exercise = _payoff(s, p.strike, is_call)
            ex = (exercise > v) & (exercise > 0)
            np.maximum(v, exercise, out=v)
            if ex.any():
                boundary_t.append(level * dt)
                boundary_s.append(float(s[ex].max() if not is_call else s[ex].min()))
        if level <= 2:
            levels[level] = (s.copy(), v.copy())
    delta = gamma = theta = math.nan
    if n >= 2:
        s1, v1 = levels[1]
        s2, v2 = levels[2]
        delta = float((v1[1] - v1[0]) / (s1[1] - s1[0]))
        up = (v2[2] - v2[1]) / (s2[2] - s2[1])
        down = (v2[1] - v2[0]) / (s2[1] - s2[0])
        gamma = float((up - down) / (0.5 * (s2[2] - s2[0])))
        theta = float((v2[1] - v[0]) / (2.0 * dt))  # S at the middle node of level 2 is spot
    order = np.argsort(boundary_t)
    idx = thin(len(order))
    return {
        "price": float(v[0]),
        "delta": delta,
        "gamma": gamma,
        "theta": theta,
        "exercise_boundary": {
            "time": np.asarray(boundary_t)[order][idx].tolist(),
            "spot": np.asarray(boundary_s)[order][idx].tolist(),
        },
    }


def _basis(x: FloatArray) -> FloatArray:
    """1, x, x^2, x^3 of moneyness x = S / K, one row per path."""
    out: FloatArray = np.vander(x, BASIS_DEGREE + 1, increasing=True)
    return out


def _continuation(x: FloatArray, beta: FloatArray) -> FloatArray:
    """The fitted continuation value at moneyness x (Horner's rule on the cubic)."""
    out = np.full(x.shape, beta[-1])
    for c in beta[-2::-1]:
        out *= x
        out += c
    return out


class _Paths:
    """Exact GBM at the exercise dates, antithetic pairs, from one seed per block."""

    def __init__(self, p: AmericanOptionParams) -> None:
        self.p = p
        self.dates = p.exercise_dates
        self.dt = p.maturity / self.dates
        self.drift = (p.rate - p.dividend_yield - 0.5 * p.volatility**2) * self.dt
        self.vol = p.volatility * math.sqrt(self.dt)

    def log_moneyness(self, z: FloatArray) -> FloatArray:
        """(dates, 2m) log(S_t / K) for normals z of shape (dates, m): z and -z side by side."""
        both = np.concatenate([z, -z], axis=1)
        both *= self.vol
        both += self.drift
        np.cumsum(both, axis=0, out=both)
        both += math.log(self.p.spot / self.p.strike)
        return both


def fit_exercise_rule(p: AmericanOptionParams, rng: np.random.Generator) -> FloatArray:
    """Backward LSM regression on its own paths: coefficients per date (row t for date t+1)."""
    paths = _Paths(p)
    is_call = p.option_type == "call"
    z = rng.standard_normal((paths.dates, p.regression_paths // 2))
    x = np.exp(paths.log_moneyness(z))  # S / K
    cash = _payoff(x[-1], 1.0, is_call)  # in units of K
    disc = math.exp(-p.rate * paths.dt)
    coef = np.zeros((paths.dates, BASIS_DEGREE + 1))
    coef[:, 0] = np.inf  # no exercise rule fitted: never exercise there
    for t in range(paths.dates - 2, -1, -1):
        cash *= disc
        exercise = _payoff(x[t], 1.0, is_call)
        itm = exercise > 0
        if itm.sum() <= BASIS_DEGREE + 1:
            continue
        basis = _basis(x[t, itm])
        beta, *_ = np.linalg.lstsq(basis, cash[itm], rcond=None)
        coef[t] = beta
        stop = exercise[itm] >= _continuation(x[t, itm], coef[t])
        rows = np.flatnonzero(itm)[stop]
        cash[rows] = exercise[rows]
    return coef


def lsm(p: AmericanOptionParams, american: bool, ctx: RunContext) -> dict[str, Any]:
    """Longstaff-Schwartz price with its standard error (see the module's docstring)."""
    is_call = p.option_type == "call"
    early = american and not never_early(p)
    paths = _Paths(p)
    pairs = p.paths // 2
    chunk = max(1, min(pairs, CHUNK_BYTES // (8 * 2 * paths.dates)))
    n_chunks = math.ceil(pairs / chunk)
    seeds = np.random.SeedSequence(p.seed).spawn(n_chunks + 1)
    coef = np.zeros((paths.dates, BASIS_DEGREE + 1))
    coef[:, 0] = np.inf
    if early:
        coef = fit_exercise_rule(p, np.random.Generator(np.random.PCG64(seeds[0])))
    ctx.progress(0.05, "exercise rule fitted")
    step_disc = math.exp(-p.rate * paths.dt)
    total = 0.0
    total_sq = 0.0
    count = 0
    for k in range(n_chunks):
        check_cancelled(ctx)
        m = min(chunk, pairs - k * chunk)
        z = np.random.Generator(np.random.PCG64(seeds[k + 1])).standard_normal((paths.dates, m))
        x = np.exp(paths.log_moneyness(z))
        value = np.zeros(2 * m)
        alive = np.ones(2 * m, dtype=bool)
        for t in range(paths.dates):
            exercise = _payoff(x[t], 1.0, is_call)
            if t == paths.dates - 1:
                stop = alive
            else:
                if not early:
                    continue
                stop = alive & (exercise > 0)
                rows = np.flatnonzero(stop)
                stop[rows] = exercise[rows] >= _continuation(x[t, rows], coef[t])
            value[stop] = exercise[stop] * step_disc ** (t + 1)
            alive &= ~stop
        sample = 0.5 * (value[:m] + value[m:]) * p.strike  # pair averages, in money
        total += float(sample.sum())
        total_sq += float(np.square(sample).sum())
        count += m
        done = 2 * count
        ctx.progress(0.05 + 0.95 * count / pairs, f"{done:,} of {p.paths:,} paths")
    mean = total / count
    var = max(0.0, (total_sq - count * mean * mean) / max(1, count - 1))
    std_error = math.sqrt(var / count)
    return {
        "price": mean,
        "std_error": std_error,
        "ci95_low": mean - _Z_975 * std_error,
        "ci95_high": mean + _Z_975 * std_error,
        "paths": p.paths,
        "exercise_dates": p.exercise_dates,
        "regression_paths": p.regression_paths if early else 0,
        "basis": "1, x, x^2, x^3 with x = S/K (in-the-money paths)",
    }


def european_closed_form(p: AmericanOptionParams) -> float:
    args = (p.spot, p.strike, p.maturity, p.rate, p.volatility, p.dividend_yield)
    a = [np.array([x]) for x in args]
    out = bs_price_greeks(a[0], a[1], a[2], a[3], a[4], a[5], p.option_type == "call")
    return float(out["price"][0])


def american_option(p: AmericanOptionParams, ctx: RunContext) -> dict[str, Any]:
    american = p.exercise == "american"
    european = european_closed_form(p)
    if p.method == "binomial":
        out = binomial(p, american, ctx)
        # The premium comes from the same tree (same steps), so it is >= 0 exactly.
        tree_european = binomial(p, False)["price"] if american else out["price"]
        out["european_tree_price"] = tree_european
        premium = out["price"] - tree_european
        out["steps"] = p.steps
    else:
        out = lsm(p, american, ctx)
        early = american and not never_early(p)
        premium = max(0.0, out["price"] - european) if early else 0.0
    # The last message agrees with 100%: all the paths (LSM), or none for the tree.
    ctx.progress(1.0, f"{p.paths:,} of {p.paths:,} paths" if p.method == "lsm" else None)
    if not math.isfinite(out["price"]):
        raise CalculationError("the price is not finite (inputs too extreme)")
    return {
        "method": p.method,
        "exercise": p.exercise,
        "european_price": european,
        "early_exercise_premium": max(0.0, premium),
        **out,
    }
