"""The task lifecycle through nginx on the real local stack: every endpoint, every rule."""

import itertools
import threading
import time
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.conftest import LocalStack
from tests.e2e.client import login, submit, wait_final
from tests.e2e.tasks import ENDLESS_MC, QUICK_LOAN, monte_carlo
from tests.helpers import wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def admin(stack: LocalStack) -> httpx.Client:
    return login(stack.url, *stack.admin)


def history(client: httpx.Client, task_id: str) -> list[str]:
    return [e["status"] for e in client.get(f"/api/v1/tasks/{task_id}/history").json()]


def wait_status(
    client: httpx.Client, task_id: str, status: str, timeout: float = 60
) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        body: dict[str, Any] = client.get(f"/api/v1/tasks/{task_id}").json()
        return body if body["status"] == status else None

    return wait_until(probe, timeout, 0.05, what=f"{task_id} to be {status}")


def test_idempotency_key_under_20_concurrent_requests(admin: httpx.Client) -> None:
    key = f"idem-{time.time_ns()}"
    results: list[httpx.Response] = []
    barrier = threading.Barrier(20)

    def send() -> None:
        with httpx.Client(base_url=str(admin.base_url), headers=admin.headers, timeout=30) as c:
            barrier.wait()
            results.append(
                c.post(
                    "/api/v1/tasks",
                    headers={"Idempotency-Key": key},
                    json={"type": "loan_amortization", "params": QUICK_LOAN},
                )
            )

    threads = [threading.Thread(target=send) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    codes = sorted(r.status_code for r in results)
    assert codes == [200] * 19 + [202], codes
    assert len({r.json()["id"] for r in results}) == 1
    task_id = results[0].json()["id"]
    done = wait_final(admin, task_id)
    assert done["status"] == "SUCCESS" and done["attempts"] == 1
    assert history(admin, task_id).count("RUNNING") == 1


def test_cancel_a_pending_task_it_never_runs(admin: httpx.Client) -> None:
    task = submit(admin, "loan_amortization", QUICK_LOAN, delay_seconds=2)
    assert task["scheduled_for"] is not None
    resp = admin.post(f"/api/v1/tasks/{task['id']}/cancel")
    assert resp.status_code == 200 and resp.json()["status"] == "CANCELLED"
    # Past its due time plus two dispatcher ticks: still cancelled, never started.
    probe = httpx.Client(base_url=str(admin.base_url), headers=admin.headers)
    marker = submit(admin, "loan_amortization", QUICK_LOAN, delay_seconds=3)
    wait_final(probe, marker["id"])  # the dispatcher has passed the cancelled one's time
    body = admin.get(f"/api/v1/tasks/{task['id']}").json()
    assert body["status"] == "CANCELLED" and body["started_at"] is None
    assert history(admin, task["id"]) == ["PENDING", "CANCELLED"]


def test_cancel_a_running_task_stops_within_a_chunk(admin: httpx.Client) -> None:
    task = submit(admin, "monte_carlo_option", ENDLESS_MC)
    wait_until(
        lambda: admin.get(f"/api/v1/tasks/{task['id']}").json()["progress"] > 0,
        60,
        0.05,
        what="progress",
    )
    asked = time.monotonic()
    resp = admin.post(f"/api/v1/tasks/{task['id']}/cancel")
    assert resp.status_code in (200, 202)
    done = wait_final(admin, task["id"], timeout=10)
    took = time.monotonic() - asked
    assert done["status"] == "CANCELLED"
    assert took < 2.0, f"cancel took {took:.2f}s"
    assert done["progress"] < 1.0
    assert admin.post(f"/api/v1/tasks/{task['id']}/cancel").status_code == 409


def test_retry_a_cancelled_task_runs_it(admin: httpx.Client) -> None:
    task = submit(admin, "loan_amortization", QUICK_LOAN, delay_seconds=30)
    admin.post(f"/api/v1/tasks/{task['id']}/cancel")
    resp = admin.post(f"/api/v1/tasks/{task['id']}/retry")
    assert resp.status_code == 202
    assert resp.json()["status"] == "PENDING" and resp.json()["attempts"] == 1
    done = wait_final(admin, task["id"])
    assert done["status"] == "SUCCESS" and done["attempts"] == 1
    assert history(admin, task["id"]) == ["PENDING", "CANCELLED", "PENDING", "RUNNING", "SUCCESS"]
    assert admin.post(f"/api/v1/tasks/{task['id']}/retry").status_code == 409


def test_time_limit_fails_the_task_and_retry_gives_it_another_attempt(
    admin: httpx.Client,
) -> None:
    task = submit(admin, "monte_carlo_option", ENDLESS_MC)
    failed = wait_final(admin, task["id"], timeout=60)
    assert failed["status"] == "FAILED"
    assert "timed out" in failed["error"]["message"]
    again = admin.post(f"/api/v1/tasks/{task['id']}/retry")
    assert again.status_code == 202 and again.json()["attempts"] == 2
    admin.post(f"/api/v1/tasks/{task['id']}/cancel")
    assert wait_final(admin, task["id"])["status"] == "CANCELLED"


def test_delete_only_finished_tasks(admin: httpx.Client) -> None:
    pending = submit(admin, "loan_amortization", QUICK_LOAN, delay_seconds=60)
    assert admin.delete(f"/api/v1/tasks/{pending['id']}").status_code == 409
    admin.post(f"/api/v1/tasks/{pending['id']}/cancel")
    assert admin.delete(f"/api/v1/tasks/{pending['id']}").status_code == 204
    assert admin.get(f"/api/v1/tasks/{pending['id']}").status_code == 404


def test_listing_filters_and_cursor_pagination(stack: LocalStack, admin: httpx.Client) -> None:
    name = f"lister{time.time_ns() % 10**8}"
    assert (
        admin.post("/api/v1/users", json={"username": name, "password": "p" * 16}).status_code
        == 201
    )
    user = login(stack.url, name, "p" * 16)
    made = [submit(user, "loan_amortization", QUICK_LOAN)["id"] for _ in range(5)]
    made.append(submit(user, "loan_amortization", QUICK_LOAN, delay_seconds=300)["id"])
    for tid in made[:5]:
        wait_final(user, tid)
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = user.get("/api/v1/tasks", params=params).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == list(reversed(made))  # newest first, each exactly once
    success = user.get("/api/v1/tasks", params={"status": "SUCCESS"}).json()["items"]
    assert {i["id"] for i in success} == set(made[:5])
    created = [datetime.fromisoformat(i["created_at"]) for i in success]
    assert user.get("/api/v1/tasks", params={"type": "black_scholes"}).json()["items"] == []
    middle = sorted(created)[2].isoformat()
    newer = user.get("/api/v1/tasks", params={"created_after": middle}).json()["items"]
    assert len(newer) == 3  # two successes after the middle one, and the pending task
    assert user.get("/api/v1/tasks", params={"cursor": "garbage"}).status_code == 422
    assert user.get("/api/v1/tasks", params={"limit": 201}).status_code == 422


def test_events_stream_status_and_progress(stack: LocalStack, admin: httpx.Client) -> None:
    # Progress is written at most every PROGRESS_INTERVAL_SECONDS (0.25 s) and not at all for
    # a task shorter than that: this one runs ~1 s on a fast core, several intervals.
    task = submit(admin, "monte_carlo_option", monte_carlo(600_000))
    frames: list[dict[str, Any]] = []
    import json

    with admin.stream("GET", f"/api/v1/tasks/{task['id']}/events", timeout=60) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        for line in resp.iter_lines():
            if line.startswith("data: "):
                frames.append(json.loads(line[6:]))
    statuses = [f["status"] for f in frames]
    assert statuses[-1] == "SUCCESS"
    assert "RUNNING" in statuses
    progress = [f["progress"] for f in frames if f["status"] == "RUNNING"]
    assert progress == sorted(progress) and len(progress) >= 2
    # EventSource cannot send headers: it opens a stream with a single-use ticket instead.
    ticket = admin.post(f"/api/v1/tasks/{task['id']}/events/ticket").json()["ticket"]
    with httpx.stream(
        "GET",
        f"{stack.url}/api/v1/tasks/{task['id']}/events",
        params={"ticket": ticket},
        timeout=30,
    ) as resp:
        assert resp.status_code == 200
    assert httpx.get(f"{stack.url}/api/v1/tasks/{task['id']}/events").status_code == 401


def test_monitoring_queues(admin: httpx.Client) -> None:
    body = admin.get("/api/v1/monitoring/queues").json()
    assert set(body["queues"]) == {"notify", "charts", "high", "normal", "low"}
    assert body["workers_online"] == 2
    assert body["tasks_by_status"]["SUCCESS"] >= 1


def test_high_priority_overtakes_queued_normal_tasks(
    stack: LocalStack, admin: httpx.Client
) -> None:
    """With the workers stopped, 300 normal tasks are queued, then one high task; once the
    workers are back the high one starts before all of them but those already reserved."""
    stack.supervisorctl("stop", "workers:*")
    try:
        normals = [submit(admin, "loan_amortization", QUICK_LOAN)["id"] for _ in range(300)]
        high = submit(admin, "loan_amortization", QUICK_LOAN, priority="high")["id"]
        low = submit(admin, "loan_amortization", QUICK_LOAN, priority="low")["id"]
    finally:
        stack.supervisorctl("start", "workers:*")
    for tid in [*normals, high, low]:
        assert wait_final(admin, tid, timeout=120)["status"] == "SUCCESS"

    def started(tid: str) -> datetime:
        return datetime.fromisoformat(admin.get(f"/api/v1/tasks/{tid}").json()["started_at"])

    high_at = started(high)
    normal_at = [started(t) for t in normals]
    assert sum(t < high_at for t in normal_at) <= 4  # at most one reserved per process
    # The low task leaves its queue after every normal one; a normal message that another
    # process took just before may still be claimed (started) a moment after it.
    low_at = started(low)
    assert sum(t > low_at for t in normal_at) <= 3


def test_schedule_fires_on_time_and_survives_a_beat_restart(
    stack: LocalStack, admin: httpx.Client
) -> None:
    resp = admin.post(
        "/api/v1/schedules",
        json={
            "name": "every-2s",
            "cron": "* * * * * */2",
            "type": "loan_amortization",
            "params": QUICK_LOAN,
        },
    )
    assert resp.status_code == 201
    schedule = resp.json()
    assert schedule["id"] in {s["id"] for s in admin.get("/api/v1/schedules").json()}

    def runs() -> list[dict[str, Any]]:
        items = admin.get("/api/v1/tasks", params={"limit": 200}).json()["items"]
        full = [admin.get(f"/api/v1/tasks/{i['id']}").json() for i in items]
        return [
            t
            for t in full
            if (t["idempotency_key"] or "").startswith(f"schedule:{schedule['id']}:")
        ]

    wait_until(lambda: len(runs()) >= 2, 30, 0.5, what="two scheduled runs")
    stack.supervisorctl("restart", "beat")
    wait_until(lambda: len(runs()) >= 5, 40, 0.5, what="runs after the beat restart")
    assert admin.delete(f"/api/v1/schedules/{schedule['id']}").status_code == 204
    due = sorted(datetime.fromisoformat(t["idempotency_key"].split(":", 2)[2]) for t in runs())
    gaps = {(b - a).total_seconds() for a, b in itertools.pairwise(due)}
    assert len(due) == len(set(due)), "a run was fired twice"
    assert gaps == {2.0}, f"a run was skipped: gaps {sorted(gaps)}"
    for t in runs():
        assert wait_final(admin, t["id"])["status"] == "SUCCESS"


def test_schedule_validation(admin: httpx.Client) -> None:
    bad = admin.post(
        "/api/v1/schedules",
        json={"name": "x", "cron": "61 * * * *", "type": "loan_amortization", "params": QUICK_LOAN},
    )
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "cron"]
    bad = admin.post(
        "/api/v1/schedules",
        json={
            "name": "x",
            "cron": "* * * * *",
            "type": "loan_amortization",
            "params": {"principal": -1},
        },
    )
    assert bad.status_code == 422
    assert ["body", "params", "principal"] in [e["loc"] for e in bad.json()["detail"]]
