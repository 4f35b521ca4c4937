"""PNG charts of successful results, rendered by the worker (matplotlib, Agg, no pyplot).

`render_chart(type, params, result, table)` is a pure function of its arguments: no Celery,
no database, no global figure state (each call builds its own `Figure`). Its cost is bounded
whatever the task's size: curves are thinned to `MAX_POINTS` points, bar charts to a few
hundred bars.

A chart is a bonus, never a reason to fail: `render_safely` logs any error and returns None,
and the task still succeeds, without a chart.
"""

import io
import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from finq_engine.black_scholes import bs_price_greeks
from finq_engine.portfolio_analytics import CsvPortfolioParams, drawdown_curve, resolve_weights
from finq_engine.prices import PriceTable
from finq_engine.stats import norm_pdf
from finq_engine.summaries import thin

log = logging.getLogger("finq.worker")

MAX_POINTS = 1500
MAX_BARS = 60
MAX_LINES = 8
MAX_PNG_BYTES = 2 * 1024 * 1024
FIGSIZE = (9.0, 5.0)
DPI = 100
_Z95 = 1.959963984540054
BLUE, ORANGE, RED, GREY = "#0b5cad", "#d9822b", "#b42318", "#5b6570"

Drawer = Callable[[Any, dict[str, Any], dict[str, Any], PriceTable | None], None]


def _money(x: float) -> str:
    return f"{x:,.2f}"


def _monte_carlo(
    fig: Any, params: dict[str, Any], result: dict[str, Any], _: PriceTable | None
) -> None:
    hist, conv = result["payoff_histogram"], result["convergence"]
    price, se = float(result["price"]), float(result["std_error"])
    left, right = fig.subplots(1, 2)
    edges = np.asarray(hist["edges"], dtype=float)
    counts = np.asarray(hist["counts"], dtype=float)
    if counts.size:
        left.stairs(counts / max(counts.sum(), 1.0), edges, fill=True, color=BLUE, alpha=0.7)
    left.axvline(price, color=RED, lw=1.5, label=f"price {price:.4g}")
    left.set(
        title=f"Discounted payoff ({hist.get('sampled', 0):,} samples)",
        xlabel="payoff",
        ylabel="share of samples",
    )
    left.legend(loc="upper right")
    paths = np.asarray(conv["paths"], dtype=float)
    running = np.asarray(conv["price"], dtype=float)
    # Standard error after n paths, from the final one: se_n = se_N sqrt(N / n).
    band = 1.96 * se * np.sqrt(paths[-1] / paths) if paths.size else paths
    right.fill_between(
        paths, running - band, running + band, color=BLUE, alpha=0.15, label="95% band"
    )
    right.plot(paths, running, color=BLUE, lw=1.5, label="running estimate")
    right.axhline(price, color=RED, lw=1, ls="--", label="final price")
    right.set_xscale("log")
    right.set(title="Convergence", xlabel="paths", ylabel="price")
    right.legend(loc="upper right")
    fig.suptitle(
        f"Monte Carlo {params.get('style', '')} {params.get('option_type', '')}: "
        f"{price:.4f} ± {1.96 * se:.4f}"
    )


def _portfolio_var(
    fig: Any, params: dict[str, Any], result: dict[str, Any], _: PriceTable | None
) -> None:
    var, cvar = float(result["var"]), float(result["cvar"])
    ax = fig.subplots()
    hist = result.get("loss_histogram")
    if hist and hist.get("counts"):
        edges = np.asarray(hist["edges"], dtype=float)
        counts = np.asarray(hist["counts"], dtype=float)
        ax.stairs(counts / counts.sum(), edges, fill=True, color=BLUE, alpha=0.6, label="losses")
        ax.set_ylabel("share of scenarios")
    else:  # parametric: the normal distribution of the model itself
        w = np.asarray(params["weights"], dtype=float)
        h = float(params["horizon_days"])
        value = float(params["portfolio_value"])
        mean = -float(w @ np.asarray(params["expected_returns"], dtype=float)) * h * value
        sd = (
            math.sqrt(max(float(w @ np.asarray(params["covariance"], dtype=float) @ w) * h, 0.0))
            * value
        )
        x = np.linspace(mean - 4 * sd, mean + 4 * sd, 400) if sd > 0 else np.array([mean])
        density = norm_pdf((x - mean) / sd) / sd if sd > 0 else np.ones(1)
        ax.plot(x, density, color=BLUE, lw=2, label="loss density (normal model)")
        ax.fill_between(x, density, where=x >= var, color=RED, alpha=0.25, label="tail")
        ax.set_ylabel("density")
    ax.axvline(var, color=ORANGE, lw=2, label=f"VaR {_money(var)}")
    ax.axvline(cvar, color=RED, lw=2, ls="--", label=f"CVaR {_money(cvar)}")
    ax.set_xlabel(f"loss over {result.get('horizon_days')} day(s)")
    ax.legend(loc="upper left")
    fig.suptitle(
        f"Portfolio VaR ({result.get('method')}, "
        f"{float(result.get('confidence', 0)):.2%} confidence)"
    )


