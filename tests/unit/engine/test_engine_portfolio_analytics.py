"""CSV portfolio analytics against independent references: plain-Python statistics on the
same returns (loops, the `statistics` module, SciPy's Pearson), a hand-computed drawdown, and
a VaR from an explicitly sorted sample with hand-written interpolation."""

import math
import statistics
from typing import Any

import numpy as np
import pytest
from scipy import stats

from finq_engine import NullContext, PriceTable, get_task_type
from finq_engine.errors import CalculationError, Cancelled
from finq_engine.portfolio_analytics import (
    CsvPortfolioParams,
    check_against_upload,
    csv_portfolio_analytics,
    max_drawdown,
    portfolio_analytics,
)

UPLOAD_ID = "6f1c1d2e-0000-4000-8000-000000000001"


def random_table(rows: int = 400, assets: int = 4, seed: int = 11) -> PriceTable:
    rng = np.random.default_rng(seed)
    shocks = rng.multivariate_normal(
        np.full(assets, 0.0004), 0.0001 * (0.5 * np.eye(assets) + 0.5), size=rows
    )
    prices = 50 * np.exp(np.cumsum(shocks, axis=0))
    dates = tuple(str(np.datetime64("2023-01-02") + i) for i in range(rows))
    return PriceTable(dates, tuple(f"S{i}" for i in range(assets)), prices)


def run(table: PriceTable, **params: object) -> dict[str, Any]:
    p = CsvPortfolioParams.model_validate({"upload_id": UPLOAD_ID, **params})
    return csv_portfolio_analytics(p, NullContext(), table)


def python_returns(column: list[float]) -> list[float]:
    return [column[i] / column[i - 1] - 1 for i in range(1, len(column))]


def test_per_asset_statistics_match_plain_python() -> None:
    table = random_table()
    out = run(table, risk_free_rate=0.03)
    cols = table.prices.T.tolist()
    for row, column in zip(out["per_asset"], cols, strict=True):
        r = python_returns(column)
        ann = statistics.fmean(r) * 252
        vol = statistics.stdev(r) * math.sqrt(252)
        assert row["annual_return"] == pytest.approx(ann, rel=1e-10)
        assert row["annual_volatility"] == pytest.approx(vol, rel=1e-10)
        assert row["sharpe"] == pytest.approx((ann - 0.03) / vol, rel=1e-10)
        assert row["total_return"] == pytest.approx(column[-1] / column[0] - 1, rel=1e-12)
        peak, worst = column[0], 0.0
        for price in column:
            peak = max(peak, price)
            worst = max(worst, 1 - price / peak)
        assert row["max_drawdown"] == pytest.approx(worst, rel=1e-12)
    assert [row["asset"] for row in out["per_asset"]] == list(table.assets)
    assert out["observations"] == table.rows - 1
    assert (out["first_date"], out["last_date"]) == (table.dates[0], table.dates[-1])


def test_correlation_matches_scipy_pearson() -> None:
    table = random_table()
    corr = np.asarray(run(table)["correlation"])
    returns = [python_returns(c) for c in table.prices.T.tolist()]
    for i in range(len(returns)):
        for j in range(len(returns)):
            expected = 1.0 if i == j else stats.pearsonr(returns[i], returns[j])[0]
            assert corr[i, j] == pytest.approx(expected, abs=1e-12)


def test_hand_computed_drawdown() -> None:
    # Peaks 120 then 130; the falls are to 90 (25 %) and to 65 (50 %).
    series = np.array([[100.0], [120.0], [90.0], [110.0], [130.0], [65.0], [70.0]])
    assert max_drawdown(series)[0] == pytest.approx(0.5)
    rising = np.array([[1.0], [2.0], [3.0]])
    assert max_drawdown(rising)[0] == 0.0


