"""The worker encodes a result with its float arrays left as NumPy arrays (orjson writes them
from memory); every byte must be what the plain lists of `to_json` give, NaN and Infinity as
null, whatever the arrays' layout."""

from typing import Any

import numpy as np
import pydantic_core
import pytest

from finq_core.db import encode_json
from finq_core.store import result_summary
from finq_engine import TASK_TYPES, NullContext
from finq_engine.jsonsafe import to_json
from tests.unit.engine.test_engine_registry import example_table


def awkward() -> dict[str, Any]:
    """Arrays a calculation may return: views, broadcasts, non-finite values, other dtypes."""
    rng = np.random.default_rng(11)
    grid = rng.normal(size=(40, 30))
    spots, strikes = np.ix_(np.linspace(80, 120, 40), np.linspace(70, 130, 30))
    with_gaps = rng.normal(size=500)
    with_gaps[[3, 17, 499]] = [np.nan, np.inf, -np.inf]
    return {
        "price": 12.5,
        "count": np.int64(7),
        "flag": np.bool_(True),
        "tiny": np.float64(5e-324),
        "column": grid[:, 3],  # a strided view
        "transposed": grid.T,  # Fortran order
        "spot": np.broadcast_to(spots, (40, 30)).ravel(),
        "strike": np.broadcast_to(strikes, (40, 30)),  # zero strides, 2-D
        "with_gaps": with_gaps,
        "negative_zero": np.array([-0.0, 0.0, 1e308, -1e-308]),
        "ints": np.arange(5),
        "single": np.array([0.1, 2.5], dtype=np.float32),
        "nested": {"rows": [{"x": np.float64(1.5), "y": np.array([1.0, np.nan])}]},
        "empty": np.empty(0),
    }


def test_kept_arrays_encode_to_the_bytes_of_the_plain_lists(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    raw = awkward()
    kept = to_json(raw, keep_arrays=True)
    assert isinstance(kept["transposed"], np.ndarray) and kept["transposed"].flags.c_contiguous
    lists = encode_json(to_json(raw)).data
    # orjson writes the arrays itself: the pydantic-core fallback is never reached.
    monkeypatch.setattr(pydantic_core, "to_json", fallback_taken)
    assert encode_json(kept).data == lists
    assert b"null" in encode_json(kept).data  # the NaN and the infinities


def fallback_taken(value: Any) -> bytes:
    raise AssertionError("encoded through the fallback")


def test_a_result_orjson_refuses_still_encodes_with_its_arrays() -> None:
    """An int beyond 64 bits sends the whole result through pydantic-core; the arrays kept
    for orjson are turned into lists on the way."""
    raw = {**awkward(), "huge": 2**70}
    kept = to_json(raw, keep_arrays=True)
    assert encode_json(kept).data == encode_json(to_json(raw)).data
    assert b"1180591620717411303424" in encode_json(kept).data


@pytest.mark.parametrize("name", sorted(TASK_TYPES))
def test_every_type_stores_the_same_result_and_summary_either_way(name: str) -> None:
    task = TASK_TYPES[name]
    table = example_table() if task.upload else None
    lists = task.execute(task.example, NullContext(), table)
    kept = task.execute(task.example, NullContext(), table, keep_arrays=True)
    assert encode_json(kept).data == encode_json(lists).data
    assert result_summary(kept) == result_summary(lists)