def _amortization(
    fig: Any, params: dict[str, Any], result: dict[str, Any], _: PriceTable | None
) -> None:
    rows = result["schedule"]
    idx = thin(len(rows), MAX_POINTS)
    period = np.array([rows[i]["period"] for i in idx], dtype=float)
    principal = np.array([rows[i]["principal"] for i in idx], dtype=float)
    interest = np.array([rows[i]["interest"] for i in idx], dtype=float)
    balance = np.array([rows[i]["balance"] for i in idx], dtype=float)
    ax = fig.subplots()
    ax.stackplot(
        period,
        principal,
        interest,
        labels=["principal", "interest"],
        colors=[BLUE, ORANGE],
        alpha=0.8,
    )
    ax.set(xlabel="period", ylabel="paid per period")
    twin = ax.twinx()
    twin.plot(period, balance, color=GREY, lw=1.5, label="balance")
    twin.set_ylabel("balance")
    lines = ax.get_legend_handles_labels()
    more = twin.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="upper center")
    fig.suptitle(
        f"Loan of {_money(float(params['principal']))}: payment "
        f"{_money(float(result['payment']))}, interest "
        f"{_money(float(result['total_interest']))}"
    )


def _bond(fig: Any, params: dict[str, Any], result: dict[str, Any], _: PriceTable | None) -> None:
    f = int(params.get("frequency", 2))
    n = round(float(params["maturity"]) * f)
    face = float(params.get("face_value", 100.0))
    k = np.arange(1, n + 1, dtype=float)
    flows = np.full(n, float(params["coupon_rate"]) * face / f)
    flows[-1] += face
    y = float(result["yield"])
    pv = flows / (1.0 + y / f) ** k
    ax = fig.subplots()
    if n <= MAX_BARS:
        t = k / f
        width = 0.4 / f
        ax.bar(t - width / 2, flows, width=width, color=BLUE, label="cash flow")
        ax.bar(t + width / 2, pv, width=width, color=ORANGE, label="present value")
    else:  # hundreds of periods: lines, one collection each, instead of one patch per bar
        idx = thin(n, MAX_POINTS)
        t = k[idx] / f
        ax.vlines(t, 0.0, flows[idx], color=BLUE, lw=1, label="cash flow")
        ax.plot(t, pv[idx], color=ORANGE, lw=1.5, label="present value")
    ax.set(xlabel="years", ylabel="amount")
    ax.set_yscale("log")
    ax.legend(loc="upper left")
    fig.suptitle(
        f"Bond cash flows: price {float(result['price']):.4f}, yield {y:.4%}, "
        f"duration {float(result['macaulay_duration']):.2f} y"
    )


