"""Benchmark finq's financial engine on one core and record the figures in docs/performance.md.

Run as `.venv/bin/python scripts/bench_finance.py` (add `--full` to also time the largest
accepted Monte Carlo run, 10M paths x 252 steps, with its peak RSS; `--no-write` to skip the
docs update). Each calculation runs through its engine function on already-validated params
with a `NullContext`; the figure is the median wall time over several repeats. For Monte Carlo
the script also times (a) a plain-Python loop over paths of the same model (`random.gauss` per
step, a small path count, extrapolated per path) and (b) `standard_normal` alone for the same
number of draws in the same chunk sizes, to report the speed-up and the share of time in RNG.
"""

# BLAS/OpenMP must be pinned to one thread before NumPy is imported.
import os

from finq_core.threads import cap_threads

cap_threads()

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import math  # noqa: E402
import multiprocessing  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

from finq_engine import (  # noqa: E402
    american,
    amortization,
    black_scholes,
    bonds,
    cash_flows,
    dated_bonds,
    implied_vol,
    monte_carlo,
    var,
)
from finq_engine.context import NullContext  # noqa: E402

DOC = ROOT / "docs" / "performance.md"
HEADING = "## Financial engine (make bench-finance)"
MARKET = {"spot": 100.0, "strike": 100.0, "maturity": 1.0, "rate": 0.05, "volatility": 0.2}


@dataclass
class Row:
    name: str
    size: str
    seconds: float
    throughput: str
    speedup: str = ""
    rng_share: str = ""


