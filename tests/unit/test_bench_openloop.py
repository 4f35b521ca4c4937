"""The benchmark's open-loop pieces (scripts/bench/openloop.py): the send schedule follows the
clock alone, and the percentiles agree with NumPy's."""

from collections import Counter

import numpy as np
import pytest
from bench.openloop import UNANSWERED, Stream, pct, schedule, summarize


def test_each_stream_sends_rate_times_duration_requests_evenly_spaced() -> None:
    streams = [Stream("submit", "POST", "/s", 100.0), Stream("probe", "GET", "/p", 10.0)]
    sends = schedule(streams, seconds=2.0, warmup=1.0)

    submits = [s.at for s in sends if s.stream == 0]
    probes = [s.at for s in sends if s.stream == 1]
    assert len(submits) == 300 and len(probes) == 30
    assert np.diff(submits) == pytest.approx(np.full(299, 0.01))
    assert np.diff(probes) == pytest.approx(np.full(29, 0.1))


def test_the_schedule_is_in_time_order_and_streams_are_offset_from_each_other() -> None:
    streams = [Stream("a", "GET", "/a", 10.0), Stream("b", "GET", "/b", 10.0)]
    sends = schedule(streams, seconds=1.0, warmup=0.0)

    assert [s.at for s in sends] == sorted(s.at for s in sends)
    # b sends half a period after a: never on the same tick.
    assert sends[0].at == 0.0 and sends[1].at == pytest.approx(0.05)
    assert {s.at for s in sends if s.stream == 0}.isdisjoint(s.at for s in sends if s.stream == 1)


def test_only_requests_after_the_warm_up_are_counted() -> None:
    sends = schedule([Stream("a", "GET", "/a", 50.0)], seconds=3.0, warmup=1.0)

    assert sum(s.counted for s in sends) == 150
    assert all(s.at >= 1.0 for s in sends if s.counted)
    assert all(s.at < 1.0 for s in sends if not s.counted)


@pytest.mark.parametrize("q", [0, 1, 50, 95, 99, 99.9, 100])
def test_percentiles_match_numpy_linear_interpolation(q: float) -> None:
    values = list(np.random.default_rng(3).lognormal(1.5, 0.8, 1001))
    assert pct(values, q) == pytest.approx(float(np.percentile(values, q)), rel=1e-12)


def test_a_summary_of_nothing_is_nan_not_an_error() -> None:
    s = summarize([], Counter(), ok=200)
    assert s.n == 0 and np.isnan(s.p99) and np.isnan(s.max)


def test_unanswered_and_errors_are_counted_apart_from_the_expected_status() -> None:
    s = summarize([4.0, 5.0, 5000.0, 7.0], Counter({202: 2, UNANSWERED: 1, 503: 1}), ok=202)
    assert (s.n, s.unanswered, s.errors) == (4, 1, 1)
    assert s.max == 5000.0 and s.p50 == pytest.approx(6.0)


def test_an_offset_stream_still_counts_rate_times_duration() -> None:
    streams = [Stream(name, "GET", "/", 5.0) for name in ("a", "b", "c")]
    sends = schedule(streams, seconds=1.0, warmup=0.5)
    for k in range(3):
        assert sum(s.counted for s in sends if s.stream == k) == 5
