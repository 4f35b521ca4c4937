"""An authenticated HTTP client for the end-to-end tests (all traffic goes to 127.0.0.1)."""

from typing import Any

import httpx

from tests.helpers import wait_until

FINAL = {"SUCCESS", "FAILED", "CANCELLED"}


def login(base_url: str, username: str, password: str) -> httpx.Client:
    client = httpx.Client(base_url=base_url, timeout=30)
    resp = client.post("/api/v1/auth/token", data={"username": username, "password": password})
    assert resp.status_code == 200, resp.text
    client.headers["Authorization"] = f"Bearer {resp.json()['access_token']}"
    return client


def submit(
    client: httpx.Client, type_: str, params: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    resp = client.post("/api/v1/tasks", json={"type": type_, "params": params, **extra})
    assert resp.status_code == 202, resp.text
    body: dict[str, Any] = resp.json()
    return body


def wait_final(client: httpx.Client, task_id: str, timeout: float = 60) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        body: dict[str, Any] = client.get(f"/api/v1/tasks/{task_id}").json()
        return body if body["status"] in FINAL else None

    return wait_until(probe, timeout, 0.05, what=f"task {task_id} to finish")


def wait_running(client: httpx.Client, task_id: str, timeout: float = 60) -> dict[str, Any]:
    """Wait for RUNNING; fail at once, naming the status, if the task ended unseen."""

    def probe() -> dict[str, Any] | None:
        body: dict[str, Any] = client.get(f"/api/v1/tasks/{task_id}").json()
        return body if body["status"] in FINAL | {"RUNNING"} else None

    body = wait_until(probe, timeout, 0.05, what=f"task {task_id} to run")
    assert body["status"] == "RUNNING", f"task {task_id} ended {body['status']} unseen"
    return body