def median_time(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up: imports, page faults, BLAS initialisation
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def rate(count: float, seconds: float, unit: str) -> str:
    per_second = count / seconds
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if per_second >= scale:
            return f"{per_second / scale:.2f}{suffix} {unit}/s"
    return f"{per_second:.1f} {unit}/s"


def blas_threads() -> str:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "not reported (threadpoolctl not installed), OMP/OPENBLAS_NUM_THREADS=1 set"
    pools = threadpool_info()
    return ", ".join(f"{p['internal_api']}={p['num_threads']}" for p in pools) or "no pools"


# --- plain-Python reference for the Monte Carlo speed-up ----------------------------------------


def python_mc_per_path(style: str, steps: int, paths: int) -> float:
    """Seconds per path of a straightforward pure-Python loop (no antithetics)."""
    s0, k, t, r, v = (MARKET[x] for x in ("spot", "strike", "maturity", "rate", "volatility"))
    dt_ = t / steps
    drift, vol = (r - 0.5 * v * v) * dt_, v * math.sqrt(dt_)
    exp = math.exp
    gauss = random.Random(1).gauss
    start = time.perf_counter()
    total = 0.0
    for _ in range(paths):
        log_s = 0.0
        acc = 0.0
        for _ in range(steps):
            log_s += drift + vol * gauss(0.0, 1.0)
            if style == "asian_arithmetic":
                acc += exp(log_s)
        level = s0 * acc / steps if style == "asian_arithmetic" else s0 * exp(log_s)
        total += max(level - k, 0.0)
    _ = math.exp(-r * t) * total / paths
    return (time.perf_counter() - start) / paths


def rng_drawer(plan: monte_carlo.ChunkPlan) -> Callable[[], None]:
    """Draw the same normals in the same chunks as a run, without any payoff work."""
    buffer = np.empty(plan.chunk_samples * plan.steps)
    children = np.random.SeedSequence(1).spawn(plan.n_chunks)

    def draw() -> None:
        for k, child in enumerate(children):
            m = min(plan.chunk_samples, plan.samples - k * plan.chunk_samples)
            z = buffer[: m * plan.steps]
            np.random.Generator(np.random.PCG64(child)).standard_normal(out=z)

    return draw


def bench_mc(
    style: str, paths: int, steps: int, antithetic: bool, py_paths: int, repeats: int, **extra: Any
) -> Row:
    p = monte_carlo.MonteCarloOptionParams(
        **MARKET,
        option_type="call",
        style=style,
        paths=paths,
        steps=steps,
        antithetic=antithetic,
        seed=7,
        **extra,
    )
    plan = monte_carlo.plan_chunks(p)
    draw = rng_drawer(plan)
    # Alternate engine runs, RNG-only draws and the Python loop so that all three see the same
    # machine load; the share and the speed-up are medians of per-repeat ratios.
    run_times: list[float] = []
    shares: list[float] = []
    speedups: list[float] = []
    monte_carlo.monte_carlo_option(p, NullContext())  # warm-up
    draw()
    for _ in range(repeats):
        start = time.perf_counter()
        monte_carlo.monte_carlo_option(p, NullContext())
        middle = time.perf_counter()
        draw()
        end = time.perf_counter()
        run_times.append(middle - start)
        shares.append((end - middle) / (middle - start))
        if py_paths:
            per_path_py = python_mc_per_path(style, plan.steps, py_paths)
            speedups.append(per_path_py / ((middle - start) / paths))
    seconds = statistics.median(run_times)
    share = statistics.median(shares)
    speedup = f"{statistics.median(speedups):.0f}x" if speedups else ""
    label = f"monte_carlo_option {style}" + (" antithetic" if antithetic else "")
    label += " + greeks (CRN bumps)" if extra.get("greeks") else ""
    return Row(
        label,
        f"{paths:,} paths x {plan.steps} steps",
        seconds,
        rate(paths, seconds, "paths"),
        speedup,
        f"{share:.0%}",
    )


# --- the other calculations -------------------------------------------------------------------


def bench_black_scholes(repeats: int) -> list[Row]:
    rng = np.random.default_rng(0)
    n = 1_000_000
    raw = {
        "spot": rng.uniform(50, 150, n).tolist(),
        "strike": rng.uniform(50, 150, n).tolist(),
        "maturity": rng.uniform(0.05, 3, n).tolist(),
        "rate": 0.03,
        "volatility": rng.uniform(0.1, 0.6, n).tolist(),
        "option_type": "call",
    }
    p = black_scholes.BlackScholesParams.model_validate(raw)
    compute = median_time(lambda: black_scholes.black_scholes(p, NullContext()), repeats)
    parse = median_time(lambda: black_scholes.BlackScholesParams.model_validate(raw), repeats)
    return [
        Row(
            "black_scholes (price + 5 Greeks)",
            f"{n:,} options",
            compute,
            rate(n, compute, "options"),
        ),
        Row(
            "black_scholes params validation", f"{n:,} x 4 lists", parse, rate(n, parse, "options")
        ),
    ]


def python_iv_per_quote(prices: list[float], strikes: list[float], t: float) -> float:
    """Seconds per quote of a plain-Python bisection on Black-Scholes (calls, r = q = 0)."""

    def cdf(x: float) -> float:
        return 0.5 * math.erfc(-x / math.sqrt(2.0))

    start = time.perf_counter()
    for price, k in zip(prices, strikes, strict=True):
        lo, hi = 1e-6, 10.0
        while hi - lo > 1e-10:
            v = 0.5 * (lo + hi)
            d1 = (math.log(100.0 / k) + 0.5 * v * v * t) / (v * math.sqrt(t))
            if 100.0 * cdf(d1) - k * cdf(d1 - v * math.sqrt(t)) < price:
                lo = v
            else:
                hi = v
    return (time.perf_counter() - start) / len(prices)


def bench_implied_vol(repeats: int) -> list[Row]:
    rng = np.random.default_rng(5)
    n = 1_000_000
    strike = rng.uniform(60, 140, n)
    t = 0.75
    vol = rng.uniform(0.05, 1.0, n)
    zeros = np.zeros(n)
    price = black_scholes.bs_price_greeks(
        np.full(n, 100.0), strike, np.full(n, t), zeros, vol, zeros, True
    )["price"]
    p = implied_vol.ImpliedVolParams.model_validate(
        {
            "price": price.tolist(),
            "spot": 100.0,
            "strike": strike.tolist(),
            "maturity": t,
            "rate": 0.0,
            "option_type": "call",
        }
    )
    seconds = median_time(lambda: implied_vol.implied_vol(p, NullContext()), max(3, repeats - 2))
    sample = 2000
    per_quote_py = python_iv_per_quote(price[:sample].tolist(), strike[:sample].tolist(), t)
    return [
        Row(
            "implied_volatility (calls, vectorised Newton)",
            f"{n:,} quotes",
            seconds,
            rate(n, seconds, "quotes"),
            f"{per_quote_py / (seconds / n):.0f}x",
        )
    ]


def python_tree_per_node(steps: int) -> float:
    """Seconds per node update of a plain-Python CRR American put (lists, one loop per node)."""
    s0, k, t, r, v = (MARKET[x] for x in ("spot", "strike", "maturity", "rate", "volatility"))
    dt = t / steps
    u = math.exp(v * math.sqrt(dt))
    d = 1 / u
    p = (math.exp(r * dt) - d) / (u - d)
    disc = math.exp(-r * dt)
    start = time.perf_counter()
    values = [max(k - s0 * u**j * d ** (steps - j), 0.0) for j in range(steps + 1)]
    for level in range(steps - 1, -1, -1):
        for j in range(level + 1):
            cont = disc * (p * values[j + 1] + (1 - p) * values[j])
            values[j] = max(cont, k - s0 * u**j * d ** (level - j))
    return (time.perf_counter() - start) / (steps * (steps + 1) / 2)


def bench_american(repeats: int) -> list[Row]:
    rows = []
    per_node_py = python_tree_per_node(500)
    for steps in (1_000, 5_000, 20_000):
        p = american.AmericanOptionParams(**MARKET, option_type="put", steps=steps)
        t = median_time(partial(american.binomial, p, True), max(3, repeats - 2))
        nodes = steps * (steps + 1) / 2
        rows.append(
            Row(
                "american_option binomial (American put, CRR)",
                f"{steps:,} steps",
                t,
                rate(steps / t, 1.0, "steps") + f", {rate(nodes, t, 'nodes')}",
                f"{per_node_py / (t / nodes):.0f}x",
            )
        )
    p = american.AmericanOptionParams(
        **MARKET, option_type="put", method="lsm", paths=200_000, exercise_dates=50, seed=1
    )
    t = median_time(lambda: american.american_option(p, NullContext()), max(3, repeats - 2))
    rows.append(
        Row(
            "american_option lsm (American put, 50 dates)",
            "200,000 paths + 50,000 regression",
            t,
            rate(200_000, t, "paths"),
        )
    )
    return rows


def bench_dated_bonds(repeats: int) -> list[Row]:
    rng = np.random.default_rng(6)
    n = 10_000
    settle = np.datetime64("2025-01-01") + rng.integers(0, 365, n)
    mature = settle + rng.integers(200, 30 * 365, n)
    raw: dict[str, Any] = {
        "settlement": [str(d) for d in settle.tolist()],
        "maturity": [str(d) for d in mature.tolist()],
        "coupon_rate": rng.uniform(0, 0.08, n).round(4).tolist(),
        "frequency": rng.choice([1, 2, 4, 12], n).tolist(),
        "day_count": rng.choice(list(dated_bonds.DAY_COUNTS), n).tolist(),
        "yield": rng.uniform(0.0, 0.09, n).tolist(),
    }
    by_yield = dated_bonds.DatedBondParams.model_validate(raw)
    prices = dated_bonds.dated_bonds(by_yield, NullContext())["clean_price"].tolist()
    by_price = dated_bonds.DatedBondParams.model_validate({**raw, "yield": None, "price": prices})
    rows = []
    for label, p in (("price from yield", by_yield), ("yield from price", by_price)):
        t = median_time(partial(dated_bonds.dated_bonds, p, NullContext()), repeats)
        rows.append(
            Row(
                f"dated_bond_analytics ({label}, 5 day counts)",
                f"{n:,} bonds, up to 30y",
                t,
                rate(n, t, "bonds"),
            )
        )
    return rows


def bench_var(repeats: int) -> list[Row]:
    rng = np.random.default_rng(1)
    rows = []
    n_assets = 100
    a = rng.normal(size=(n_assets, n_assets)) * 0.002
    cov = (a @ a.T + np.diag(rng.uniform(1e-5, 4e-4, n_assets))).tolist()
    w = (np.ones(n_assets) / n_assets).tolist()
    mu = rng.normal(0.0003, 0.0002, n_assets).tolist()
    base = {"weights": w, "portfolio_value": 1e7, "expected_returns": mu, "covariance": cov}
    sims = 200_000
    p = var.PortfolioVarParams(**base, method="monte_carlo", simulations=sims, seed=3)
    t = median_time(lambda: var.portfolio_var(p, NullContext()), repeats)
    rows.append(
        Row(
            "portfolio_var monte_carlo",
            f"{n_assets} assets x {sims:,} scenarios",
            t,
            rate(sims, t, "scenarios"),
        )
    )
    p = var.PortfolioVarParams(**base, method="parametric")
    t = median_time(lambda: var.portfolio_var(p, NullContext()), repeats)
    rows.append(Row("portfolio_var parametric", f"{n_assets} assets", t, rate(1, t, "runs")))
    days, cols = 2500, 400
    hist = (rng.normal(0.0003, 0.01, (days, cols))).tolist()
    p = var.PortfolioVarParams(
        weights=(np.ones(cols) / cols).tolist(),
        portfolio_value=1e7,
        method="historical",
        returns=hist,
    )
    t = median_time(lambda: var.portfolio_var(p, NullContext()), repeats)
    rows.append(
        Row(
            "portfolio_var historical",
            f"{days:,} days x {cols} assets",
            t,
            rate(days * cols, t, "cells"),
        )
    )
    return rows


def bench_cash_flows(repeats: int) -> list[Row]:
    rng = np.random.default_rng(2)
    rows = []
    for scenarios, periods in ((10_000, 100), (100, 10_000)):
        flows = rng.uniform(0, 30, (scenarios, periods))
        flows[:, 0] = -rng.uniform(500, 1500, scenarios)
        p = cash_flows.CashFlowParams(
            cash_flows=flows.tolist(), discount_rate=0.07, finance_rate=0.05, reinvest_rate=0.06
        )
        t = median_time(partial(cash_flows.cash_flow_analysis, p, NullContext()), repeats)
        rows.append(
            Row(
                "cash_flow_analysis (NPV, IRR, MIRR, payback)",
                f"{scenarios:,} scenarios x {periods:,} periods",
                t,
                rate(scenarios, t, "scenarios"),
            )
        )
    return rows


def bench_small(repeats: int) -> list[Row]:
    rows = []
    calls = 200
    p_bond = bonds.BondParams.model_validate(
        {"coupon_rate": 0.045, "maturity": 30, "frequency": 12, "price": 93.5}
    )

    def many_bonds() -> None:
        for _ in range(calls):
            bonds.bond_analytics(p_bond, NullContext())

    t = median_time(many_bonds, repeats) / calls
    rows.append(
        Row("bond_analytics (yield from price)", "30y monthly, 360 flows", t, rate(1, t, "bonds"))
    )
    p_loan = amortization.LoanAmortizationParams(principal=300_000, annual_rate=0.06, years=30)
    t = median_time(lambda: amortization.loan_amortization(p_loan, NullContext()), repeats)
    rows.append(Row("loan_amortization", "30y monthly, 360 rows", t, rate(1, t, "schedules")))
    return rows


def _largest_run() -> tuple[float, float]:
    """Run in a fresh process so its peak RSS is the Monte Carlo run's alone."""
    p = monte_carlo.MonteCarloOptionParams(
        **MARKET,
        option_type="call",
        style="asian_arithmetic",
        paths=10_000_000,
        steps=252,
        seed=1,
    )
    start = time.perf_counter()
    monte_carlo.monte_carlo_option(p, NullContext())
    seconds = time.perf_counter() - start
    # VmHWM is this address space's high-water mark (ru_maxrss would carry the parent's over
    # fork/exec).
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return seconds, int(line.split()[1]) / 1024
    return seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def full_run() -> Row:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        seconds, peak = pool.apply(_largest_run)
    return Row(
        "monte_carlo_option asian_arithmetic antithetic (largest run)",
        "10,000,000 paths x 252 steps",
        seconds,
        rate(1e7, seconds, "paths"),
        rng_share=f"peak RSS {peak:.0f} MB",
    )


# --- output -------------------------------------------------------------------------------------


def fmt_seconds(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.0f} µs"


def table(rows: list[Row]) -> str:
    lines = [
        "| Calculation | Size | Median time | Throughput | vs Python loop | RNG share |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.name} | {r.size} | {fmt_seconds(r.seconds)} | {r.throughput} | "
            f"{r.speedup} | {r.rng_share} |"
        )
    return "\n".join(lines)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{cpu}; nproc {os.cpu_count()}; Python {platform.python_version()}; "
        f"NumPy {np.__version__}; BLAS threads: {blas_threads()}; "
        f"load average at start {load}"
    )


