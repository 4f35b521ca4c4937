"""Monte Carlo option pricing under risk-neutral geometric Brownian motion.

Paths are simulated in chunks: each chunk draws a (steps x paths) block of standard normals
into one preallocated float64 buffer (about `CHUNK_BYTES`), reduces it to one payoff per path,
and folds the payoffs into running moments. Peak memory is therefore a few tens of megabytes
whatever `paths` is, progress is reported after every chunk and a cancel takes effect before
the next one.

Reproducibility: the chunk size depends only on the parameters (steps, style), and chunk k
always draws from the k-th child of `SeedSequence(seed)`, so one seed gives a bit-identical
result regardless of worker, load, timing or BLAS thread count (reductions use NumPy's own
loops, not BLAS, whose summation order depends on its threads).

Only what a payoff needs is computed. GBM can be sampled exactly at any date, so a European
payoff draws the terminal value directly (one normal per path, whatever `steps` says); the
geometric Asian needs only the mean of the log-prices, which is a fixed linear combination of
the normals (one matrix-vector product); the arithmetic Asian and the barriers walk the steps
with running sums / extrema on cache-resident vectors.

Monitoring is discrete at t_i = i T / steps, i = 1..steps (t_0 = spot is not part of an Asian
average). Barrier options pay the vanilla payoff unless the monitored price touched or
crossed the barrier (no rebate).
"""

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from finq_engine.context import RunContext, check_cancelled
from finq_engine.errors import CalculationError
from finq_engine.stats import FloatArray, norm_ppf
from finq_engine.summaries import histogram, thin

MAX_PATHS = 10_000_000
MAX_STEPS = 10_000
# 10M paths x 252 daily steps, the largest run we accept (roughly a minute of one core).
MAX_PATH_STEPS = 2_520_000_000
# Size of the normal-draws buffer per chunk; the other per-chunk arrays are path vectors.
CHUNK_BYTES = 32 * 2**20
# Chart summaries carried in the result (bounded whatever `paths` is); see `_Trace`.
HISTOGRAM_SAMPLES = 20_000
CONVERGENCE_SEGMENTS = 64

Style = Literal[
    "european",
    "asian_arithmetic",
    "asian_geometric",
    "barrier_up_and_out",
    "barrier_down_and_out",
]
_Z_975 = float(norm_ppf(0.975))