def _cash_flows(
    fig: Any, params: dict[str, Any], result: dict[str, Any], _: PriceTable | None
) -> None:
    raw = params["cash_flows"]
    scenarios = (raw if isinstance(raw[0], list) else [raw])[:MAX_LINES]
    flows = np.zeros((len(scenarios), max(len(row) for row in scenarios)))
    for i, row in enumerate(scenarios):  # horizons may differ: pad with zeros
        flows[i, : len(row)] = row
    irr = result.get("irr")
    irrs = [v for v in (irr if isinstance(irr, list) else [irr])[:MAX_LINES] if v is not None]
    rate = float(params["discount_rate"])
    low = max(-0.9, min([0.0, rate, *irrs]) - 0.1)
    high = max([rate, *irrs, 0.0]) * 1.5 + 0.1
    rates = np.linspace(low, high, 200)
    t = np.arange(flows.shape[1], dtype=float)
    with np.errstate(all="ignore"):
        profile = flows @ np.exp(-np.multiply.outer(t, np.log1p(rates)))
    ax = fig.subplots()
    for i, row in enumerate(profile):
        ax.plot(rates * 100, row, lw=1.8, label=f"scenario {i + 1}" if len(profile) > 1 else "NPV")
    for v in irrs:
        ax.plot([v * 100], [0.0], "o", color=RED)
    ax.axhline(0.0, color=GREY, lw=1)
    ax.axvline(rate * 100, color=ORANGE, ls="--", lw=1.5, label=f"discount rate {rate:.2%}")
    ax.set(xlabel="discount rate (%)", ylabel="NPV")
    ax.legend(loc="upper right")
    npv = result.get("npv")
    first = npv[0] if isinstance(npv, list) else npv
    title = "NPV profile" + (f": NPV {_money(float(first))}" if first is not None else "")
    if irrs:
        title += f", IRR {irrs[0]:.2%}"
    fig.suptitle(title)


_BS_FIELDS = ("spot", "strike", "maturity", "rate", "volatility", "dividend_yield")
_GREEKS = ("price", "delta", "gamma", "vega", "theta", "rho")


def _black_scholes(
    fig: Any, params: dict[str, Any], result: dict[str, Any], _: PriceTable | None
) -> None:
    varying = [f for f in _BS_FIELDS if isinstance(params.get(f), list) and len(params[f]) > 1]
    if not varying:
        _payoff_diagram(fig, params, result)
        return
    x_name = varying[0]
    x = np.asarray(params[x_name], dtype=float)
    # A grid's result is row-major with the first axis slowest: every `step`-th option is the
    # first axis' curve with the other axes at their first values.
    step = math.prod(len(params[f]) for f in varying[1:]) if params.get("grid") else 1
    idx = thin(x.size, MAX_POINTS)
    order = idx[np.argsort(x[idx], kind="stable")]
    axes = fig.subplots(2, 3).ravel()
    for ax, name in zip(axes, _GREEKS, strict=True):
        y = np.asarray(result[name], dtype=float).ravel()[::step]
        ax.plot(x[order], y[order], color=BLUE, lw=1.5, marker="." if order.size < 60 else None)
        ax.set_title(name)
        ax.tick_params(labelsize=8)
    for ax in axes[3:]:
        ax.set_xlabel(x_name)
    also = f" (also varying: {', '.join(varying[1:])})" if len(varying) > 1 else ""
    if params.get("grid") and len(varying) > 1:
        firsts = ", ".join(f"{f} {float(params[f][0]):g}" for f in varying[1:])
        also = f" (grid, at {firsts})"
    fig.suptitle(f"Black-Scholes {params.get('option_type')} vs {x_name}{also}")


def _payoff_diagram(fig: Any, params: dict[str, Any], result: dict[str, Any]) -> None:
    def scalar(name: str, default: float = 0.0) -> float:
        value = params.get(name, default)
        return float(value[0] if isinstance(value, list) else value)

    spot, strike = scalar("spot"), scalar("strike")
    is_call = params.get("option_type") == "call"
    s = np.linspace(0.5 * min(spot, strike), 1.5 * max(spot, strike), 300)
    payoff = np.maximum(s - strike, 0.0) if is_call else np.maximum(strike - s, 0.0)
    n = s.size
    with np.errstate(all="ignore"):
        value = bs_price_greeks(
            s,
            np.full(n, strike),
            np.full(n, scalar("maturity")),
            np.full(n, scalar("rate")),
            np.full(n, scalar("volatility")),
            np.full(n, scalar("dividend_yield")),
            is_call,
        )["price"]
    ax = fig.subplots()
    ax.plot(s, payoff, color=GREY, lw=2, label="payoff at expiry")
    ax.plot(s, value, color=BLUE, lw=2, label="value today")
    ax.plot(
        [spot],
        [float(result["price"])],
        "o",
        color=RED,
        label=f"spot {spot:g}: {float(result['price']):.4f}",
    )
    ax.axvline(strike, color=ORANGE, ls="--", lw=1, label=f"strike {strike:g}")
    ax.set(xlabel="price of the underlying", ylabel="option value")
    ax.legend(loc="upper center")
    fig.suptitle(
        f"Black-Scholes {params.get('option_type')}: price {float(result['price']):.4f},"
        f" delta {float(result['delta']):.4f}"
    )