def write_doc(section: str) -> None:
    text = DOC.read_text() if DOC.exists() else "# Performance\n"
    lines = text.splitlines()
    try:
        start = lines.index(HEADING)
    except ValueError:
        body = text.rstrip("\n") + "\n\n" + section
    else:
        end = next(
            (i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines)
        )
        before = "\n".join(lines[:start]).rstrip("\n")
        after = "\n".join(lines[end:])
        body = before + "\n\n" + section + ("\n" + after if after else "")
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(body.rstrip("\n") + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--full", action="store_true", help="also run 10M paths x 252 steps")
    parser.add_argument("--no-write", action="store_true", help="do not update the docs")
    args = parser.parse_args()
    reps = args.repeats
    mc_reps = max(3, reps - 2)

    began = time.perf_counter()
    header = machine()
    print(header, file=sys.stderr)
    rows: list[Row] = []
    rows += bench_black_scholes(reps)
    rows += bench_implied_vol(reps)
    rows += bench_american(reps)
    rows.append(bench_mc("european", 1_000_000, 1, False, 200_000, reps))
    rows.append(bench_mc("european", 1_000_000, 1, True, 0, reps))
    rows.append(bench_mc("european", 1_000_000, 1, True, 0, reps, greeks=True))
    rows.append(bench_mc("asian_arithmetic", 100_000, 252, False, 1_000, mc_reps))
    rows.append(bench_mc("asian_arithmetic", 100_000, 252, True, 0, mc_reps))
    rows.append(bench_mc("asian_geometric", 100_000, 252, True, 0, mc_reps))
    rows.append(bench_mc("barrier_up_and_out", 100_000, 252, True, 0, mc_reps, barrier=130.0))
    rows += bench_var(reps)
    rows += bench_cash_flows(max(3, reps - 2))
    rows += bench_small(reps)
    rows += bench_dated_bonds(reps)
    if args.full:
        rows.append(full_run())
    elapsed = time.perf_counter() - began

    md = table(rows)
    print(md)
    print(f"\n(bench took {elapsed:.0f} s)", file=sys.stderr)
    if args.no_write:
        return
    today = dt.date.today().isoformat()
    full_note = (
        "\n\nThe last row runs alone in a fresh process; its peak RSS (the whole Python"
        "\nprocess, NumPy included) shows that memory stays bounded by the chunking."
        if args.full
        else "\n\nRun with `--full` to add the largest accepted run (10M paths x 252 steps)"
        "\nand its peak RSS."
    )
    machine_md = "\n".join(f"- {part}" for part in header.split("; "))
    section = f"""{HEADING}

Measured {today} with `.venv/bin/python scripts/bench_finance.py` on one core
(OMP/OPENBLAS/MKL/NUMEXPR_NUM_THREADS=1 set before NumPy is imported).
Machine:

{machine_md}

Method: every calculation runs through its engine function on already-validated params
with a `NullContext` (validating a million-element Black-Scholes request is shown on its own
row); the figure is the median wall time of {reps} repeats ({mc_reps} for the 252-step Monte
Carlo runs and the cash flows) after one warm-up run, and throughput is size / median time.

- "vs Python loop": the engine's time per path against a plain-Python loop over paths of
  the same model (GBM, `random.gauss` per step; {200_000:,} European or {1_000:,} Asian
  paths, extrapolated per path), both without antithetic variates.
- implied_volatility's "vs Python loop": a plain-Python bisection per quote on the
  Black-Scholes price (`math.erfc`, to 1e-10, 2,000 quotes, extrapolated per quote).
- american_option binomial's "vs Python loop": a plain-Python CRR American put (lists, a
  loop per node, 500 steps), per node update. Throughput: tree steps per second and node
  updates (N (N + 1) / 2 per tree) per second.
- "RNG share": the time `Generator.standard_normal` alone takes to draw the same normals in
  the same chunks, divided by the whole Monte Carlo time (timing noise can push it past
  100% when the payoff work is negligible).
- Engine runs, RNG-only draws and Python loops alternate, and both ratios are medians of
  per-repeat ratios, so each compares timings taken under the same load.
- European payoffs are sampled exactly at expiry, so they simulate 1 step.
- The machine is shared with other jobs (see the load average): medians moved by up to
  about +-40% between runs, most for the short runs and the RNG share; the speed-up ratios
  are steadier than the absolute times.{full_note}

{md}
"""
    write_doc(section)
    print(f"wrote {DOC.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
