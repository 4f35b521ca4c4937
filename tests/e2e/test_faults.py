"""Nothing is lost: processes killed mid-task, Redis restarted with work queued, cancels and
retries under load, on the `fragile` stack (tests/e2e/conftest.py) that these tests break."""

import os
import signal
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import LocalStack
from tests.e2e.client import FINAL, login, submit, wait_final
from tests.e2e.tasks import ONE_SECOND_MC, QUICK_LOAN
from tests.helpers import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def client(fragile: LocalStack) -> httpx.Client:
    return login(fragile.url, *fragile.admin)


def children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def assert_each_succeeded_once(client: httpx.Client, ids: list[str]) -> list[dict[str, Any]]:
    finals = [wait_final(client, tid, timeout=180) for tid in ids]
    assert [t["status"] for t in finals] == ["SUCCESS"] * len(ids)
    for tid in ids:
        statuses = [e["status"] for e in client.get(f"/api/v1/tasks/{tid}/history").json()]
        assert statuses.count("SUCCESS") == 1, (tid, statuses)
    return finals


def wait_running(client: httpx.Client, n: int, on: str = "") -> None:
    """Until `n` tasks run on the worker whose hostname starts with `on` (any worker by
    default): a kill must hit a worker that is running something, or there is nothing to
    redeliver and the test proves nothing."""

    def busy() -> bool:
        page = client.get("/api/v1/tasks", params={"status": "RUNNING"}).json()
        if not on:
            return len(page["items"]) >= n
        records = [client.get(f"/api/v1/tasks/{t['id']}").json() for t in page["items"]]
        running: int = sum(
            r.get("status") == "RUNNING" and (r.get("worker") or "").startswith(on) for r in records
        )
        return running >= n

    wait_until(busy, 60, 0.05, what=f"{n} tasks running on {on or 'any worker'}")


def test_kill_9_of_a_worker_process_mid_task(fragile: LocalStack, client: httpx.Client) -> None:
    ids = [submit(client, "monte_carlo_option", ONE_SECOND_MC)["id"] for _ in range(50)]
    wait_running(client, 2, on="worker1@")  # both pool processes of worker-1 are busy
    main = fragile.pid_of("workers:worker-1")
    victims = children(main)
    assert victims, "the worker has no pool processes"
    os.kill(victims[0], signal.SIGKILL)
    finals = assert_each_succeeded_once(client, ids)
    assert max(t["attempts"] for t in finals) == 2, "the killed process was running a task"


def test_kill_9_of_a_whole_worker_mid_task(fragile: LocalStack, client: httpx.Client) -> None:
    ids = [submit(client, "monte_carlo_option", ONE_SECOND_MC)["id"] for _ in range(50)]
    wait_running(client, 1, on="worker2@")
    os.killpg(fragile.pid_of("workers:worker-2"), signal.SIGKILL)
    finals = assert_each_succeeded_once(client, ids)
    assert max(t["attempts"] for t in finals) == 2, "the killed worker was running a task"


def test_redis_restart_with_500_tasks_queued(fragile: LocalStack, client: httpx.Client) -> None:
    fragile.supervisorctl("stop", "workers:*")
    try:
        ids = [submit(client, "loan_amortization", QUICK_LOAN)["id"] for _ in range(500)]
        assert "stopped" in fragile.supervisorctl("stop", "redis").lower()
        refused = client.post(
            "/api/v1/tasks", json={"type": "loan_amortization", "params": QUICK_LOAN}
        )
        assert refused.status_code == 503
        assert "Redis" in refused.json()["detail"]
        assert refused.headers["Retry-After"]
        ready = httpx.get(fragile.url + "/health/ready")
        assert ready.status_code == 503
        assert ready.json()["checks"]["redis"].startswith("unreachable")
        assert ready.json()["checks"]["database"] == "ok"
        # Any endpoint that needs Redis says so (the app's 503, not a bare 500, nor nginx's 502
        # after those 503s had taken every replica out of rotation), and the records stay
        # readable: reading one needs no Redis.
        monitoring = client.get("/api/v1/monitoring/queues")
        assert monitoring.status_code == 503 and monitoring.headers["Retry-After"]
        assert "Redis" in monitoring.json()["detail"]
        for tid in ids[:6]:  # two rounds over the three replicas
            assert client.get(f"/api/v1/tasks/{tid}").json()["status"] == "PENDING"
    finally:
        fragile.supervisorctl("start", "redis")
        fragile.supervisorctl("start", "workers:*")
    wait_until(
        lambda: httpx.get(fragile.url + "/health/ready").status_code == 200,
        30,
        what="readiness after the restart",
    )
    assert_each_succeeded_once(client, ids)
    # The refused submission left nothing behind.
    assert client.get("/api/v1/monitoring/queues").json()["tasks_by_status"]["PENDING"] == 0


def test_cancel_and_retry_under_load(fragile: LocalStack, client: httpx.Client) -> None:
    ids = [submit(client, "monte_carlo_option", ONE_SECOND_MC)["id"] for _ in range(30)]
    wait_running(client, 2)
    cancelled: list[str] = []

    def canceller() -> None:
        for tid in ids[::2]:
            r = client.post(f"/api/v1/tasks/{tid}/cancel")
            if r.status_code in (200, 202):
                cancelled.append(tid)

    t = threading.Thread(target=canceller)
    t.start()
    t.join(60)
    finals = {tid: wait_final(client, tid, timeout=120) for tid in ids}
    assert set(t["status"] for t in finals.values()) <= FINAL
    really = [tid for tid in cancelled if finals[tid]["status"] == "CANCELLED"]
    assert len(really) >= len(ids[::2]) // 2, "most cancels should land before completion"
    for tid in really:
        assert client.post(f"/api/v1/tasks/{tid}/retry").status_code == 202
    for tid in really:
        done = wait_final(client, tid, timeout=120)
        assert done["status"] == "SUCCESS"
    for tid in ids[1::2]:
        assert finals[tid]["status"] == "SUCCESS"
