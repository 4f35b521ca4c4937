"""Smoke test of the benchmark's latency scenario (scripts/bench/latency.py) against the e2e
stack: a second of open-loop submits at 20 req/s with GET and readiness probes beside them,
through nginx, from a probe account of their own. Proves the streams reach the routes they name
and every answer is counted; no timing is asserted (the machine running the tests may be
busy)."""

import asyncio

import pytest
from bench.client import auth_headers
from bench.latency import STREAMS, prober, streams
from bench.openloop import run_open_loop

from tests.conftest import LocalStack
from tests.e2e.client import login

pytestmark = [pytest.mark.e2e]


def test_open_loop_streams_are_all_answered_with_their_expected_status(
    stack: LocalStack,
) -> None:
    admin = login(stack.url, *stack.admin)
    port = int(stack.info["HTTP_PORT"])
    token, task_id = prober(stack.url, port, admin.headers["Authorization"].split()[1])
    me = admin.get(f"/api/v1/tasks/{task_id}").json()
    assert me["owner"] != stack.admin[0]  # the probes' own account, not the admin's

    outcome = asyncio.run(
        run_open_loop(
            port, auth_headers(token), streams(20.0, task_id), 1.0, warmup=0.5, timeout=30.0
        )
    )

    assert set(outcome.summaries) == set(STREAMS)
    submits, gets, ready = (outcome.summaries[name] for name in STREAMS)
    # 20 submits/s and 5 probes/s of each kind, counted over the second after the warm-up.
    assert (submits.n, gets.n, ready.n) == (20, 5, 5)
    assert submits.statuses == {202: 20}
    assert gets.statuses == {200: 5} and ready.statuses == {200: 5}
    assert 0 < submits.p50 <= submits.p99 <= submits.max
