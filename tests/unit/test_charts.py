"""Charts are pure functions of params and result (and the price table): every type draws a
PNG from its example, large results are thinned rather than drawn point by point, and a
result the drawer cannot use gives no chart instead of an error."""

import logging
import struct
from typing import Any

import numpy as np
import pytest

from finq_engine import TASK_TYPES, NullContext, PriceTable
from finq_worker.charts import DPI, DRAWERS, FIGSIZE, render_chart, render_safely

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def table(rows: int = 500, assets: int = 12) -> PriceTable:
    rng = np.random.default_rng(4)
    prices = 100 * np.exp(np.cumsum(rng.normal(0.0002, 0.01, (rows, assets)), axis=0))
    dates = tuple(str(np.datetime64("2000-01-03") + i) for i in range(rows))
    return PriceTable(dates, tuple(f"A{i}" for i in range(assets)), prices)


def run(
    type_name: str, params: dict[str, Any], data: PriceTable | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    task_type = TASK_TYPES[type_name]
    stored = task_type.parse(params).model_dump(mode="json", by_alias=True)
    return stored, task_type.execute(params, NullContext(), data)


def size(png: bytes) -> tuple[int, int]:
    assert png.startswith(PNG_MAGIC)
    width, height = struct.unpack(">II", png[16:24])
    return width, height


def test_every_type_has_a_chart() -> None:
    assert set(DRAWERS) == set(TASK_TYPES)


@pytest.mark.parametrize("name", sorted(TASK_TYPES))
def test_each_example_renders_a_png(name: str) -> None:
    data = table(assets=3) if TASK_TYPES[name].upload else None
    params, result = run(name, TASK_TYPES[name].example, data)
    png = render_chart(name, params, result, data)
    assert png is not None
    assert size(png) == (int(FIGSIZE[0] * DPI), int(FIGSIZE[1] * DPI))


@pytest.mark.parametrize(
    ("name", "params"),
    [
        (
            "black_scholes",
            {
                "spot": 100,
                "strike": 95,
                "maturity": 0.5,
                "rate": 0.02,
                "volatility": 0.3,
                "option_type": "put",
            },
        ),  # scalar: payoff diagram
        (
            "black_scholes",
            {
                "spot": np.linspace(50, 150, 200_000).tolist(),
                "strike": 100,
                "maturity": [0.25] * 200_000,
                "rate": 0.01,
                "volatility": 0.2,
                "option_type": "call",
            },
        ),  # large and two varying inputs
        (
            "black_scholes",
            {
                "grid": True,
                "spot": np.linspace(50, 150, 400).tolist(),
                "strike": [90, 100, 110],
                "maturity": 0.5,
                "rate": 0.01,
                "volatility": [0.2, 0.3],
                "option_type": "call",
            },
        ),  # a grid: the spot axis at the first strike and volatility
        (
            "portfolio_var",
            {
                "weights": [0.5, 0.5],
                "portfolio_value": 1e6,
                "method": "monte_carlo",
                "expected_returns": [0, 0],
                "covariance": [[1e-4, 0], [0, 1e-4]],
                "simulations": 10_000,
                "seed": 1,
            },
        ),
        (
            "cash_flow_analysis",
            {"cash_flows": [[-100, 60, 60], [-100, 10, 10, 10, 10]], "discount_rate": 0.05},
        ),  # scenarios of different lengths
        (
            "american_option",
            {
                "spot": 100,
                "strike": 100,
                "maturity": 1,
                "rate": 0.03,
                "volatility": 0.25,
                "option_type": "put",
                "method": "lsm",
                "paths": 20_000,
                "seed": 1,
            },
        ),  # Monte Carlo: no boundary, a bar with its 95 % interval
        (
            "dated_bond_analytics",
            {
                "settlement": ["2025-01-10", "2025-02-11", "2025-03-12"],
                "maturity": "2040-06-30",
                "coupon_rate": 0.03,
                "day_count": ["ACT/360", "30E/360", "ACT/ACT ICMA"],
                "yield": [0.02, 0.03, 0.04],
            },
        ),  # many bonds: price against yield
        (
            "implied_volatility",
            {
                "price": 5,
                "spot": 100,
                "strike": 100,
                "maturity": 1,
                "rate": 0.0,
                "option_type": "call",
            },
        ),  # one quote
        (
            "loan_amortization",
            {"principal": 1e5, "annual_rate": 0.04, "years": 100, "periods_per_year": 365},
        ),  # 36,500 rows
        (
            "bond_analytics",
            {"coupon_rate": 0.0, "maturity": 100, "frequency": 12, "yield": 0.03},
        ),  # zero coupon, 1,200 periods
    ],
)
def test_variants_and_large_results_render(name: str, params: dict[str, Any]) -> None:
    stored, result = run(name, params)
    png = render_chart(name, stored, result)
    assert png is not None and png.startswith(PNG_MAGIC)


def test_csv_analytics_with_many_assets_and_rows() -> None:
    data = table(rows=20_000, assets=60)
    stored, result = run(
        "csv_portfolio_analytics", {"upload_id": "6f1c1d2e-0000-4000-8000-000000000001"}, data
    )
    png = render_chart("csv_portfolio_analytics", stored, result, data)
    assert png is not None and png.startswith(PNG_MAGIC)


def test_unknown_type_has_no_chart_and_failures_are_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert render_chart("no_such_type", {}, {}) is None
    with caplog.at_level(logging.ERROR, logger="finq.worker"):
        assert render_safely("monte_carlo_option", {}, {"price": 1.0}) is None
    assert "chart of monte_carlo_option" in caplog.text
    assert render_safely("csv_portfolio_analytics", {"upload_id": "x"}, {}, None) is None


def test_asset_names_render_literally() -> None:
    """Names stored before uploads refused them (or any text from a user) are drawn as
    typed: `$...$` is not mathtext (this one would not even parse as math), and a leading
    `_` still gets its legend entry."""
    base = table(rows=50, assets=3)
    data = PriceTable(base.dates, (r"$\notacommand{x}$", "_hidden", "A$B$C"), base.prices)
    stored, result = run(
        "csv_portfolio_analytics", {"upload_id": "6f1c1d2e-0000-4000-8000-000000000001"}, data
    )
    png = render_chart("csv_portfolio_analytics", stored, result, data)
    assert png is not None and png.startswith(PNG_MAGIC)


def test_a_grid_is_drawn_along_its_first_axis_at_the_other_axes_first_values() -> None:
    from matplotlib.figure import Figure

    spots = [80.0, 90.0, 100.0, 110.0]
    market = {"maturity": 0.5, "rate": 0.01, "option_type": "put"}
    stored, result = run(
        "black_scholes",
        {**market, "grid": True, "spot": spots, "strike": [95, 105, 115], "volatility": [0.2, 0.3]},
    )
    _, line = run("black_scholes", {**market, "spot": spots, "strike": 95, "volatility": 0.2})
    fig = Figure()
    DRAWERS["black_scholes"](fig, stored, result, None)
    price = fig.axes[0].lines[0]
    x, y = np.asarray(price.get_xdata(), float), np.asarray(price.get_ydata(), float)
    np.testing.assert_allclose(x, np.asarray(spots))
    np.testing.assert_allclose(y, np.asarray(line["price"]), rtol=1e-12)
    assert "at strike 95, volatility 0.2" in fig.get_suptitle()
