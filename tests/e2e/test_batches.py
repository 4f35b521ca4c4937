"""Batches through the real stack (nginx, API replicas, Redis, Celery workers): results equal
single tasks', grids and CSV rows expand in order, bad items are named, a killed pool process
or a cancel leaves every item ended exactly once, retries, and owners are isolated."""

import csv
import io
import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import (
    ROOT,
    STACK_ENV_DROP,
    VENV_BIN,
    LocalStack,
)
from tests.e2e.client import login, submit, wait_final
from tests.e2e.conftest import new_user
from tests.e2e.test_faults import children
from tests.helpers import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
FINAL = {"SUCCESS", "FAILED", "CANCELLED"}


@pytest.fixture(scope="module")
def batch_stack(fragile: LocalStack) -> LocalStack:
    """The fault tests' stack (tests/e2e/conftest.py): these tests kill workers too."""
    return fragile


@pytest.fixture(scope="module")
def admin(batch_stack: LocalStack) -> httpx.Client:
    return login(batch_stack.url, *batch_stack.admin)


def create(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    resp = client.post("/api/v1/batches", json=body)
    assert resp.status_code == 202, resp.text
    out: dict[str, Any] = resp.json()
    return out


def wait_batch(client: httpx.Client, batch_id: str, timeout: float = 120) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        body: dict[str, Any] = client.get(f"/api/v1/batches/{batch_id}").json()
        return body if body["status"] in FINAL else None

    return wait_until(probe, timeout, 0.1, what=f"batch {batch_id} to end")


def results(client: httpx.Client, batch_id: str) -> list[dict[str, Any]]:
    resp = client.get(f"/api/v1/batches/{batch_id}/results")
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("application/x-ndjson")
    return [json.loads(line) for line in resp.text.splitlines()]


def loans(n: int, years: int = 1) -> list[dict[str, Any]]:
    return [{"principal": 1000 + i, "annual_rate": 0.05, "years": years} for i in range(n)]


def test_a_batch_of_1000_loans_gives_the_single_task_results(admin: httpx.Client) -> None:
    batch = create(admin, {"type": "loan_amortization", "items": loans(1000)})
    assert batch["total"] == 1000 and batch["varied"] == ["principal", "annual_rate", "years"]
    done = wait_batch(admin, batch["id"])
    assert done["status"] == "SUCCESS"
    assert done["counts"]["SUCCESS"] == 1000 and done["progress"] == 1.0
    rows = results(admin, batch["id"])
    assert [r["index"] for r in rows] == list(range(1000))
    items = admin.get(f"/api/v1/batches/{batch['id']}/items", params={"limit": 1000}).json()
    for index in (0, 417, 999):
        single = wait_final(admin, submit(admin, "loan_amortization", loans(1000)[index])["id"])
        assert single["status"] == "SUCCESS"
        assert items["items"][index]["result"] == single["result"]
        assert rows[index]["payment"] == single["result"]["payment"]


def test_a_chunk_of_costly_items_is_split_and_every_item_runs_once(
    admin: httpx.Client, batch_stack: LocalStack
) -> None:
    """Eight pricings of about a second fall in one chunk (the type's table expects 8 ms
    an item): the chunk runs out of its 2 s budget, and what it did not reach goes back as two
    chunks. Every item ends SUCCESS on its first attempt (a release is not an attempt)."""
    base = {
        "spot": 100,
        "strike": 105,
        "maturity": 1,
        "rate": 0.03,
        "volatility": 0.2,
        "option_type": "call",
        "style": "asian_arithmetic",
        "steps": 252,
    }
    vary = {"paths": [300000 + 2 * i for i in range(8)]}
    batch = create(admin, {"type": "monte_carlo_option", "base": base, "vary": vary})
    assert batch["chunk_size"] >= 8
    done = wait_batch(admin, batch["id"])
    assert done["status"] == "SUCCESS" and done["counts"]["SUCCESS"] == 8
    items = admin.get(f"/api/v1/batches/{batch['id']}/items").json()["items"]
    assert [(i["status"], i["attempts"]) for i in items] == [("SUCCESS", 1)] * 8
    with sqlite3.connect(batch_stack.info["DATABASE_URL"].split("///", 1)[1]) as db:
        (chunks,) = db.execute(
            "SELECT count(DISTINCT chunk) FROM batch_items WHERE batch_id = ?",
            (batch["id"].replace("-", ""),),
        ).fetchone()
    assert chunks >= 2, "the chunk ran within its budget: nothing was split"


def test_a_grid_is_expanded_with_the_last_field_varying_fastest(admin: httpx.Client) -> None:
    rates, years = [0.01, 0.02, 0.03], [1, 2]
    batch = create(
        admin,
        {
            "type": "loan_amortization",
            "base": {"principal": 5000},
            "vary": {"annual_rate": rates, "years": years},
        },
    )
    assert batch["total"] == 6 and batch["varied"] == ["annual_rate", "years"]
    assert wait_batch(admin, batch["id"])["status"] == "SUCCESS"
    resp = admin.get(f"/api/v1/batches/{batch['id']}/results", params={"format": "csv"})
    assert resp.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(resp.text)))
    assert [(float(r["annual_rate"]), float(r["years"])) for r in table] == [
        (r, y) for r in rates for y in years
    ]
    assert "schedule" not in table[0] and float(table[0]["payment"]) > 0