class MonteCarloOptionParams(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    spot: float = Field(gt=0, le=1e12, description="Spot price of the underlying.")
    strike: float = Field(gt=0, le=1e12, description="Strike price.")
    maturity: float = Field(gt=0, le=100, description="Time to expiry in years.")
    rate: float = Field(ge=-1, le=1, description="Continuously compounded risk-free rate.")
    volatility: float = Field(gt=0, le=10, description="Annualised volatility, decimal.")
    dividend_yield: float = Field(default=0.0, ge=-1, le=1, description="Continuous yield.")
    option_type: Literal["call", "put"] = Field(description="Call or put payoff.")
    style: Style = Field(default="european", description="Payoff style.")
    barrier: float | None = Field(
        default=None,
        gt=0,
        le=1e12,
        validate_default=True,
        description="Knock-out level; required for barrier styles (above spot for up-and-out, "
        "below spot for down-and-out), not allowed otherwise.",
    )
    antithetic: bool = Field(default=True, description="Pair every path with its mirror image.")
    paths: int = Field(
        default=100_000,
        ge=10,
        le=MAX_PATHS,
        description="Number of simulated paths (even when antithetic).",
    )
    steps: int = Field(
        default=252,
        ge=1,
        le=MAX_STEPS,
        description="Monitoring dates (time steps). European payoffs are sampled exactly at "
        "expiry, so they simulate one step whatever this says.",
    )
    seed: int | None = Field(
        default=None,
        ge=0,
        le=2**63 - 1,
        description="Seed for a reproducible result; fresh entropy when omitted.",
    )
    greeks: bool = Field(
        default=False,
        description="Also estimate delta, gamma and vega by central bumps (spot +-1%, "
        "volatility +-1% of itself) on the same random numbers, with standard errors "
        "(about five times the work).",
    )

    @field_validator("barrier")
    @classmethod
    def _barrier_side(cls, value: float | None, info: ValidationInfo) -> float | None:
        style = info.data.get("style")
        spot = info.data.get("spot")
        if style is None:
            return value
        if not str(style).startswith("barrier_"):
            if value is not None:
                raise ValueError(f"barrier is only used by barrier styles, not {style}")
            return value
        if value is None:
            raise ValueError(f"barrier is required for style {style}")
        if spot is not None:
            if style == "barrier_up_and_out" and value <= spot:
                raise ValueError("an up-and-out barrier must be above spot")
            if style == "barrier_down_and_out" and value >= spot:
                raise ValueError("a down-and-out barrier must be below spot")
        return value

    @field_validator("paths")
    @classmethod
    def _even_when_antithetic(cls, value: int, info: ValidationInfo) -> int:
        if info.data.get("antithetic") and value % 2:
            raise ValueError("must be even when antithetic is true (paths come in pairs)")
        return value

    @field_validator("steps")
    @classmethod
    def _bounded_work(cls, value: int, info: ValidationInfo) -> int:
        paths = info.data.get("paths")
        if paths is not None and paths * value > MAX_PATH_STEPS:
            raise ValueError(f"paths x steps must be at most {MAX_PATH_STEPS:,}")
        return value


@dataclass(frozen=True)
class ChunkPlan:
    """How a run is cut into chunks; depends on the parameters only (never on the machine)."""

    steps: int  # time steps actually simulated
    samples: int  # independent payoff samples (pairs when antithetic)
    chunk_samples: int
    n_chunks: int

    @property
    def chunk_bytes(self) -> int:
        return self.chunk_samples * self.steps * 8


def plan_chunks(p: MonteCarloOptionParams) -> ChunkPlan:
    """Chunk so that one chunk's normals fill at most CHUNK_BYTES (at least one sample)."""
    steps = 1 if p.style == "european" else p.steps
    samples = p.paths // 2 if p.antithetic else p.paths
    # With greeks a chunk keeps a copy of its normals for the bumped runs: half the size.
    budget = CHUNK_BYTES // 2 if p.greeks else CHUNK_BYTES
    chunk = max(1, min(samples, budget // (8 * steps)))
    return ChunkPlan(steps, samples, chunk, math.ceil(samples / chunk))


class _Moments:
    """Running count, mean and sum of squared deviations (Chan et al.'s pairwise update)."""

    def __init__(self) -> None:
        self.n = 0
        self.mean = 0.0
        self.m2 = 0.0

    def add(self, x: FloatArray) -> None:
        """Fold in a chunk of samples; `x` is used as scratch space."""
        nb = int(x.size)
        mb = float(x.mean())
        x -= mb
        np.square(x, out=x)
        m2b = float(x.sum())
        total = self.n + nb
        delta = mb - self.mean
        self.mean += delta * nb / total
        self.m2 += m2b + delta * delta * self.n * nb / total
        self.n = total

    @property
    def std_error(self) -> float:
        if self.n < 2:
            return 0.0
        return math.sqrt(self.m2 / (self.n - 1) / self.n)


class _Trace:
    """Bounded summaries of the run for its chart: a payoff histogram and a convergence curve.

    The histogram takes the first samples of every chunk (an unbiased subsample, bounded
    whatever `paths`); the curve is the running mean after a few segments per chunk, thinned to
    MAX_CURVE_POINTS. Neither touches the price, which comes from `_Moments` alone.
    """

    def __init__(self, plan: ChunkPlan) -> None:
        self.per_chunk = math.ceil(HISTOGRAM_SAMPLES / plan.n_chunks)
        self.segments = max(1, math.ceil(CONVERGENCE_SEGMENTS / plan.n_chunks))
        self.kept: list[FloatArray] = []
        self.counts: list[int] = []  # samples folded in after each segment
        self.means: list[float] = []  # running mean payoff (undiscounted) at that count
        self._n = 0
        self._sum = 0.0

    def add(self, payoffs: FloatArray) -> None:
        self.kept.append(payoffs[: self.per_chunk].copy())
        m = payoffs.size
        starts = np.unique(np.linspace(0, m, self.segments + 1)[:-1].astype(np.int64))
        ends = np.append(starts[1:], m)
        for seg_sum, end in zip(
            np.add.reduceat(payoffs, starts).tolist(), ends.tolist(), strict=True
        ):
            self._sum += seg_sum
            count = self._n + end
            self.counts.append(count)
            self.means.append(self._sum / count)
        self._n += m

    def histogram(self, discount: float) -> dict[str, Any]:
        sample = np.concatenate(self.kept) * discount
        out = histogram(sample)
        out["sampled"] = int(sample.size)
        return out

    def convergence(self, discount: float, paths_per_sample: int) -> dict[str, Any]:
        idx = thin(len(self.counts))
        counts = np.asarray(self.counts)[idx] * paths_per_sample
        means = np.asarray(self.means)[idx] * discount
        return {"paths": counts.tolist(), "price": means.tolist()}


class _Simulator:
    """Turns one chunk of standard normals into one (pair-averaged) payoff per sample."""

    def __init__(self, p: MonteCarloOptionParams, steps: int) -> None:
        self.p = p
        self.steps = steps
        dt = p.maturity / steps
        self.drift = (p.rate - p.dividend_yield - 0.5 * p.volatility**2) * dt
        self.diffusion = p.volatility * math.sqrt(dt)
        self.is_call = p.option_type == "call"
        self.log_barrier = math.log(p.barrier / p.spot) if p.barrier is not None else 0.0
        # mean over i=1..n of C_i, where C_i = z_1 + ... + z_i, is sum_j z_j (n - j + 1) / n
        self.geo_weights = (steps - np.arange(steps, dtype=np.float64)) / steps

    def vanilla(self, s: FloatArray) -> FloatArray:
        """max(S - K, 0) or max(K - S, 0), in place on `s`."""
        if self.is_call:
            np.subtract(s, self.p.strike, out=s)
        else:
            np.subtract(self.p.strike, s, out=s)
        np.maximum(s, 0.0, out=s)
        return s

    def payoffs(self, z: FloatArray) -> FloatArray:
        """One payoff per sample (pair-averaged when antithetic); may overwrite `z`."""
        style = self.p.style
        if style == "european":
            shock = np.multiply(z[0], self.diffusion, out=z[0])
            return self._terminal(self.drift * self.steps, shock)
        if style == "asian_geometric":
            # einsum, not `@`: BLAS splits the sum differently with its thread count, and a
            # seeded run must be bit-identical whatever the worker's BLAS settings.
            shock = np.einsum("i,ij->j", self.geo_weights, z)
            shock *= self.diffusion
            return self._terminal(self.drift * (self.steps + 1) / 2, shock)
        if style == "asian_arithmetic":
            return self._arithmetic(z)
        return self._barrier(z)

    def _pair(self, plus: FloatArray, minus: FloatArray | None) -> FloatArray:
        if minus is None:
            return plus
        plus += minus
        plus *= 0.5
        return plus

    def _terminal(self, drift: float, shock: FloatArray) -> FloatArray:
        """Payoff of S0 exp(drift +- shock): terminal value or geometric average (in place)."""
        level = self.p.spot * math.exp(drift)
        up = np.exp(shock, out=shock)
        down = None
        if self.p.antithetic:
            down = self.vanilla(np.divide(level, up))
        np.multiply(up, level, out=up)
        return self._pair(self.vanilla(up), down)

    def _arithmetic(self, z: FloatArray) -> FloatArray:
        m = z.shape[1]
        anti = self.p.antithetic
        cum = np.zeros(m)
        tmp = np.empty(m)
        acc_up = np.zeros(m)
        acc_down = np.zeros(m) if anti else None
        for i in range(self.steps):
            np.multiply(z[i], self.diffusion, out=tmp)
            cum += tmp
            drift = self.drift * (i + 1)
            np.add(cum, drift, out=tmp)
            np.exp(tmp, out=tmp)
            acc_up += tmp
            if acc_down is not None:
                # exp(drift - cum) = exp(2 drift) / exp(drift + cum): a division, not an exp
                np.divide(math.exp(2.0 * drift), tmp, out=tmp)
                acc_down += tmp
        scale = self.p.spot / self.steps
        acc_up *= scale
        if acc_down is not None:
            acc_down *= scale
            acc_down = self.vanilla(acc_down)
        return self._pair(self.vanilla(acc_up), acc_down)

    def _barrier(self, z: FloatArray) -> FloatArray:
        m = z.shape[1]
        up_and_out = self.p.style == "barrier_up_and_out"
        extreme = np.maximum if up_and_out else np.minimum
        anti = self.p.antithetic
        cum = np.zeros(m)
        tmp = np.empty(m)
        start = -np.inf if up_and_out else np.inf
        ext_up = np.full(m, start)
        ext_down = np.full(m, start) if anti else None
        for i in range(self.steps):
            np.multiply(z[i], self.diffusion, out=tmp)
            cum += tmp
            drift = self.drift * (i + 1)
            np.add(cum, drift, out=tmp)
            extreme(ext_up, tmp, out=ext_up)
            if ext_down is not None:
                np.subtract(drift, cum, out=tmp)
                extreme(ext_down, tmp, out=ext_down)
        total_drift = self.drift * self.steps
        h = self.log_barrier

        def knocked_out_payoff(log_terminal: FloatArray, ext: FloatArray) -> FloatArray:
            alive = ext < h if up_and_out else ext > h
            np.exp(log_terminal, out=log_terminal)
            log_terminal *= self.p.spot
            pay = self.vanilla(log_terminal)
            pay *= alive
            return pay

        up = knocked_out_payoff(cum + total_drift, ext_up)
        down = None
        if ext_down is not None:
            down = knocked_out_payoff(total_drift - cum, ext_down)
        return self._pair(up, down)


SPOT_BUMP = 0.01  # relative
VOL_BUMP = 0.01  # relative


class _Greeks:
    """Delta, gamma and vega by central differences on common random numbers.

    Every chunk's normals drive four more simulations (spot x (1 +- h), volatility x
    (1 +- k)); the per-sample differences are averaged like payoffs, so each Greek has a
    standard error, and using the same normals for both sides of a bump cancels most of the
    noise. The bias is O(h^2) (central differences); barrier payoffs are discontinuous, which
    makes their gamma noisy.
    """

    def __init__(self, p: MonteCarloOptionParams, steps: int) -> None:
        self.h = SPOT_BUMP * p.spot
        self.k = VOL_BUMP * p.volatility
        bumped = [
            {"spot": p.spot + self.h},
            {"spot": p.spot - self.h},
            {"volatility": p.volatility + self.k},
            {"volatility": p.volatility - self.k},
        ]
        self.sims = [_Simulator(p.model_copy(update=b), steps) for b in bumped]
        self.delta, self.gamma, self.vega = _Moments(), _Moments(), _Moments()

    def add(self, z: FloatArray, base: FloatArray, work: FloatArray) -> None:
        """Fold in one chunk: `z` the chunk's normals (kept), `base` its unbumped payoffs."""
        out = []
        for sim in self.sims:
            np.copyto(work, z)
            out.append(sim.payoffs(work).copy())
        up, down, v_up, v_down = out
        self.gamma.add((up - 2.0 * base + down) / (self.h * self.h))
        self.delta.add((up - down) / (2.0 * self.h))
        self.vega.add((v_up - v_down) / (2.0 * self.k))

    def result(self, discount: float) -> dict[str, float]:
        out = {}
        for name, m in (("delta", self.delta), ("gamma", self.gamma), ("vega", self.vega)):
            out[name] = discount * m.mean
            out[f"{name}_std_error"] = discount * m.std_error
        return out


def monte_carlo_option(p: MonteCarloOptionParams, ctx: RunContext) -> dict[str, Any]:
    plan = plan_chunks(p)
    sim = _Simulator(p, plan.steps)
    children = np.random.SeedSequence(p.seed).spawn(plan.n_chunks)
    buffer = np.empty(plan.chunk_samples * plan.steps)
    moments = _Moments()
    trace = _Trace(plan)
    greeks = _Greeks(p, plan.steps) if p.greeks else None
    spare = np.empty(plan.chunk_samples * plan.steps) if greeks is not None else None
    with np.errstate(over="ignore", invalid="ignore"):
        for k, child in enumerate(children):
            check_cancelled(ctx)
            m = min(plan.chunk_samples, plan.samples - k * plan.chunk_samples)
            z = buffer[: m * plan.steps].reshape(plan.steps, m)
            np.random.Generator(np.random.PCG64(child)).standard_normal(out=z)
            if greeks is not None and spare is not None:
                work = spare[: m * plan.steps].reshape(plan.steps, m)
                np.copyto(work, z)
                payoffs = sim.payoffs(work).copy()  # a view of `work`, which add() reuses
                greeks.add(z, payoffs, work)
            else:
                payoffs = sim.payoffs(z)
            trace.add(payoffs)  # before `moments`, which uses the payoffs as scratch space
            moments.add(payoffs)
            done = k * plan.chunk_samples + m
            ctx.progress(done / plan.samples, f"{done:,} of {plan.samples:,} samples")

    discount = math.exp(-p.rate * p.maturity)
    price = discount * moments.mean
    std_error = discount * moments.std_error
    if not (math.isfinite(price) and math.isfinite(std_error)):
        raise CalculationError("simulated payoffs overflow; volatility x maturity is too extreme")
    paths_per_sample = 2 if p.antithetic else 1
    return {
        "price": price,
        "std_error": std_error,
        "ci95_low": price - _Z_975 * std_error,
        "ci95_high": price + _Z_975 * std_error,
        "paths": p.paths,
        "steps": plan.steps,
        "payoff_histogram": trace.histogram(discount),
        "convergence": trace.convergence(discount, paths_per_sample),
        **(greeks.result(discount) if greeks is not None else {}),
    }
