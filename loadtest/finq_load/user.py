"""The simulated user: submit one task of the mix, follow it to its end, repeat."""

from __future__ import annotations

import json
import logging
import random
import time
from typing import Any

import gevent
from locust import FastHttpUser, constant, task

from .accounts import ACCOUNTS
from .mix import request_params
from .state import RUN, TaskFailed

FINAL = frozenset({"SUCCESS", "FAILED", "CANCELLED"})
log = logging.getLogger("finq.loadtest")


class FinqUser(FastHttpUser):
    """Submit one task of the mix, follow it to its end, repeat (no think time)."""

    wait_time = constant(0)
    connection_timeout = 10.0
    network_timeout = 90.0  # SSE sends a heartbeat every 15 s while a task runs

    def on_start(self) -> None:
        self.account = ACCOUNTS.pick()
        self.client.auth_header = f"Bearer {self._account_token()}"

    @task
    def submit_and_follow(self) -> None:
        entry = random.choices(RUN.state.mix, weights=RUN.state.weights)[0]
        body = {"type": entry.type, "params": request_params(entry), "priority": "normal"}
        submitted_at = time.time()
        t0 = time.perf_counter()
        with self.client.post(
            "/api/v1/tasks", json=body, name="POST /api/v1/tasks", catch_response=True
        ) as resp:
            if resp.status_code == 202:
                task_id = str(resp.json()["id"])
            else:
                resp.failure(f"{resp.status_code}: {(resp.text or '')[:200]}")
                self._rejected(resp.status_code, resp.headers or {})
                return
        if RUN.state.first_submit is None:
            RUN.state.first_submit = submitted_at
        RUN.state.submitted += 1
        RUN.state.outstanding[task_id] = (entry.type, submitted_at, t0)
        deadline = time.monotonic() + self.environment.parsed_options.finq_task_timeout
        status: str | None = None
        if self.environment.parsed_options.finq_follow == "sse":
            status = self._follow_sse(task_id, deadline)
        if status is None:
            status = self._follow_poll(task_id, deadline)
        if status is None:
            return  # still outstanding: counted as lost when the test ends
        elapsed_ms = (time.perf_counter() - t0) * 1000.0
        del RUN.state.outstanding[task_id]
        exception: Exception | None = None
        if status == "SUCCESS":
            RUN.state.done.append((entry.type, time.time(), elapsed_ms))
        else:
            reason = f"{status}: {self._error_of(task_id)}"
            RUN.state.failed.append((entry.type, reason))
            exception = TaskFailed(f"{entry.type} {task_id} {reason}")
        self.environment.events.request.fire(
            request_type="TASK",
            name=f"{entry.type} done",
            response_time=elapsed_ms,
            response_length=0,
            exception=exception,
            context={"task_id": task_id},
        )

    def _rejected(self, status_code: int, headers: Any) -> None:
        RUN.state.rejected[str(status_code)] = RUN.state.rejected.get(str(status_code), 0) + 1
        if status_code == 401:
            self.client.auth_header = f"Bearer {self._account_token(stale=self._token())}"
        elif status_code in (429, 503):
            gevent.sleep(min(float(headers.get("Retry-After") or 1), 10.0))

    def _account_token(self, stale: str | None = None) -> str:
        return ACCOUNTS.token(self.host or FinqUser.host or "", self.account, stale)

    def _token(self) -> str:
        return (self.client.auth_header or "").removeprefix("Bearer ")

    def _follow_sse(self, task_id: str, deadline: float) -> str | None:
        """Read `event: task` frames until the stream ends; the server ends it right after a
        final status. None when the stream broke first (then we poll)."""
        status: str | None = None
        try:
            for line in self.client.iter_lines(
                f"/api/v1/tasks/{task_id}/events",
                name="GET /api/v1/tasks/[id]/events",
                headers={"Accept": "text/event-stream"},
            ):
                if line.startswith("data:"):
                    status = json.loads(line[5:]).get("status", status)
                if time.monotonic() > deadline:
                    return None
        except Exception as exc:  # a broken stream, a 5xx: fall back to polling
            log.debug("SSE of %s broke: %r", task_id, exc)
            return None
        return status if status in FINAL else None

    def _follow_poll(self, task_id: str, deadline: float) -> str | None:
        """GET the record with exponential backoff (50 ms x 1.5, at most 2 s)."""
        delay = 0.05
        while time.monotonic() < deadline:
            with self.client.get(
                f"/api/v1/tasks/{task_id}", name="GET /api/v1/tasks/[id]", catch_response=True
            ) as resp:
                if resp.status_code == 200:
                    status = resp.json().get("status")
                    if status in FINAL:
                        return str(status)
                elif resp.status_code == 401:
                    resp.failure("401")
                    self.client.auth_header = f"Bearer {self._account_token(stale=self._token())}"
                else:
                    resp.failure(f"{resp.status_code}")
            gevent.sleep(delay)
            delay = min(delay * 1.5, 2.0)
        return None

    def _error_of(self, task_id: str) -> str:
        with self.client.get(
            f"/api/v1/tasks/{task_id}", name="GET /api/v1/tasks/[id]", catch_response=True
        ) as resp:
            if resp.status_code != 200:
                resp.failure(f"{resp.status_code}")
                return "(record unavailable)"
            error = resp.json().get("error") or {}
            return f"{error.get('type', '?')}: {error.get('message', '')}"[:300]
