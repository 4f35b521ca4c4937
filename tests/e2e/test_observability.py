"""Metrics count exactly what happened, the JSON summary agrees with the database, and one
request id can be followed from nginx through the API to the worker."""

import json
import re
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import LocalStack, start_stack, stop_stack
from tests.e2e.client import login, submit, wait_final
from tests.e2e.tasks import QUICK_LOAN
from tests.helpers import wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    s = start_stack(
        tmp_path_factory.mktemp("obs") / "run",
        "--api-replicas",
        "2",
        "--worker-replicas",
        "2",
        env={"WORKER_CONCURRENCY": "2", "GUNICORN_WORKERS": "2", "RATE_LIMIT_ENABLED": "false"},
    )
    yield s
    stop_stack(s)


def scrape(ports: str) -> str:
    return "\n".join(
        httpx.get(f"http://127.0.0.1:{p}/metrics", timeout=10).text for p in ports.split(",")
    )


def total(text: str, name: str, **labels: str) -> float:
    """Sum of every sample of `name` whose labels include `labels`, across targets."""
    out = 0.0
    for line in text.splitlines():
        m = re.match(rf"^{name}(?:\{{(.*)\}})? (\S+)$", line)
        if not m:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            out += float(m.group(2))
    return out


def test_counts_summary_and_trace(observed: LocalStack) -> None:
    client = login(observed.url, *observed.admin)
    trace = f"trace-{uuid.uuid4().hex}"
    first = client.post(
        "/api/v1/tasks",
        headers={"X-Request-ID": trace},
        json={"type": "loan_amortization", "params": QUICK_LOAN},
    )
    assert first.status_code == 202 and first.headers["X-Request-ID"] == trace
    ok = [first.json()["id"]] + [
        submit(client, "loan_amortization", QUICK_LOAN)["id"] for _ in range(5)
    ]
    later = [
        submit(client, "loan_amortization", QUICK_LOAN, delay_seconds=300)["id"] for _ in range(2)
    ]
    for tid in later:
        assert client.post(f"/api/v1/tasks/{tid}/cancel").status_code == 200
    for tid in ok:
        assert wait_final(client, tid)["status"] == "SUCCESS"

    api = scrape(observed.info["API_PORTS"])
    assert total(api, "finq_tasks_submitted_total", type="loan_amortization") == 8
    assert (
        total(api, "finq_http_requests_total", route="/api/v1/tasks", method="POST", status="202")
        == 8
    )
    assert (
        total(api, "finq_http_request_duration_seconds_count", route="/api/v1/tasks", method="POST")
        == 8
    )

    def worker_counts() -> tuple[float, float]:
        text = scrape(observed.info["WORKER_METRICS_PORTS"])
        return (
            total(text, "finq_tasks_finished_total", status="success"),
            total(text, "finq_tasks_started_total"),
        )

    seen: list[tuple[float, float]] = []

    def settled() -> bool:
        seen.append(worker_counts())
        return seen[-1] == (6, 6)

    # A deadline, not a pause: it ends at the first scrape that shows every count.
    try:
        wait_until(settled, 30, what="worker counters (finished, started) to reach (6, 6)")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last seen {seen[-1] if seen else None}") from None
    workers = scrape(observed.info["WORKER_METRICS_PORTS"])
    assert total(workers, "finq_task_runtime_seconds_count", type="loan_amortization") == 6
    assert total(workers, "finq_worker_pool_slots") == 4
    assert 'finq_queue_depth{queue="high"}' in api
    # Every (type, priority, outcome) series exists from the start at 0: a series born at 3
    # has no rate(), and the first failures of a type would escape the dashboard and alerts.
    zero = [
        line
        for line in workers.splitlines()
        if line.startswith("finq_tasks_finished_total{")
        and 'type="bond_analytics"' in line
        and 'status="failed"' in line
    ]
    replicas = len(observed.info["WORKER_METRICS_PORTS"].split(","))
    assert len(zero) == 3 * replicas and all(line.endswith(" 0.0") for line in zero), zero
    assert 'finq_tasks_submitted_total{priority="low",type="black_scholes"} 0.0' in api

    summary = client.get("/api/v1/monitoring/metrics").json()
    db_success = len(client.get("/api/v1/tasks", params={"status": "SUCCESS"}).json()["items"])
    assert summary["windows"]["15m"]["completed"] == db_success == 6
    assert summary["windows"]["15m"]["cancelled"] == 2
    assert summary["windows"]["15m"]["failed"] == 0
    assert summary["windows"]["15m"]["latency_seconds"]["p50"] is not None
    assert summary["workers"]["online"] == 2 and summary["workers"]["slots"] == 4
    assert set(summary["queues"]) == {"notify", "charts", "high", "normal", "low"}

    # The public port serves no metrics.
    assert httpx.get(observed.url + "/metrics").status_code == 404

    logs = observed.run_dir / "logs"
    nginx_log = (logs / "nginx-access.log").read_text()
    api_logs = "".join(p.read_text() for p in logs.glob("api-*.log"))
    worker_logs = "".join(p.read_text() for p in logs.glob("worker-*.log"))
    assert trace in nginx_log
    assert re.search(rf'"msg": "task submitted", "request_id": "{trace}"', api_logs)
    assert re.search(rf'"msg": "task started", "request_id": "{trace}"', worker_logs)
    done = re.search(
        rf'^.*"msg": "task succeeded", "request_id": "{trace}".*$', worker_logs, re.MULTILINE
    )
    assert done is not None
    # The line says what the run cost in CPU as well as in wall time (docs/operations.md).
    spent = json.loads(done.group(0))
    assert 0 <= spent["cpu_seconds"] <= spent["seconds"] + 0.05, spent