def test_portfolio_var_and_cvar_from_a_sorted_sample() -> None:
    table = random_table(rows=250, assets=3, seed=5)
    weights = [0.5, 0.3, 0.2]
    out = run(table, weights=weights, confidence=0.95)
    cols = table.prices.T.tolist()
    rets = [python_returns(c) for c in cols]
    port = [sum(w * r[t] for w, r in zip(weights, rets, strict=True)) for t in range(len(rets[0]))]
    losses = sorted(-x for x in port)
    pos = (len(losses) - 1) * 0.95
    lo = math.floor(pos)
    var = losses[lo] + (losses[lo + 1] - losses[lo]) * (pos - lo)
    tail = [x for x in losses if x >= var]
    assert out["var"] == pytest.approx(var, rel=1e-12)
    assert out["cvar"] == pytest.approx(sum(tail) / len(tail), rel=1e-12)
    assert out["cvar"] >= out["var"] > 0
    value, peak, worst = 1.0, 1.0, 0.0
    for x in port:
        value *= 1 + x
        peak = max(peak, value)
        worst = max(worst, 1 - value / peak)
    assert out["portfolio_max_drawdown"] == pytest.approx(worst, rel=1e-10)
    assert out["portfolio_annual_return"] == pytest.approx(statistics.fmean(port) * 252)
    assert out["portfolio_annual_volatility"] == pytest.approx(
        statistics.stdev(port) * math.sqrt(252)
    )


def test_default_weights_are_equal() -> None:
    table = random_table(assets=5)
    assert run(table)["weights"] == pytest.approx([0.2] * 5)
    assert run(table)["var"] == pytest.approx(run(table, weights=[1, 1, 1, 1, 1])["var"] / 5)


def test_a_flat_asset_has_no_sharpe_nor_correlation_and_stays_strict_json() -> None:
    prices = np.array([[10.0, 5.0], [10.0, 5.5], [10.0, 5.2], [10.0, 5.9]])
    table = PriceTable(
        ("2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04"), ("FLAT", "MOVE"), prices
    )
    result = get_task_type("csv_portfolio_analytics").execute(  # type: ignore[union-attr]
        {"upload_id": UPLOAD_ID}, NullContext(), table
    )
    flat = result["per_asset"][0]
    assert flat["annual_volatility"] == 0.0 and flat["sharpe"] is None
    assert result["correlation"][0][1] is None
    assert result["correlation"][1][1] == pytest.approx(1.0)


def test_weights_must_fit_the_upload() -> None:
    p = CsvPortfolioParams.model_validate({"upload_id": UPLOAD_ID, "weights": [0.5, 0.5]})
    assert check_against_upload(p, 2) == []
    assert check_against_upload(p, 3) == [("weights", "has 2 entries but the upload has 3 assets")]
    zero = CsvPortfolioParams.model_validate({"upload_id": UPLOAD_ID, "weights": [0, 0]})
    assert check_against_upload(zero, 2) == [("weights", "must not all be zero")]
    with pytest.raises(CalculationError, match="weights: has 2 entries"):
        run(random_table(assets=3), weights=[0.5, 0.5])


def test_type_without_its_table_refuses_to_run() -> None:
    task_type = get_task_type("csv_portfolio_analytics")
    assert task_type is not None and task_type.upload is not None
    assert task_type.upload_id({"upload_id": UPLOAD_ID}) == UPLOAD_ID
    with pytest.raises(CalculationError, match="needs the data of its upload"):
        task_type.execute({"upload_id": UPLOAD_ID}, NullContext())


def test_progress_and_cancel() -> None:
    table = random_table()
    ctx = NullContext()
    portfolio_analytics(table.prices, np.full(4, 0.25), 0.0, 0.95, ctx)
    assert ctx.calls == sorted(ctx.calls) and ctx.calls[-1] == 1.0
    with pytest.raises(Cancelled):
        portfolio_analytics(table.prices, np.full(4, 0.25), 0.0, 0.95, NullContext(1))


def test_bad_params_name_the_field() -> None:
    from pydantic import ValidationError

    for params, field in (
        ({"upload_id": "nope"}, "upload_id"),
        ({"upload_id": UPLOAD_ID, "confidence": 1.5}, "confidence"),
        ({"upload_id": UPLOAD_ID, "weights": []}, "weights"),
        ({"upload_id": UPLOAD_ID, "extra": 1}, "extra"),
    ):
        with pytest.raises(ValidationError) as info:
            CsvPortfolioParams.model_validate(params)
        assert info.value.errors()[0]["loc"][0] == field