def _csv_analytics(
    fig: Any, params: dict[str, Any], result: dict[str, Any], table: PriceTable | None
) -> None:
    if table is None:
        raise ValueError("the price table is needed for this chart")
    prices = table.prices
    n_rows, n_assets = prices.shape
    weights = resolve_weights(CsvPortfolioParams.model_validate(params), n_assets)
    returns = prices[1:] / prices[:-1] - 1.0
    value = np.concatenate(([1.0], np.cumprod(1.0 + returns @ weights)))
    with np.errstate(all="ignore"):
        drawdown = drawdown_curve(np.maximum(value, 1e-300))
    idx = thin(n_rows, MAX_POINTS)
    dates = np.array(table.dates, dtype="datetime64[D]")[idx]
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[2, 1])
    shown = np.argsort(-np.abs(weights), kind="stable")[:MAX_LINES]
    lines, labels = [], []
    for j in sorted(shown.tolist()):
        lines += top.plot(dates, 100.0 * prices[idx, j] / prices[0, j], lw=1)
        labels.append(table.assets[j])
    lines += top.plot(dates, 100.0 * value[idx], color="black", lw=2.2)
    labels.append("portfolio")
    top.set_ylabel("value (start = 100)")
    # Labels given explicitly: matplotlib drops collected labels that start with "_".
    top.legend(lines, labels, loc="upper left", fontsize=8, ncols=3)
    bottom.fill_between(dates, -100.0 * drawdown[idx], 0.0, color=RED, alpha=0.4)
    bottom.set_ylabel("drawdown (%)")
    note = f" ({MAX_LINES} largest weights of {n_assets} shown)" if n_assets > MAX_LINES else ""
    fig.suptitle(
        f"Portfolio: {float(result['portfolio_annual_return']):.2%} a year, "
        f"max drawdown {float(result['portfolio_max_drawdown']):.2%}{note}"
    )


def _implied_vol(
    fig: Any, params: dict[str, Any], result: dict[str, Any], _: PriceTable | None
) -> None:
    vols = result["volatility"]
    vols = vols if isinstance(vols, list) else [vols]
    n = len(vols)
    strike = params["strike"]
    by_strike = isinstance(strike, list) and len(strike) == n
    x = np.asarray(strike if by_strike else range(n), dtype=float)
    kinds = params["option_type"]
    kinds = kinds if isinstance(kinds, list) and len(kinds) == n else [kinds] * n
    y = np.asarray([np.nan if v is None else 100.0 * float(v) for v in vols])
    idx = thin(n, MAX_POINTS)
    ax = fig.subplots()
    for kind, colour, marker in (("call", BLUE, "o"), ("put", ORANGE, "s")):
        pick = idx[[kinds[i] == kind for i in idx.tolist()]]
        if pick.size:
            ax.plot(x[pick], y[pick], marker, color=colour, ms=4, label=f"{kind}s")
    ax.set(xlabel="strike" if by_strike else "quote", ylabel="implied volatility (%)")
    ax.legend(loc="upper right")
    fig.suptitle(
        f"Implied volatility: {int(result['solved']):,} solved, "
        f"{int(result['unsolved']):,} outside the bounds"
    )


def _american(
    fig: Any, params: dict[str, Any], result: dict[str, Any], _: PriceTable | None
) -> None:
    price, european = float(result["price"]), float(result["european_price"])
    boundary = result.get("exercise_boundary") or {"time": [], "spot": []}
    ax = fig.subplots()
    strike = float(params["strike"])
    if boundary["time"]:
        ax.plot(boundary["time"], boundary["spot"], color=RED, lw=1.8, label="exercise boundary")
        ax.axhline(strike, color=GREY, ls="--", lw=1, label=f"strike {strike:g}")
        ax.set(xlabel="time (years)", ylabel="spot at which to exercise")
        ax.legend(loc="best")
    else:
        labels = [
            "american" if params.get("exercise", "american") == "american" else "price",
            "european (closed form)",
        ]
        ax.bar(labels, [price, european], color=[BLUE, ORANGE])
        se = result.get("std_error")
        if se:
            ax.errorbar([0], [price], yerr=[_Z95 * float(se)], color="black", capsize=6)
        ax.set(ylabel="option value")
    fig.suptitle(
        f"{params['option_type']} ({result['method']}): {price:.4f}, European {european:.4f}, "
        f"early-exercise premium {float(result['early_exercise_premium']):.4f}"
    )