def test_a_csv_batch_with_one_bad_row_is_refused_naming_its_line(admin: httpx.Client) -> None:
    text = "principal,annual_rate,years\n1000,0.05,1\n2000,0.04,2\n3000,-7,3\n4000,0.05,4\n"
    resp = admin.post("/api/v1/batches", json={"type": "loan_amortization", "csv": text})
    assert resp.status_code == 422, resp.text
    [problem] = resp.json()["detail"]
    assert problem["loc"] == ["body", "csv", "line 4", "annual_rate"]
    before = admin.get("/api/v1/batches").json()["items"]
    assert all(b["total"] != 4 for b in before)  # nothing recorded
    ok = create(admin, {"type": "loan_amortization", "csv": text.replace("-7", "0.07")})
    assert wait_batch(admin, ok["id"])["counts"]["SUCCESS"] == 4


def test_a_bad_item_is_named_by_its_index_and_field(admin: httpx.Client) -> None:
    items = loans(30)
    items[17]["annual_rate"] = "lots"
    resp = admin.post("/api/v1/batches", json={"type": "loan_amortization", "items": items})
    assert resp.status_code == 422
    assert resp.json()["detail"][0]["loc"] == ["body", "items", 17, "annual_rate"]


def test_a_batch_beyond_its_body_limit_is_refused_by_nginx(
    admin: httpx.Client, batch_stack: LocalStack
) -> None:
    big = "x" * (33554432 + 10)
    resp = admin.post("/api/v1/batches", content=big, headers={"Content-Type": "application/json"})
    assert resp.status_code == 413


def test_a_killed_pool_process_leaves_every_item_succeeded_once(
    admin: httpx.Client, batch_stack: LocalStack
) -> None:
    batch = create(admin, {"type": "loan_amortization", "items": loans(20000)})

    def running() -> bool | None:
        body = admin.get(f"/api/v1/batches/{batch['id']}").json()
        return True if body["counts"]["SUCCESS"] > 200 else None

    wait_until(running, 60, 0.05, what="the batch to be under way")
    victims = children(batch_stack.pid_of("workers:worker-1"))
    assert victims
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    done = wait_batch(admin, batch["id"], timeout=180)
    assert done["status"] == "SUCCESS", done
    assert done["counts"]["SUCCESS"] == 20000
    rows = results(admin, batch["id"])
    assert sorted(r["index"] for r in rows) == list(range(20000))
    assert all(r["status"] == "SUCCESS" for r in rows)


def test_a_killed_whole_worker_leaves_every_item_succeeded_once(
    admin: httpx.Client, batch_stack: LocalStack
) -> None:
    batch = create(admin, {"type": "loan_amortization", "items": loans(20000)})
    wait_until(
        lambda: (
            admin.get(f"/api/v1/batches/{batch['id']}").json()["counts"]["SUCCESS"] > 200 or None
        ),
        60,
        0.05,
        what="the batch to be under way",
    )
    os.killpg(batch_stack.pid_of("workers:worker-2"), signal.SIGKILL)
    # Its chunks come back after the visibility timeout (30 s with a 10 s task limit).
    done = wait_batch(admin, batch["id"], timeout=240)
    assert done["status"] == "SUCCESS", done
    assert done["counts"]["SUCCESS"] == 20000
    rows = results(admin, batch["id"])
    assert [r["index"] for r in rows] == list(range(20000))


