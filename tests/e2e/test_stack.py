"""The real local stack (the `make run` script) driven through nginx."""

import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.conftest import LocalStack, start_stack, stop_stack
from tests.e2e.client import login, submit, wait_final
from tests.helpers import wait_until

pytestmark = pytest.mark.e2e

LOAN = {"principal": 10000, "annual_rate": 0.05, "years": 30}


@pytest.fixture(scope="module")
def admin(stack: LocalStack) -> httpx.Client:
    return login(stack.url, *stack.admin)


def test_health_and_readiness_through_nginx(stack: LocalStack) -> None:
    assert httpx.get(stack.url + "/health").json()["status"] == "ok"
    ready = httpx.get(stack.url + "/health/ready")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"redis": "ok", "redis_durability": "ok", "database": "ok"}
    assert httpx.get(stack.url + "/nginx-health").status_code == 200


def test_the_vertical_slice(stack: LocalStack, admin: httpx.Client) -> None:
    resp = admin.post("/api/v1/tasks", json={"type": "loan_amortization", "params": LOAN})
    assert resp.status_code == 202
    task = resp.json()
    assert task["status"] == "PENDING"
    assert resp.headers["Location"] == f"/api/v1/tasks/{task['id']}"
    assert resp.headers["X-Request-ID"]
    done = wait_final(admin, task["id"])
    assert done["status"] == "SUCCESS"
    result = done["result"]
    # Level payment of 10,000 at 5%/12 over 360 months: 53.68 (closed form, to the cent).
    assert result["payment"] == pytest.approx(53.68, abs=0.005)
    assert result["periods"] == 360 and len(result["schedule"]) == 360
    assert result["schedule"][-1]["balance"] == 0
    history = [e["status"] for e in admin.get(f"/api/v1/tasks/{task['id']}/history").json()]
    assert history == ["PENDING", "RUNNING", "SUCCESS"]


def test_bad_input_names_the_field(admin: httpx.Client) -> None:
    resp = admin.post(
        "/api/v1/tasks", json={"type": "loan_amortization", "params": {**LOAN, "annual_rate": -1}}
    )
    assert resp.status_code == 422
    body = resp.json()
    assert [e["loc"] for e in body["detail"]] == [["body", "params", "annual_rate"]]
    assert body["request_id"]
    unknown = admin.post("/api/v1/tasks", json={"type": "nope", "params": {}})
    assert unknown.status_code == 422
    assert unknown.json()["detail"][0]["loc"] == ["body", "type"]
    not_json = admin.post(
        "/api/v1/tasks", content=b"{oops", headers={"content-type": "application/json"}
    )
    assert not_json.status_code == 422


def test_docs_and_schema_through_nginx(stack: LocalStack) -> None:
    assert httpx.get(stack.url + "/docs").status_code == 200
    schema = httpx.get(stack.url + "/openapi.json").json()
    assert "/api/v1/tasks" in schema["paths"]
    assert "LoanAmortizationParams" in schema["components"]["schemas"]


def test_requests_need_a_token(stack: LocalStack) -> None:
    resp = httpx.post(
        stack.url + "/api/v1/tasks", json={"type": "loan_amortization", "params": LOAN}
    )
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"] == "Bearer"


def test_nginx_spreads_requests_over_every_replica(stack: LocalStack) -> None:
    with httpx.Client(base_url=stack.url) as c:
        served = Counter(c.get("/health").headers["X-Served-By"] for _ in range(60))
    assert set(served) == {"api-1", "api-2", "api-3"}


def test_kill_9_of_a_replica_loses_no_request(stack: LocalStack, admin: httpx.Client) -> None:
    """While a client sends 300 requests through nginx, one replica is killed with SIGKILL
    (its gunicorn master and workers): nginx retries on the others, nothing fails."""
    task = submit(admin, "loan_amortization", LOAN)
    wait_final(admin, task["id"])
    victim = stack.pid_of("api:api-2")
    failures: list[str] = []
    served: Counter[str] = Counter()
    sent = 0

    def client() -> None:
        nonlocal sent
        with httpx.Client(base_url=stack.url, headers=admin.headers, timeout=30) as c:
            for i in range(300):
                path = "/health/ready" if i % 2 else f"/api/v1/tasks/{task['id']}"
                try:
                    r = c.get(path)
                    served[r.headers.get("X-Served-By", "?")] += 1
                    if r.status_code != 200:
                        failures.append(f"{path}: {r.status_code}")
                except httpx.HTTPError as exc:
                    failures.append(f"{path}: {exc!r}")
                sent += 1

    thread = threading.Thread(target=client)
    thread.start()
    wait_until(lambda: sent >= 50, 30, 0.01, what="the client to be under way")
    os.killpg(victim, signal.SIGKILL)
    thread.join(120)
    assert sent == 300
    assert failures == []
    # Supervisor brings the replica back.
    wait_until(
        lambda: (
            stack.pid_of("api:api-2") not in (0, victim)
            and httpx.get(stack.url + "/health").status_code == 200
        ),
        60,
        what="api-2 to be restarted",
    )


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        for c in children.get(p, []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat")
    return state.exists() and state.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def test_scaled_stack_starts_and_stop_leaves_nothing(tmp_path: Path) -> None:
    """`make run API_REPLICAS=N WORKER_REPLICAS=M` then `make stop`: every process gone."""
    started = time.monotonic()
    small = start_stack(
        tmp_path / "run",
        "--api-replicas",
        "4",
        "--worker-replicas",
        "1",
        env={"WORKER_CONCURRENCY": "1", "GUNICORN_WORKERS": "1"},
    )
    try:
        assert time.monotonic() - started < 60
        with httpx.Client(base_url=small.url) as c:
            served = {c.get("/health").headers["X-Served-By"] for _ in range(40)}
        assert served == {"api-1", "api-2", "api-3", "api-4"}
        supervisord = int((small.run_dir / "supervisor" / "supervisord.pid").read_text())
        processes = _descendants(supervisord) | {supervisord}
        assert len(processes) >= 4 + 1 + 4  # replicas, worker, redis, nginx, beat, flower...
    finally:
        stop_stack(small)
    leftovers = {p for p in processes if _alive(p)}
    assert leftovers == set()
