"""How a batch request becomes items: grid order, CSV lines, the places a refusal names, and
chunk sizes (finq_core.batches and batch_runs, pure parts)."""

import json

import pytest

from finq_core.batch_runs import ITEM_SECONDS, MAX_CHUNK_ITEMS, chunk_size
from finq_core.batches import BatchRequest, validated
from finq_core.config import Settings
from finq_core.errors import InvalidInput
from finq_engine import TASK_TYPES

SETTINGS = Settings(batch_max_items=1000)


def params(request: BatchRequest) -> list[dict[str, object]]:
    return [json.loads(p.data) for p in validated(request, SETTINGS)[1]]


def test_a_grid_varies_its_last_field_fastest() -> None:
    request = BatchRequest(
        type="loan_amortization",
        base={"principal": 1000},
        vary={"annual_rate": [0.01, 0.02], "years": [1, 2, 3]},
    )
    varied, _ = validated(request, SETTINGS)
    assert varied == ["annual_rate", "years"]
    assert [(p["annual_rate"], p["years"]) for p in params(request)] == [
        (0.01, 1), (0.01, 2), (0.01, 3), (0.02, 1), (0.02, 2), (0.02, 3)
    ]  # fmt: skip


def test_csv_rows_merge_over_base_and_read_json_cells() -> None:
    request = BatchRequest(
        type="cash_flow_analysis",
        base={"discount_rate": 0.1},
        csv='cash_flows,discount_rate\n"[-100, 60, 60]",\n"[-50, 30, 30]",0.05\n',
    )
    rows = params(request)
    assert rows[0]["cash_flows"] == [-100, 60, 60] and rows[0]["discount_rate"] == 0.1
    assert rows[1]["discount_rate"] == 0.05


def test_a_wrong_csv_value_is_named_by_its_line() -> None:
    text = "principal,annual_rate,years\n1000,0.05,1\n\n2000,abc,2\n"
    with pytest.raises(InvalidInput) as caught:
        validated(BatchRequest(type="loan_amortization", csv=text), SETTINGS)
    assert caught.value.problems[0].loc == ("body", "csv", "line 4", "annual_rate")


def test_a_wrong_item_is_named_by_its_index_and_field() -> None:
    items = [{"principal": 1000, "annual_rate": 0.05, "years": 1}] * 20
    items = [*items[:17], {**items[0], "years": -1}, *items[18:]]
    with pytest.raises(InvalidInput) as caught:
        validated(BatchRequest(type="loan_amortization", items=items), SETTINGS)
    assert [p.loc for p in caught.value.problems] == [("body", "items", 17, "years")]


def test_too_many_items_are_refused_before_any_is_validated() -> None:
    request = BatchRequest(
        type="loan_amortization", base={"principal": 1}, vary={"annual_rate": [0.01] * 1001}
    )
    with pytest.raises(InvalidInput, match="BATCH_MAX_ITEMS"):
        validated(request, SETTINGS)


def test_exactly_one_source_of_items_is_accepted() -> None:
    with pytest.raises(InvalidInput, match="exactly one"):
        validated(BatchRequest(type="loan_amortization", items=[], csv="a\n1\n"), SETTINGS)
    with pytest.raises(InvalidInput, match="exactly one"):
        validated(BatchRequest(type="loan_amortization"), SETTINGS)


def test_chunks_hold_about_the_target_time_of_work() -> None:
    assert chunk_size("bond_analytics", 0.1) == MAX_CHUNK_ITEMS
    assert chunk_size("monte_carlo_option", 0.1) == 12
    assert chunk_size("loan_amortization", 0.1) == 200
    assert chunk_size("monte_carlo_option", 0.01) == 1


def test_every_task_type_has_a_measured_item_cost() -> None:
    """A type without one would get the default guess, and chunks far from their 0.1 s."""
    assert set(TASK_TYPES) <= set(ITEM_SECONDS)