def test_cancel_mid_batch_stops_it_within_two_seconds(admin: httpx.Client) -> None:
    batch = create(admin, {"type": "loan_amortization", "items": loans(20000)})
    wait_until(
        lambda: admin.get(f"/api/v1/batches/{batch['id']}").json()["counts"]["SUCCESS"] or None,
        60,
        0.05,
        what="the first items to end",
    )
    asked = time.monotonic()
    resp = admin.post(f"/api/v1/batches/{batch['id']}/cancel")
    assert resp.status_code == 200
    done = wait_batch(admin, batch["id"], timeout=10)
    assert time.monotonic() - asked < 2.0
    assert done["status"] == "CANCELLED"
    counts = done["counts"]
    assert counts["CANCELLED"] > 0 and counts["SUCCESS"] + counts["CANCELLED"] == 20000
    # The cancelled items run again when retried, and nothing else does.
    succeeded = counts["SUCCESS"]
    resp = admin.post(f"/api/v1/batches/{batch['id']}/retry")
    assert resp.status_code == 202, resp.text
    again = wait_batch(admin, batch["id"], timeout=180)
    assert again["status"] == "SUCCESS" and again["counts"]["SUCCESS"] == 20000
    retried = admin.get(
        f"/api/v1/batches/{batch['id']}/items", params={"limit": 1000, "after": -1}
    ).json()["items"]
    assert retried and succeeded < 20000


def test_failed_items_fail_alone_and_run_again_when_retried(admin: httpx.Client) -> None:
    good = {"cash_flows": [-100, 60, 60], "discount_rate": 0.05}
    bad = {"cash_flows": [-1] + [1] * 300, "discount_rate": -0.99}  # NPV overflows
    batch = create(admin, {"type": "cash_flow_analysis", "items": [good, bad, good]})
    done = wait_batch(admin, batch["id"])
    assert done["status"] == "FAILED"
    assert done["counts"]["SUCCESS"] == 2 and done["counts"]["FAILED"] == 1
    failed = admin.get(f"/api/v1/batches/{batch['id']}/items", params={"status": "FAILED"}).json()[
        "items"
    ]
    assert [i["index"] for i in failed] == [1]
    assert "overflows" in failed[0]["error"]["message"]
    assert admin.post(f"/api/v1/batches/{batch['id']}/retry").status_code == 202
    again = wait_batch(admin, batch["id"])
    assert again["counts"] == {**done["counts"]}
    item = admin.get(f"/api/v1/batches/{batch['id']}/items", params={"status": "FAILED"}).json()
    assert item["items"][0]["attempts"] == 1 and again["finished_at"] != done["finished_at"]


def test_another_users_batch_does_not_exist_for_them(
    admin: httpx.Client, batch_stack: LocalStack
) -> None:
    batch = create(admin, {"type": "loan_amortization", "items": loans(3)})
    name, password = new_user(admin)
    other = login(batch_stack.url, name, password)
    for path in ("", "/items", "/results", "/events"):
        assert other.get(f"/api/v1/batches/{batch['id']}{path}").status_code == 404, path
    assert other.post(f"/api/v1/batches/{batch['id']}/cancel").status_code == 404
    assert other.post(f"/api/v1/batches/{batch['id']}/retry").status_code == 404
    assert other.delete(f"/api/v1/batches/{batch['id']}").status_code == 404
    assert other.get("/api/v1/batches").json()["items"] == []
    wait_batch(admin, batch["id"])
    assert admin.delete(f"/api/v1/batches/{batch['id']}").status_code == 204
    assert admin.get(f"/api/v1/batches/{batch['id']}").status_code == 404


