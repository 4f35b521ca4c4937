"""Stored results through nginx, on a stack with small limits: a result too big for a task
view is linked, not carried, by GET and by the webhook, and the link returns the whole; a
result over RESULT_MAX_BYTES fails its task naming the limit; a user whose stored results
exceed QUOTA_RESULT_BYTES gets 429 until they delete some."""

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import LocalStack, start_stack, stop_stack
from tests.e2e.client import login, submit, wait_final
from tests.e2e.conftest import Receiver, new_user
from tests.e2e.tasks import QUICK_LOAN
from tests.helpers import wait_until

pytestmark = pytest.mark.e2e

MAX_BYTES = 2 * 1024 * 1024
INLINE_MAX_BYTES = 64 * 1024
QUOTA_BYTES = 1024 * 1024


def grid(n: int) -> dict[str, Any]:
    """A Black-Scholes strike ladder of n options: about 114 bytes of result per option."""
    return {
        "spot": 100.0,
        "strike": [50.0 + i * 100.0 / n for i in range(n)],
        "maturity": 1.0,
        "rate": 0.03,
        "volatility": 0.25,
        "option_type": "call",
    }


@pytest.fixture(scope="module")
def results_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    s = start_stack(
        tmp_path_factory.mktemp("results") / "run",
        "--api-replicas",
        "1",
        "--worker-replicas",
        "1",
        env={
            "WORKER_CONCURRENCY": "2",
            "GUNICORN_WORKERS": "1",
            "RATE_LIMIT_ENABLED": "false",
            "DEFAULT_TASK_TIMEOUT": "30",
            "WEBHOOK_ALLOW_PRIVATE": "true",
            "RESULT_MAX_BYTES": str(MAX_BYTES),
            "RESULT_INLINE_MAX_BYTES": str(INLINE_MAX_BYTES),
            "QUOTA_RESULT_BYTES": str(QUOTA_BYTES),
        },
    )
    yield s
    stop_stack(s)


@pytest.fixture
def user(results_stack: LocalStack) -> httpx.Client:
    """A fresh account: its quota is its own."""
    admin = login(results_stack.url, *results_stack.admin)
    return login(results_stack.url, *new_user(admin))


def test_a_big_result_is_linked_from_the_view_and_the_webhook(
    user: httpx.Client, receiver: Receiver
) -> None:
    from finq_engine import get_task_type
    from finq_engine.context import NullContext

    params = grid(5000)
    path = receiver.new_path()
    task = submit(user, "black_scholes", params, notify={"webhook_url": receiver.base_url + path})
    done = wait_final(user, task["id"])
    assert done["status"] == "SUCCESS", done["error"]
    url = f"/api/v1/tasks/{task['id']}/result"
    assert done["result_truncated"] is True and done["result_url"] == url
    assert done["result"] == {}  # a grid has no scalar fields: every one is an array
    assert done["result_bytes"] > INLINE_MAX_BYTES
    view = user.get(f"/api/v1/tasks/{task['id']}")  # the params, not the 570 kB of arrays
    assert len(view.content) < len(json.dumps(params)) + 5000, len(view.content)

    whole = user.get(url)
    assert whole.status_code == 200 and whole.headers["content-type"] == "application/json"
    assert len(whole.content) == done["result_bytes"]
    task_type = get_task_type("black_scholes")
    assert task_type is not None
    assert json.loads(whole.content) == task_type.execute(params, NullContext())

    posted = wait_until(lambda: receiver.at(path), 60, 0.1, what="the webhook")
    body = posted[0].json()
    assert body["result"] == {} and body["result_truncated"] is True
    assert body["result_url"] == url
    assert len(posted[0].body) < len(json.dumps(params)) + 5000


def test_a_small_result_is_carried_whole_and_the_link_is_the_owners(
    user: httpx.Client, results_stack: LocalStack
) -> None:
    done = wait_final(user, submit(user, "loan_amortization", QUICK_LOAN)["id"])
    assert done["status"] == "SUCCESS" and done["result_truncated"] is False
    assert done["result"]["schedule"] and done["result_bytes"] < INLINE_MAX_BYTES
    assert user.get(done["result_url"]).json() == done["result"]
    admin = login(results_stack.url, *results_stack.admin)
    other = login(results_stack.url, *new_user(admin))
    assert other.get(done["result_url"]).status_code == 404


def test_a_result_over_the_limit_fails_its_task_naming_the_limit(user: httpx.Client) -> None:
    done = wait_final(user, submit(user, "black_scholes", grid(25_000))["id"])
    assert done["status"] == "FAILED" and done["result"] is None
    assert done["error"]["type"] == "ResultTooLarge"
    assert f"over the limit of {MAX_BYTES} bytes" in done["error"]["message"]
    assert "RESULT_MAX_BYTES" in done["error"]["message"]
    assert user.get(f"/api/v1/tasks/{done['id']}/result").status_code == 404
    # The worker goes on: the next task runs.
    assert wait_final(user, submit(user, "loan_amortization", QUICK_LOAN)["id"])["status"] == (
        "SUCCESS"
    )


def test_stored_results_over_the_quota_refuse_new_tasks_until_deleted(
    user: httpx.Client,
) -> None:
    big = wait_final(user, submit(user, "black_scholes", grid(12_000))["id"])
    assert big["status"] == "SUCCESS" and big["result_bytes"] > QUOTA_BYTES
    refused = user.post("/api/v1/tasks", json={"type": "loan_amortization", "params": QUICK_LOAN})
    assert refused.status_code == 429, refused.text
    detail = refused.json()["detail"]
    assert f"quota of {QUOTA_BYTES} bytes" in detail and "QUOTA_RESULT_BYTES" in detail
    assert user.delete(f"/api/v1/tasks/{big['id']}").status_code == 204
    submit(user, "loan_amortization", QUICK_LOAN)
