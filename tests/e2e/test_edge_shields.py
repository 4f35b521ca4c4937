"""What the edge refuses before it costs anything, and what one user may see of another's work,
through nginx on the shared stack: anonymous bodies refused unread (the replicas' memory does
not move), per-route body limits, the monitoring view scoped to its caller, Flower's guess
limit and headers, uncacheable tokens and private log files."""

import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.conftest import LocalStack
from tests.e2e.client import login, submit, wait_final
from tests.e2e.conftest import new_user
from tests.e2e.tasks import ENDLESS_MC, QUICK_LOAN
from tests.helpers import wait_until

pytestmark = pytest.mark.e2e

MB = 1024 * 1024
# 15 MB of small objects: read and parsed, it grew a replica by about 330 MB; refused
# unread, it costs the request's buffers only.
BIG_JSON = b'{"type": "black_scholes", "params": {"spot": [' + b'{"a":1},' * 1_966_080 + b"1]}}"
MEMORY_BOUND = 40 * MB


@pytest.fixture(scope="module")
def admin(stack: LocalStack) -> httpx.Client:
    return login(stack.url, *stack.admin)


def replica_memory(stack: LocalStack) -> dict[str, tuple[int, int]]:
    """Each API replica's (resident, peak resident) bytes, summed over its processes."""
    out = {}
    for i in range(1, int(stack.info["API_REPLICAS"]) + 1):
        root = psutil.Process(stack.pid_of(f"api:api-{i}"))
        rss = hwm = 0
        for proc in [root, *root.children(recursive=True)]:
            lines = Path(f"/proc/{proc.pid}/status").read_text().splitlines()
            status = dict(line.split(":", 1) for line in lines if ":" in line)
            rss += int(status["VmRSS"].split()[0]) * 1024
            hwm += int(status["VmHWM"].split()[0]) * 1024
        out[f"api-{i}"] = (rss, hwm)
    return out


def chunks(body: bytes) -> Iterator[bytes]:
    yield body


def test_anonymous_bodies_are_refused_unread(stack: LocalStack) -> None:
    """15 MB of JSON to a protected route without a valid token: nginx refuses it without an
    Authorization header (413), a replica refuses it unread with a forged token or when
    reached directly (401), and no replica's memory (resident or peak) grows by much."""
    before = replica_memory(stack)
    json_type = {"content-type": "application/json"}
    anonymous = httpx.post(stack.url + "/api/v1/tasks", content=BIG_JSON, headers=json_type)
    assert anonymous.status_code == 413 and anonymous.json()["request_id"]
    streamed = httpx.post(stack.url + "/api/v1/tasks", content=chunks(BIG_JSON))
    assert streamed.status_code == 413
    forged = {**json_type, "Authorization": "Bearer not-a-token"}
    for _ in range(int(stack.info["API_REPLICAS"])):  # nginx takes turns: each replica once
        resp = httpx.post(stack.url + "/api/v1/tasks", content=BIG_JSON, headers=forged, timeout=60)
        assert resp.status_code == 401, resp.text
        assert resp.json()["detail"] == "Could not validate credentials"
        assert resp.headers["WWW-Authenticate"] == "Bearer"
    for port in stack.info["API_PORTS"].split(","):
        direct = httpx.post(
            f"http://127.0.0.1:{port}/api/v1/tasks", content=BIG_JSON, headers=json_type, timeout=60
        )
        assert direct.status_code == 401, direct.text
    after = replica_memory(stack)
    for name, (rss, hwm) in after.items():
        grew = max(rss - before[name][0], hwm - before[name][1])
        print(
            f"{name}: resident {before[name][0] / MB:.0f} -> {rss / MB:.0f} MB, "
            f"peak {before[name][1] / MB:.0f} -> {hwm / MB:.0f} MB"
        )
        assert grew < MEMORY_BOUND, f"{name} grew by {grew / MB:.0f} MB"


def test_public_routes_stay_public(stack: LocalStack) -> None:
    for path in ("/health", "/health/ready", "/api/v1/task-types", "/docs", "/openapi.json", "/"):
        assert httpx.get(stack.url + path).status_code == 200, path
    login_form = {"username": stack.admin[0], "password": stack.admin[1]}
    assert httpx.post(stack.url + "/api/v1/auth/token", data=login_form).status_code == 200


