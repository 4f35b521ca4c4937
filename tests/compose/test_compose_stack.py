"""Smoke tests of the compose stack through nginx (scripts/test-compose.sh runs them after
scaling fastapi-app and celery-worker to FINQ_COMPOSE_*_REPLICAS). Every loop is bounded by a
count and a deadline. The replica-killing test runs last: it leaves one API replica dead."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

TASK = {
    "type": "loan_amortization",
    "params": {"principal": 10000, "annual_rate": 0.05, "years": 30},
}
FINAL = {"SUCCESS", "FAILED", "CANCELLED"}


def docker(*args: str, timeout: float = 30) -> str:
    done = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=True
    )
    return done.stdout


def service_containers(project: str, service: str) -> list[str]:
    """Ids of the running containers of one service of this project."""
    out = docker(
        "ps",
        "-q",
        "--no-trunc",
        "--filter",
        f"label=com.docker.compose.project={project}",
        "--filter",
        f"label=com.docker.compose.service={service}",
    )
    return out.split()


def test_nginx_answers_its_own_health(client: httpx.Client) -> None:
    resp = client.get("/nginx-health")
    assert resp.status_code == 200
    assert resp.text.strip() == "ok"


def test_api_health_through_nginx(client: httpx.Client) -> None:
    alive = client.get("/health")
    assert alive.status_code == 200, alive.text
    assert alive.json()["status"] == "ok"
    ready = client.get("/health/ready")
    assert ready.status_code == 200, ready.text
    body = ready.json()
    assert body["status"] == "ok", body
    assert set(body.get("checks", {}).values()) <= {"ok"}, body


def test_loan_amortization_task_runs_to_success(
    client: httpx.Client, auth_headers: dict[str, str]
) -> None:
    resp = client.post("/api/v1/tasks", json=TASK, headers=auth_headers)
    assert resp.status_code == 202, f"{resp.status_code} {resp.text[:500]}"
    task_id = resp.json()["id"]

    deadline = time.monotonic() + 120
    task: dict[str, Any] = {}
    while time.monotonic() < deadline:
        poll = client.get(f"/api/v1/tasks/{task_id}", headers=auth_headers)
        assert poll.status_code == 200, f"{poll.status_code} {poll.text[:500]}"
        task = poll.json()
        if task["status"] in FINAL:
            break
        time.sleep(0.5)
    assert task.get("status") == "SUCCESS", f"task did not succeed within 120 s: {task}"
    assert task.get("result"), task
    assert task.get("worker"), "the record names the worker that ran it"


def test_flower_through_nginx_needs_the_password(
    client: httpx.Client, flower_auth: tuple[str, str]
) -> None:
    anonymous = client.get("/flower/")
    assert anonymous.status_code == 401, anonymous.status_code
    wrong = client.get("/flower/", auth=(flower_auth[0], "not-the-password"))
    assert wrong.status_code == 401, wrong.status_code
    authed = client.get("/flower/", auth=flower_auth, follow_redirects=True)
    assert authed.status_code == 200, authed.status_code


def test_flower_metrics_are_not_served_by_nginx(
    client: httpx.Client, flower_auth: tuple[str, str]
) -> None:
    for auth in (None, flower_auth):
        resp = client.get("/flower/metrics", auth=auth)
        assert resp.status_code == 404, resp.status_code
        assert "flower_" not in resp.text


def test_every_api_replica_serves_traffic(
    client: httpx.Client, project: str, api_replicas: int
) -> None:
    """nginx spreads requests over all replicas, including those added by --scale.

    The API names the replica in X-Served-By (its hostname, the container's short id); the
    body of /health repeats it as "replica"."""
    containers = service_containers(project, "fastapi-app")
    assert len(containers) == api_replicas, containers
    seen: set[str] = set()
    deadline = time.monotonic() + 60
    for _ in range(400):
        if len(seen) >= api_replicas or time.monotonic() > deadline:
            break
        resp = client.get("/health")
        assert resp.status_code == 200
        seen.add(resp.headers.get("x-served-by") or resp.json().get("replica", ""))
    seen.discard("")
    assert len(seen) == api_replicas, f"{len(seen)} distinct replicas answered: {sorted(seen)}"
    assert {c[:12] for c in containers} == seen, "X-Served-By names the replicas' containers"


def test_every_worker_is_visible_in_flower(
    client: httpx.Client, flower_auth: tuple[str, str], worker_replicas: int, project: str
) -> None:
    containers = service_containers(project, "celery-worker")
    assert len(containers) == worker_replicas, containers
    expected = {f"worker@{c[:12]}" for c in containers}
    names: set[str] = set()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        resp = client.get(
            "/flower/api/workers", params={"refresh": "1"}, auth=flower_auth, timeout=30
        )
        assert resp.status_code == 200, resp.status_code
        names = {name for name, info in resp.json().items() if info}
        if expected <= names:
            break
        time.sleep(1)
    assert expected <= names, f"Flower sees {sorted(names)}; expected {sorted(expected)}"


def test_flower_is_published_on_loopback_only(project: str, flower_auth: tuple[str, str]) -> None:
    (container,) = service_containers(project, "flower")
    bindings = docker("port", container, "5555/tcp").split()
    assert bindings and all(b.startswith("127.0.0.1:") for b in bindings), bindings
    direct = os.environ.get("FINQ_COMPOSE_FLOWER_URL", "")
    if direct:
        assert urlsplit(direct).hostname == "127.0.0.1"
        assert httpx.get(f"{direct}/", timeout=10).status_code == 401
        assert httpx.get(f"{direct}/", auth=flower_auth, timeout=10).status_code == 200


@pytest.mark.parametrize("total, clients, pause", [(300, 3, 0.02)])
def test_killing_an_api_replica_fails_no_request(
    base_url: str, project: str, total: int, clients: int, pause: float
) -> None:
    """`docker kill` one replica while `clients` clients send `total` GETs through nginx.

    Each client pauses `pause` seconds between requests, so the 300 requests take a few
    seconds and a good share of them is sent after the kill has landed."""
    victims = service_containers(project, "fastapi-app")
    assert len(victims) >= 2, "needs a second replica to fail over to"
    victim = victims[0]

    per_client = total // clients
    done = 0
    failures: list[str] = []
    served_by: set[str] = set()
    lock = threading.Lock()
    deadline = time.monotonic() + 180

    def run() -> None:
        nonlocal done
        with httpx.Client(base_url=base_url, timeout=30.0) as c:
            for _ in range(per_client):
                if time.monotonic() > deadline:
                    with lock:
                        failures.append("deadline passed")
                    return
                try:
                    resp = c.get("/health")
                    ok = resp.status_code == 200
                    problem = f"HTTP {resp.status_code}"
                except httpx.HTTPError as exc:
                    resp, ok, problem = None, False, f"{type(exc).__name__}: {exc}"
                with lock:
                    done += 1
                    if not ok:
                        failures.append(problem)
                    elif resp is not None:
                        served_by.add(resp.headers.get("x-served-by", ""))
                time.sleep(pause)

    threads = [threading.Thread(target=run, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    # Kill once a sixth of the requests are through.
    while time.monotonic() < deadline:
        with lock:
            if done >= total // 6:
                break
        time.sleep(0.005)
    docker("kill", victim)
    with lock:
        after_kill = total - done
        served_by.clear()
    for t in threads:
        t.join(timeout=max(1.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "clients did not finish before the deadline"
    assert done == per_client * clients
    assert failures == [], f"{len(failures)} of {done} requests failed: {failures[:5]}"
    assert after_kill >= total // 4, f"only {after_kill} requests were sent after the kill"
    # Replicas answered after the kill, the killed one among them only if a request was
    # already in its hands (then nginx had it retried elsewhere, or it completed).
    assert served_by - {""}, "no replica answered after the kill"