def finq(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FINQ_CONFIG": str(config), "COLUMNS": "100"}
    env.pop("FINQ_URL", None)
    env.pop("FINQ_TOKEN", None)
    return subprocess.run(
        [str(VENV_BIN / "finq"), *args], capture_output=True, text=True, env=env, timeout=120
    )


def finq_login(config: Path, stack: LocalStack) -> subprocess.CompletedProcess[str]:
    """`finq login` as the stack's admin, the password given by FINQ_PASSWORD."""
    user, password = stack.admin
    os.environ["FINQ_PASSWORD"] = password
    try:
        return finq(config, "login", "--url", stack.url, "--username", user)
    finally:
        del os.environ["FINQ_PASSWORD"]


def test_the_cli_runs_a_csv_batch_and_a_task_against_the_stack(
    batch_stack: LocalStack, tmp_path: Path
) -> None:
    config = tmp_path / "finq.json"
    login = finq_login(config, batch_stack)
    assert login.returncode == 0, login.stderr
    assert "logged in" in login.stderr and oct(config.stat().st_mode)[-3:] == "600"
    items = tmp_path / "items.csv"
    items.write_text("principal,annual_rate\n" + "".join(f"{1000 + i},0.05\n" for i in range(50)))
    out = tmp_path / "results.csv"
    ran = finq(config, "batch", "loan_amortization", "--csv", str(items), "--base", "years=1",
               "--out", str(out))  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert "50 SUCCESS" in ran.stderr and "50/50" in ran.stderr  # the summary, the bar
    table = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [float(r["principal"]) for r in table] == [1000 + i for i in range(50)]
    task = finq(config, "submit", "loan_amortization", "--param", "principal=1000",
                "--param", "annual_rate=0.05", "--param", "years=1", "--wait")  # fmt: skip
    assert task.returncode == 0, task.stderr
    assert json.loads(task.stdout)["status"] == "SUCCESS"
    status = finq(config, "status", json.loads(task.stdout)["id"])
    assert json.loads(status.stdout)["type"] == "loan_amortization"
    wrong = finq(config, "submit", "loan_amortization", "--param", "annual_rate=abc")
    assert wrong.returncode == 1
    assert "invalid input" in wrong.stderr and "params.annual_rate" in wrong.stderr
    config.write_text(json.dumps({"url": batch_stack.url, "token": "nope"}))
    denied = finq(config, "status", json.loads(task.stdout)["id"])
    assert denied.returncode == 1 and "finq login" in denied.stderr


def test_an_idempotency_key_returns_the_first_batch(admin: httpx.Client) -> None:
    body = {"type": "loan_amortization", "items": loans(5)}
    headers = {"Idempotency-Key": f"batch-{time.time_ns()}"}
    first = admin.post("/api/v1/batches", json=body, headers=headers)
    again = admin.post("/api/v1/batches", json=body, headers=headers)
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["Location"].endswith(first.json()["id"])


def test_the_events_stream_follows_a_batch_to_its_end(admin: httpx.Client) -> None:
    batch = create(admin, {"type": "loan_amortization", "items": loans(3000)})
    frames = []
    with admin.stream("GET", f"/api/v1/batches/{batch['id']}/events", timeout=120) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        for line in resp.iter_lines():
            if line.startswith("data:"):
                frames.append(json.loads(line[5:]))
    assert frames[-1]["status"] == "SUCCESS" and frames[-1]["counts"]["SUCCESS"] == 3000
    done = [f["counts"]["SUCCESS"] for f in frames]
    assert done == sorted(done)  # progress only grows


def test_the_locust_batch_scenario_runs_batches_to_their_end(
    batch_stack: LocalStack, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if k not in STACK_ENV_DROP}
    user, password = batch_stack.admin
    env.update(FINQ_USERNAME=user, FINQ_PASSWORD=password, LOADTEST_BATCH_ITEMS="200")
    proc = subprocess.run(
        [str(VENV_BIN / "locust"), "-f", str(ROOT / "loadtest" / "batchfile.py"), "--headless",
         "--host", batch_stack.url, "--users", "2", "--spawn-rate", "2", "--run-time", "5s",
         "--stop-timeout", "90", "--only-summary", "--csv", str(tmp_path / "locust")],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    output = proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = {r["Name"]: r for r in csv.DictReader((tmp_path / "locust_stats.csv").open())}
    assert int(rows["batch done"]["Request Count"]) >= 1, output
    assert rows["batch done"]["Failure Count"] == "0", output
    assert int(rows["items"]["Request Count"]) == 200 * int(rows["batch done"]["Request Count"])