def _dated_bonds(
    fig: Any, params: dict[str, Any], result: dict[str, Any], _: PriceTable | None
) -> None:
    flows = result.get("cash_flows")
    if flows is None:  # many bonds: clean price against yield, one point per bond
        y = np.asarray(result["yield"], dtype=float)
        price = np.asarray(result["clean_price"], dtype=float)
        idx = thin(y.size, MAX_POINTS)
        ax = fig.subplots()
        ax.plot(100 * y[idx], price[idx], "o", ms=3, color=BLUE)
        ax.set(xlabel="yield (%)", ylabel="clean price")
        fig.suptitle(f"{y.size:,} bonds: clean price against yield")
        return
    # One bond: its price-yield curve (from its dated cash flows) with today's point.
    times = np.asarray(flows["time"], dtype=float)
    amounts = np.asarray(flows["amount"], dtype=float)
    f = float(params.get("frequency", 2))
    y0 = float(result["yield"])
    ys = np.linspace(max(-0.05, y0 - 0.05), y0 + 0.05, 200)
    dirty = np.exp(-f * np.multiply.outer(np.log1p(ys / f), times)) @ amounts
    accrued = float(result["accrued_interest"])
    ax = fig.subplots()
    ax.plot(100 * ys, dirty - accrued, color=BLUE, lw=1.8, label="clean price")
    ax.plot([100 * y0], [float(result["clean_price"])], "o", color=RED, label="this bond")
    ax.set(xlabel="yield (%)", ylabel="clean price")
    ax.legend(loc="upper right")
    fig.suptitle(
        f"Clean {float(result['clean_price']):.4f}, accrued {accrued:.4f}, yield {y0:.4%}, "
        f"modified duration {float(result['modified_duration']):.2f} y"
    )


DRAWERS: dict[str, Drawer] = {
    "dated_bond_analytics": _dated_bonds,
    "american_option": _american,
    "implied_volatility": _implied_vol,
    "monte_carlo_option": _monte_carlo,
    "portfolio_var": _portfolio_var,
    "loan_amortization": _amortization,
    "bond_analytics": _bond,
    "cash_flow_analysis": _cash_flows,
    "black_scholes": _black_scholes,
    "csv_portfolio_analytics": _csv_analytics,
}


def render_chart(
    task_type: str, params: dict[str, Any], result: dict[str, Any], table: PriceTable | None = None
) -> bytes | None:
    """The PNG chart of a result, or None for a type without one. Raises on bad input."""
    drawer = DRAWERS.get(task_type)
    if drawer is None:
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    # Text comes from users too (an upload's asset names): every label renders literally,
    # never as mathtext (`$...$`) or LaTeX, whatever the rc files say.
    with matplotlib.rc_context({"text.parse_math": False, "text.usetex": False}):
        fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
        drawer(fig, params, result, table)
        for ax in fig.axes:
            ax.grid(True, alpha=0.3)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", metadata={"Software": None})
    png = buf.getvalue()
    if len(png) > MAX_PNG_BYTES:
        raise ValueError(f"chart of {len(png)} bytes exceeds {MAX_PNG_BYTES}")
    return png


def render_safely(
    task_type: str,
    params: dict[str, Any],
    result: dict[str, Any],
    table: PriceTable | None = None,
    context: Sequence[str] = (),
) -> bytes | None:
    """render_chart, but any failure is logged and gives None: the task must not fail."""
    try:
        return render_chart(task_type, params, result, table)
    except Exception:  # whatever the renderer does with a result, the task keeps its outcome
        log.exception(
            "chart of %s %s failed; the task succeeds without one", task_type, " ".join(context)
        )
        return None


def warm_up() -> None:
    """Load matplotlib and draw one figure in the worker's main process, before its pool forks.

    The pool processes inherit the import and the font cache, so no chart pays for them
    inside its time limit."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib.figure import Figure

        fig = Figure(figsize=(1, 1), dpi=10)
        fig.text(0.5, 0.5, "finq")
        fig.savefig(io.BytesIO(), format="png")
    except Exception:  # a worker without charts still runs tasks
        log.exception("matplotlib could not be loaded; tasks will have no charts")
