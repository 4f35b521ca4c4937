"""Every registered task type: its example validates, runs quickly and yields strict JSON."""

import json
import time

import pytest

from finq_engine import TASK_TYPES, NullContext, get_task_type
from finq_engine.jsonsafe import to_json

EXPECTED = {
    "loan_amortization",
    "black_scholes",
    "monte_carlo_option",
    "portfolio_var",
    "cash_flow_analysis",
    "bond_analytics",
}


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
    result = task.execute(task.example, ctx)
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
