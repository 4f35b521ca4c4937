"""Every registered task type: its example validates, runs quickly and yields strict JSON."""

import json
import time

import numpy as np
import pytest

from finq_engine import TASK_TYPES, NullContext, PriceTable, get_task_type
from finq_engine.jsonsafe import to_json

EXPECTED = {
    "loan_amortization",
    "black_scholes",
    "monte_carlo_option",
    "portfolio_var",
    "cash_flow_analysis",
    "bond_analytics",
    "csv_portfolio_analytics",
    "implied_volatility",
    "american_option",
    "dated_bond_analytics",
}


def example_table() -> PriceTable:
    """What the worker would load for a type that reads an upload (here: 3 assets, 300 days)."""
    rng = np.random.default_rng(3)
    prices = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, (300, 3)), axis=0))
    dates = tuple(str(np.datetime64("2024-01-01") + i) for i in range(300))
    return PriceTable(dates, ("A", "B", "C"), prices)


def test_all_task_types_registered() -> None:
    assert set(TASK_TYPES) == EXPECTED
    assert all(get_task_type(name) is TASK_TYPES[name] for name in EXPECTED)
    assert get_task_type("nope") is None


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_validates_runs_and_is_strict_json(name: str) -> None:
    task = TASK_TYPES[name]
    assert task.title
    task.parse(task.example)
    ctx = NullContext()
    started = time.perf_counter()
    result = task.execute(task.example, ctx, example_table() if task.upload else None)
    assert time.perf_counter() - started < 1.0
    json.dumps(result, allow_nan=False)  # raises on NaN or infinity
    assert to_json(result) == result
    assert ctx.calls and ctx.calls[-1] == 1.0


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_schema_is_published_and_closed(name: str) -> None:
    schema = TASK_TYPES[name].json_schema()
    json.dumps(schema)
    assert schema["type"] == "object"
    assert schema.get("additionalProperties") is False
    for prop in schema["properties"].values():
        assert "description" in prop or "$ref" in prop or "allOf" in prop
