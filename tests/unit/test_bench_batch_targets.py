"""What figures 5 and 6 of the batch benchmark submit (scripts/bench/batch_targets.py): the
mix as one batch per type in its proportions, the same items for the engine's pool; and a
grid, sent in the grid form, that prices every spot x strike pair once."""

import json
from collections import Counter

import pytest
from bench.batch_targets import grid_params, mix_batches
from bench.calibration import Calibration

from finq_engine import TASK_TYPES, NullContext


def calibration() -> Calibration:
    rows = [
        {"type": "light", "weight": 3, "cpu_ms": 1.0, "params": {"years": 1}},
        {"type": "heavy", "weight": 1, "cpu_ms": 100.0, "params": {"paths": 1000}},
        {"type": "broken", "weight": 5, "cpu_ms": None, "params": {}},
    ]
    return Calibration({"rows": rows, "mean_cpu_ms": 25.75}, [25.75])


def test_the_mix_goes_as_one_batch_per_type_in_its_proportions() -> None:
    mix = mix_batches(calibration(), 10)
    posted = [json.loads(body) for _, _, body in mix.bodies]
    assert [(b["type"], len(b["items"])) for b in posted] == [("light", 8), ("heavy", 2)]
    assert [(t, k) for t, k, _ in mix.bodies] == [("light", 8), ("heavy", 2)]
    assert posted[1]["items"] == [{"paths": 1000}] * 2
    assert Counter(t for t, _ in mix.items) == {"light": 8, "heavy": 2} and mix.n == 10
    assert mix.alone_s == pytest.approx(8 * 0.001 + 2 * 0.1)


def test_a_grid_prices_every_spot_strike_pair_once() -> None:
    params = grid_params(100_000)
    assert params["grid"] is True
    assert len(set(params["spot"])) == len(params["spot"]) == 200
    assert len(set(params["strike"])) == len(params["strike"]) == 500
    assert min(params["strike"]) == 50.0 and max(params["spot"]) == 150.0
    result = TASK_TYPES["black_scholes"].execute(params, NullContext())
    pairs = list(zip(result["spot"], result["strike"], strict=True))
    assert len(pairs) == len(set(pairs)) == len(result["price"]) == 100_000
    assert len(json.dumps(params)) < 8 * 1024