def test_each_route_bounds_its_own_body(stack: LocalStack, admin: httpx.Client) -> None:
    """MAX_BODY_BYTES (64 KiB) on most routes; task submissions take TASK_BODY_MAX_BYTES."""
    padding = "x" * 100_000
    account = admin.post("/api/v1/users", json={"username": "toolong", "password": padding})
    assert account.status_code == 413 and "65536" in account.json()["detail"]
    streamed = admin.post(
        "/api/v1/users",
        content=chunks(b'{"username": "toolong", "password": "' + padding.encode() + b'"}'),
        headers={"content-type": "application/json"},
    )
    assert streamed.status_code == 413
    task = admin.post("/api/v1/tasks", json={"type": "loan_amortization", "params": {"x": padding}})
    assert task.status_code == 422, task.text  # read and validated: within its route's limit
    big_task = {"type": "black_scholes", "params": {"spot": [100.0] * 200_000}}
    assert admin.post("/api/v1/tasks", json=big_task).status_code == 422  # other fields missing


def workers_running(client: httpx.Client, task_id: str) -> list[dict[str, Any]]:
    """The entries of /monitoring/queues' `workers` that list `task_id`."""
    workers: list[dict[str, Any]] = client.get("/api/v1/monitoring/queues").json()["workers"]
    return [w for w in workers if task_id in w["tasks"]]


def test_monitoring_shows_a_user_only_their_own_work(
    stack: LocalStack, admin: httpx.Client
) -> None:
    alice = login(stack.url, *new_user(admin))
    bob = login(stack.url, *new_user(admin))
    task = submit(alice, "monte_carlo_option", ENDLESS_MC)
    try:
        [worker] = wait_until(
            lambda: workers_running(alice, task["id"]), 60, 0.2, what="alice's task on a worker"
        )
        assert worker["tasks"] == [task["id"]] and worker["name"].startswith("worker")
        assert workers_running(admin, task["id"])  # admins see every owner's work
        as_bob = bob.get("/api/v1/monitoring/queues")
        assert as_bob.status_code == 200
        # Neither alice's task nor the hosts running anything: bob runs nothing.
        assert as_bob.json()["workers"] == [] and task["id"] not in as_bob.text
        assert as_bob.json()["workers_online"] == 2
        assert bob.get("/api/v1/monitoring/queues", params={"all": "true"}).status_code == 403
    finally:
        alice.post(f"/api/v1/tasks/{task['id']}/cancel")
    wait_final(alice, task["id"])


def test_flower_limits_password_guesses_and_sends_security_headers(stack: LocalStack) -> None:
    url = stack.url + "/flower/"
    statuses = []
    with httpx.Client(timeout=10) as client:
        started = time.monotonic()
        for i in range(25):
            statuses.append(client.get(url, auth=("admin", f"wrong-{i}")).status_code)
        elapsed = time.monotonic() - started
    print(f"25 wrong passwords in {elapsed:.2f} s: {statuses.count(429)} x 429")
    assert set(statuses) <= {401, 429}
    assert statuses.count(429) >= 10, statuses
    # The right password goes through again once the address's budget refills (1 a second).

    def let_in() -> httpx.Response | None:
        resp = httpx.get(url, auth=stack.flower_auth)
        return resp if resp.status_code == 200 else None

    page = wait_until(let_in, 20, 0.5, what="Flower to let the right password in")
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["X-Frame-Options"] == "DENY"
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Request-ID"]
    static = httpx.get(stack.url + "/flower/static/js/flower.js")
    assert static.status_code == 200 and static.headers["X-Frame-Options"] == "DENY"


def test_token_answers_are_not_cached(stack: LocalStack) -> None:
    resp = httpx.post(
        stack.url + "/api/v1/auth/token",
        data={"username": stack.admin[0], "password": stack.admin[1]},
    )
    assert resp.status_code == 200
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.headers["Pragma"] == "no-cache"


def test_log_files_are_private(stack: LocalStack, admin: httpx.Client) -> None:
    """Every log the stack writes (nginx, supervisord, each service) is 0640."""
    wait_final(admin, submit(admin, "loan_amortization", QUICK_LOAN)["id"])
    logs = [p for p in (stack.run_dir / "logs").iterdir() if p.is_file()]
    assert {"nginx-access.log", "nginx-error.log", "supervisord.log", "api-1.log"} <= {
        p.name for p in logs
    }
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in logs}
    assert all(mode == 0o640 for mode in modes.values()), {k: oct(v) for k, v in modes.items()}
