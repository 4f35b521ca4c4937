"""A task's view and result through nginx on the shared stack: `?include=` leaves the big
parts out of a status poll, and a result's arrays stream as CSV or NDJSON rows equal to its
JSON (a 3,000-option Black-Scholes grid, a loan schedule); a result without arrays is a 422."""

import csv
import io
import json
from typing import Any

import httpx
import pytest

from tests.conftest import LocalStack
from tests.e2e.client import login, submit, wait_final
from tests.e2e.conftest import new_user
from tests.e2e.tasks import QUICK_LOAN
from tests.e2e.test_results import grid

pytestmark = pytest.mark.e2e
GREEKS = ["price", "delta", "gamma", "vega", "theta", "rho"]


@pytest.fixture(scope="module")
def alice(stack: LocalStack) -> httpx.Client:
    return login(stack.url, *new_user(login(stack.url, *stack.admin)))


@pytest.fixture(scope="module")
def grid_task(alice: httpx.Client) -> dict[str, Any]:
    done = wait_final(alice, submit(alice, "black_scholes", grid(3000))["id"])
    assert done["status"] == "SUCCESS", done
    return done


def test_a_lean_poll_leaves_params_result_and_deliveries_out(
    alice: httpx.Client, grid_task: dict[str, Any]
) -> None:
    url = f"/api/v1/tasks/{grid_task['id']}"
    full = alice.get(url)
    lean = alice.get(url, params={"include": ""})
    assert lean.status_code == 200, lean.text
    body = lean.json()
    assert not {"params", "result", "deliveries"} & set(body)
    assert body["status"] == "SUCCESS" and body["result_url"] == f"{url}/result"
    assert body["result_bytes"] == full.json()["result_bytes"] > 0
    assert len(lean.content) * 20 < len(full.content)
    assert set(full.json()) - set(body) == {"params", "result", "deliveries"}
    some = alice.get(url, params={"include": "deliveries, params"}).json()
    assert some["params"] == full.json()["params"] and some["deliveries"] == []
    assert "result" not in some


def test_an_unknown_part_to_include_is_named(
    alice: httpx.Client, grid_task: dict[str, Any]
) -> None:
    resp = alice.get(f"/api/v1/tasks/{grid_task['id']}", params={"include": "params,bogus"})
    assert resp.status_code == 422
    [problem] = resp.json()["detail"]
    assert problem["loc"] == ["query", "include"] and "'bogus'" in problem["msg"]


def test_a_grid_result_streams_as_rows_equal_to_its_json(
    alice: httpx.Client, grid_task: dict[str, Any]
) -> None:
    whole = alice.get(grid_task["result_url"]).json()
    assert [len(whole[g]) for g in GREEKS] == [3000] * 6
    as_csv = alice.get(grid_task["result_url"], params={"format": "csv"})
    assert as_csv.status_code == 200, as_csv.text
    assert as_csv.headers["content-type"].startswith("text/csv")
    assert f"task-{grid_task['id']}.csv" in as_csv.headers["content-disposition"]
    table = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert list(table[0]) == GREEKS and len(table) == 3000
    assert [[float(r[g]) for g in GREEKS] for r in table] == [
        [whole[g][i] for g in GREEKS] for i in range(3000)
    ]
    by_accept = alice.get(grid_task["result_url"], headers={"Accept": "application/x-ndjson"})
    assert by_accept.headers["content-type"].startswith("application/x-ndjson")
    rows = [json.loads(line) for line in by_accept.text.splitlines()]
    assert rows == [{g: whole[g][i] for g in GREEKS} for i in range(3000)]
    assert alice.get(grid_task["result_url"], params={"format": "json"}).json() == whole


def test_a_loan_schedule_gives_a_column_per_key_and_scalars_give_no_rows(
    alice: httpx.Client,
) -> None:
    loan = wait_final(alice, submit(alice, "loan_amortization", QUICK_LOAN)["id"])
    url = f"/api/v1/tasks/{loan['id']}/result"
    schedule = alice.get(url).json()["schedule"]
    table = list(csv.DictReader(io.StringIO(alice.get(url, params={"format": "csv"}).text)))
    assert list(table[0]) == [f"schedule.{k}" for k in schedule[0]]
    assert [{k: float(r[f"schedule.{k}"]) for k in schedule[0]} for r in table] == schedule
    example = {t["name"]: t["example"] for t in alice.get("/api/v1/task-types").json()}
    scalar = wait_final(alice, submit(alice, "american_option", example["american_option"])["id"])
    assert scalar["status"] == "SUCCESS", scalar
    url = f"/api/v1/tasks/{scalar['id']}/result"
    for resp, loc in (
        (alice.get(url, params={"format": "ndjson"}), ["query", "format"]),
        (alice.get(url, headers={"Accept": "text/csv"}), ["header", "accept"]),
    ):
        assert resp.status_code == 422, resp.text
        [problem] = resp.json()["detail"]
        assert problem["loc"] == loc and "no array fields" in problem["msg"]
