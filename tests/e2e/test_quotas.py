"""Per-user quotas, the `high` priority right and schedules' minimum interval, through nginx
on a stack of their own with small quotas, a schedule's runs under its owner's quota as the
real beat fires them, and the cap on one user's running tasks as the real workers claim them."""

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.conftest import LocalStack, start_stack, stop_stack
from tests.e2e.client import login, submit, wait_final
from tests.e2e.conftest import new_user
from tests.e2e.tasks import QUICK_LOAN, monte_carlo
from tests.helpers import wait_until

pytestmark = pytest.mark.e2e

QUEUED = 3
SKIPPED = 'finq_schedule_runs_skipped_total{reason="queued_tasks"}'


@pytest.fixture(scope="module")
def tight(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    s = start_stack(
        tmp_path_factory.mktemp("quotas") / "run",
        "--api-replicas",
        "2",
        "--worker-replicas",
        "1",
        env={
            "WORKER_CONCURRENCY": "2",
            "QUOTA_RUNNING_TASKS": "1",
            "GUNICORN_WORKERS": "1",
            "RATE_LIMIT_GLOBAL": "100000/minute",
            "QUOTA_QUEUED_TASKS": str(QUEUED),
            "QUOTA_SCHEDULES": "1",
            "SCHEDULE_MIN_INTERVAL": "2",
            "RUN_AT_MAX_DAYS": "1",
        },
    )
    yield s
    stop_stack(s)


@pytest.fixture(scope="module")
def admin(tight: LocalStack) -> httpx.Client:
    return login(tight.url, *tight.admin)


@pytest.fixture
def user(tight: LocalStack, admin: httpx.Client) -> httpx.Client:
    return login(tight.url, *new_user(admin))


def skipped_runs(stack: LocalStack) -> float:
    """The beat's count of schedule runs skipped over a queued-tasks quota."""
    text = httpx.get(f"http://127.0.0.1:{stack.info['BEAT_METRICS_PORT']}/metrics").text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if SKIPPED in line)


def schedule(client: httpx.Client, cron: str, **extra: Any) -> httpx.Response:
    body = {"name": "q", "cron": cron, "type": "loan_amortization", "params": QUICK_LOAN}
    return client.post("/api/v1/schedules", json={**body, **extra})


def test_high_priority_is_refused_to_a_plain_user_with_403_naming_priority(
    user: httpx.Client, admin: httpx.Client
) -> None:
    task = {"type": "loan_amortization", "params": QUICK_LOAN, "priority": "high"}
    refused = user.post("/api/v1/tasks", json=task)
    assert refused.status_code == 403, refused.text
    assert 'priority "high"' in refused.json()["detail"]
    assert "HIGH_PRIORITY_ROLES" in refused.json()["detail"]
    assert schedule(user, "0 6 * * *", priority="high").status_code == 403
    assert user.get("/api/v1/tasks").json()["items"] == []
    high = submit(admin, "loan_amortization", QUICK_LOAN, priority="high")
    assert wait_final(admin, high["id"])["status"] == "SUCCESS"


def test_the_queued_tasks_quota_answers_429_with_retry_after(user: httpx.Client) -> None:
    waiting = [
        submit(user, "loan_amortization", QUICK_LOAN, delay_seconds=3600)["id"]
        for _ in range(QUEUED)
    ]
    full = user.post("/api/v1/tasks", json={"type": "loan_amortization", "params": QUICK_LOAN})
    assert full.status_code == 429, full.text
    assert f"at most {QUEUED} queued tasks" in full.json()["detail"]
    assert "QUOTA_QUEUED_TASKS" in full.json()["detail"]
    assert int(full.headers["Retry-After"]) > 0
    assert user.post(f"/api/v1/tasks/{waiting[0]}/cancel").status_code == 200
    assert wait_final(user, submit(user, "loan_amortization", QUICK_LOAN)["id"])["status"] == (
        "SUCCESS"
    )
    # delay_seconds lies within RUN_AT_MAX_DAYS (1 here), as run_at does.
    far = user.post(
        "/api/v1/tasks",
        json={"type": "loan_amortization", "params": QUICK_LOAN, "delay_seconds": 86401},
    )
    assert far.status_code == 422 and far.json()["detail"][0]["loc"] == ["body", "delay_seconds"]


def test_schedules_need_the_minimum_interval_and_a_free_quota_slot(user: httpx.Client) -> None:
    often = schedule(user, "* * * * * *")
    assert often.status_code == 422, often.text
    (problem,) = often.json()["detail"]
    assert problem["loc"] == ["body", "cron"] and "SCHEDULE_MIN_INTERVAL" in problem["msg"]
    assert schedule(user, "0 6 * * *").status_code == 201
    full = schedule(user, "0 7 * * *")
    assert full.status_code == 429, full.text
    assert "QUOTA_SCHEDULES" in full.json()["detail"] and "Retry-After" not in full.headers


