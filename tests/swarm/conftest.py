"""Fixtures of the Swarm scenarios (tests/swarm), run by scripts/test-swarm.sh.

The script builds the swarm, deploys the stack and passes everything here through the
environment; without FINQ_SWARM_URL (a plain `pytest` run) every test here is skipped, and
`make test` leaves this folder out (--ignore=tests/swarm). Traffic goes only to the test's
own bridge network (nginx's host-mode port and the manager's engine on the manager node)."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

HERE = Path(__file__).resolve().parent
URL = os.environ.get("FINQ_SWARM_URL", "")
STACK = os.environ.get("FINQ_SWARM_STACK", "finq")
FINAL = {"SUCCESS", "FAILED", "CANCELLED"}
# Above nginx's proxy_read_timeout (20 s) plus a retry: a request nginx had sent to a task on
# a node that then died gets no answer from it (no reset either); nginx retries it on another
# replica once its read times out, and the client must still be waiting then.
CLIENT_TIMEOUT = 60.0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if URL:
        return
    skip = pytest.mark.skip(reason="needs a swarm: run scripts/test-swarm.sh (make test-swarm)")
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(skip)


def swarm(*args: str, timeout: float = 120) -> str:
    """The docker CLI against the manager's engine."""
    env = {**os.environ, "DOCKER_HOST": os.environ["FINQ_SWARM_DOCKER_HOST"]}
    done = subprocess.run(
        ["docker", *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"docker {' '.join(args)}: {done.stderr.strip()}"
    return done.stdout


def host_docker(*args: str, timeout: float = 120) -> str:
    """The docker CLI against this machine's engine (the node containers)."""
    env = {k: v for k, v in os.environ.items() if k != "DOCKER_HOST"}
    done = subprocess.run(
        ["docker", *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"docker {' '.join(args)}: {done.stderr.strip()}"
    return done.stdout


def record_timing(name: str, seconds: float) -> None:
    path = os.environ.get("FINQ_SWARM_TIMINGS")
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(f"{name} {seconds:.0f}s\n")


@dataclass
class Load:
    """Clients sending authenticated GETs through nginx until stopped; every answer that is
    not a 200 and every transport error is a failure, kept with what it was."""

    base_url: str
    headers: dict[str, str]
    clients: int = 4
    pause: float = 0.05
    sent: int = 0
    retried: int = 0  # requests sent again after nginx closed their idle connection
    slow: int = 0  # answers that took over 10 s (nginx waited on a dead replica, then retried)
    failures: list[str] = field(default_factory=list)
    # (monotonic start, seconds taken, problem) of each failure
    failed: list[tuple[float, float, str]] = field(default_factory=list)
    served_by: set[str] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def _run(self) -> None:
        with httpx.Client(
            base_url=self.base_url, timeout=CLIENT_TIMEOUT, headers=self.headers
        ) as c:
            while not self._stop.is_set():
                began = time.monotonic()
                try:
                    try:
                        resp = c.get("/api/v1/tasks", params={"limit": 1})
                    except (httpx.RemoteProtocolError, httpx.ReadError):
                        # A kept-alive connection nginx closed (a reload) as the request went
                        # out, seen as a close or, with the request unread, a reset: retried
                        # once, as HTTP clients may for idempotent requests (RFC 9112 9.3.1).
                        with self._lock:
                            self.retried += 1
                        resp = c.get("/api/v1/tasks", params={"limit": 1})
                    problem = "" if resp.status_code == 200 else f"HTTP {resp.status_code}"
                    replica = resp.headers.get("x-served-by", "")
                except httpx.HTTPError as exc:
                    problem, replica = f"{type(exc).__name__}: {exc}", ""
                with self._lock:
                    self.sent += 1
                    self.slow += time.monotonic() - began > 10
                    if problem:
                        took = time.monotonic() - began
                        self.failures.append(
                            f"{time.strftime('%H:%M:%S')} {problem} ({took:.0f} s)"
                        )
                        self.failed.append((began, took, problem))
                    if replica:
                        self.served_by.add(replica)
                time.sleep(self.pause)

    def __enter__(self) -> Load:
        self._threads = [
            threading.Thread(target=self._run, daemon=True) for _ in range(self.clients)
        ]
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(CLIENT_TIMEOUT + 10)

    def recent_replicas(self, seconds: float) -> set[str]:
        """Replicas that answered in the next SECONDS (a fresh sample)."""
        with self._lock:
            self.served_by = set()
        time.sleep(seconds)
        with self._lock:
            return set(self.served_by)


@pytest.fixture(scope="session")
def base_url() -> str:
    assert URL, "FINQ_SWARM_URL is not set"
    return URL.rstrip("/")


@pytest.fixture(scope="session")
def client(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=CLIENT_TIMEOUT) as c:
        yield c


@pytest.fixture(scope="session")
def deployed() -> float:
    """Seconds until every service of the stack ran as deployed (migrate: complete)."""
    return wait_converged(420)


@pytest.fixture(scope="session")
def auth_headers(client: httpx.Client, deployed: float) -> dict[str, str]:
    password = os.environ["FINQ_SWARM_ADMIN_PASSWORD"]
    deadline = time.monotonic() + 120
    while True:  # nginx may still be finding the replicas
        try:
            resp = client.post(
                "/api/v1/auth/token", data={"username": "admin", "password": password}
            )
            if resp.status_code == 200 or time.monotonic() > deadline:
                break
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
        time.sleep(1)
    assert resp.status_code == 200, f"{resp.status_code} {resp.text[:300]}"
    return {"Authorization": f"Bearer {resp.json()['access_token']}"}


def submit(client: httpx.Client, headers: dict[str, str], body: dict[str, Any]) -> str:
    resp = client.post("/api/v1/tasks", json=body, headers=headers)
    assert resp.status_code == 202, f"{resp.status_code} {resp.text[:300]}"
    return str(resp.json()["id"])


def wait_final(
    client: httpx.Client, headers: dict[str, str], ids: list[str], timeout: float
) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    tasks: dict[str, dict[str, Any]] = {}
    pending = list(ids)
    while pending and time.monotonic() < deadline:
        for task_id in list(pending):
            resp = client.get(f"/api/v1/tasks/{task_id}", headers=headers)
            if resp.status_code == 200:
                tasks[task_id] = resp.json()
                if tasks[task_id]["status"] in FINAL:
                    pending.remove(task_id)
        if pending:
            time.sleep(1)
    assert not pending, f"{len(pending)} tasks not final after {timeout}s: " + ", ".join(
        f"{t}={tasks.get(t, {}).get('status')}" for t in pending[:5]
    )
    return tasks


def down_nodes() -> set[str]:
    out = swarm("node", "ls", "--format", "{{.Hostname}} {{.Status}}")
    return {line.split()[0] for line in out.splitlines() if line.split()[1:] != ["Ready"]}


def service_tasks(service: str) -> list[dict[str, str]]:
    """The service's tasks meant to run on a live node: node, current state, image. (Tasks on
    a node that went down stay "Running" in Swarm's books until the node comes back.)"""
    out = swarm(
        "service",
        "ps",
        f"{STACK}_{service}",
        "--filter",
        "desired-state=running",
        "--format",
        "{{.Node}}\t{{.CurrentState}}\t{{.Image}}",
    )
    down = down_nodes()
    rows = [line.split("\t") for line in out.splitlines() if line.strip()]
    return [{"node": r[0], "state": r[1], "image": r[2]} for r in rows if r[0] not in down]


def converged(only: set[str] | None = None) -> list[str]:
    """What is not yet as deployed: every replica running on a live node (migrate: done);
    ONLY: these services alone."""
    out = swarm(
        "service",
        "ls",
        "--filter",
        f"label=com.docker.stack.namespace={STACK}",
        "--format",
        "{{.Name}}\t{{.Replicas}}",
    )
    problems = []
    for line in out.splitlines():
        name, replicas = line.split("\t")
        wanted = int(replicas.split(" ")[0].partition("/")[2])
        service = name.removeprefix(f"{STACK}_")
        if only is not None and service not in only:
            continue
        if service == "migrate":
            done = swarm("service", "ps", name, "--format", "{{.CurrentState}}")
            if not any(s.startswith("Complete") for s in done.splitlines()):
                problems.append(f"{name}: not complete ({done.splitlines()[:1]})")
            continue
        running = sum(t["state"].startswith("Running") for t in service_tasks(service))
        if running != wanted:
            problems.append(f"{name}: {running} of {wanted} running")
    return problems


def wait_converged(timeout: float, only: set[str] | None = None) -> float:
    started = time.monotonic()
    problems: list[str] = ["not checked"]
    while time.monotonic() - started < timeout:
        problems = converged(only)
        if not problems:
            return time.monotonic() - started
        time.sleep(2)
    raise AssertionError(f"not converged within {timeout}s: {problems}")