def test_a_schedules_runs_over_the_owners_quota_are_skipped_and_not_made_up(
    tight: LocalStack, user: httpx.Client
) -> None:
    """The beat skips the runs that do not fit the owner's queued-tasks quota (counted in
    finq_schedule_runs_skipped_total and on the schedule: GET /schedules/{id}) and moves on;
    once there is room the next run is created, and none of the skipped ones."""
    waiting = [
        submit(user, "loan_amortization", QUICK_LOAN, delay_seconds=3600)["id"]
        for _ in range(QUEUED)
    ]
    skipped_before = skipped_runs(tight)
    made = schedule(user, "* * * * * */2")
    assert made.status_code == 201, made.text
    sid, first_due = made.json()["id"], made.json()["next_run_at"]

    def next_run() -> str:
        (s,) = [s for s in user.get("/api/v1/schedules").json() if s["id"] == sid]
        return str(s["next_run_at"])

    # Three runs due and skipped: the schedule moved on past them and made no task.
    wait_until(lambda: next_run() > first_due, 30, 0.2, what="a first run skipped")
    wait_until(
        lambda: skipped_runs(tight) >= skipped_before + 3, 30, 0.2, what="three runs skipped"
    )

    def from_schedule() -> list[dict[str, Any]]:
        items = user.get("/api/v1/tasks", params={"limit": 200}).json()["items"]
        return [
            user.get(f"/api/v1/tasks/{t['id']}").json() for t in items if t["id"] not in waiting
        ]

    assert from_schedule() == []
    assert user.get("/api/v1/schedules").json()[0]["last_run_at"] is None
    # The skipped runs show on the schedule itself, with why.
    seen = user.get(f"/api/v1/schedules/{sid}").json()
    assert seen["skipped_count"] >= 3 and seen["last_skip_reason"] == "queued_tasks"
    assert seen["last_skipped_at"] >= first_due
    freed = user.post(f"/api/v1/tasks/{waiting[0]}/cancel")
    assert freed.status_code == 200
    freed_at = datetime.fromisoformat(freed.json()["finished_at"])
    runs = wait_until(from_schedule, 30, 0.2, what="a run once there is room")
    assert user.delete(f"/api/v1/schedules/{sid}").status_code == 204
    for run in from_schedule():
        assert run["idempotency_key"].startswith(f"schedule:{sid}:")
        # Due at most one period and a beat tick before the room was made: none of the runs
        # skipped earlier (the first was 4 s and more before) was made up.
        assert datetime.fromisoformat(run["scheduled_for"]) >= freed_at - timedelta(seconds=3)
    assert wait_final(user, runs[0]["id"])["status"] == "SUCCESS"


def test_a_users_running_tasks_are_capped_while_others_still_run(
    admin: httpx.Client, tight: LocalStack
) -> None:
    """QUOTA_RUNNING_TASKS=1 with two worker processes: alice's second task waits (PENDING,
    its message says why) until her first ends, then runs as attempt 1; bob's task takes the
    free process meanwhile instead of queueing behind hers."""
    alice = login(tight.url, *new_user(admin))
    bob = login(tight.url, *new_user(admin))
    work = monte_carlo(400_000)  # a few seconds
    first, second = (submit(alice, "monte_carlo_option", work)["id"] for _ in range(2))
    other = submit(bob, "monte_carlo_option", work)["id"]

    def waiting_for_room() -> bool:
        views = [alice.get(f"/api/v1/tasks/{t}").json() for t in (first, second)]
        return any(
            v["status"] == "PENDING" and "QUOTA_RUNNING_TASKS" in (v["progress_message"] or "")
            for v in views
        )

    wait_until(waiting_for_room, 30, 0.05, what="one of alice's tasks held back")
    ran = sorted(
        (wait_final(alice, t, 120) for t in (first, second)), key=lambda t: t["started_at"]
    )
    bobs = wait_final(bob, other, 120)
    assert [t["status"] for t in (*ran, bobs)] == ["SUCCESS"] * 3
    assert [t["attempts"] for t in (*ran, bobs)] == [1, 1, 1]  # the wait burned none
    assert ran[0]["finished_at"] <= ran[1]["started_at"]  # alice's ran one after the other
    assert bobs["started_at"] < ran[1]["started_at"]  # bob was not queued behind her
