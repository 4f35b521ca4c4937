"""Locust batch scenario: users that each submit a batch of one-year loans, follow it to its end
(polling every 0.5 s, as `finq batch` does) and submit the next.

    .venv/bin/locust -f loadtest/batchfile.py --headless --users 2 --run-time 60s

Account: FINQ_USERNAME/FINQ_PASSWORD, else the running stack's admin ($RUN_DIR/stack.json);
host: --host, else that stack's port on 127.0.0.1. LOADTEST_BATCH_ITEMS (1000) items per
batch. Each batch is reported as a request named "batch done" (its time: POST to the end) and
one "items" per item ended, so Locust's RPS of "items" is the items/s the stack sustains.
"""

import os
import time

import gevent
from finq_load.accounts import login
from finq_load.target import is_loopback, stack_info
from locust import FastHttpUser, constant, task

FINAL = frozenset({"SUCCESS", "FAILED", "CANCELLED"})
ITEMS = int(os.environ.get("LOADTEST_BATCH_ITEMS", "1000"))
POLL_SECONDS = 0.5


class BatchUser(FastHttpUser):
    wait_time = constant(0)
    network_timeout = 120.0

    def on_start(self) -> None:
        info = stack_info()
        host = self.host or f"http://127.0.0.1:{info.get('HTTP_PORT', '8080')}"
        if not is_loopback(host) and os.environ.get("FINQ_ALLOW_REMOTE") != "1":
            raise SystemExit(f"refusing to load {host}: only 127.0.0.1")
        name = os.environ.get("FINQ_USERNAME") or info.get("ADMIN_USERNAME", "admin")
        password = os.environ.get("FINQ_PASSWORD") or info.get("ADMIN_PASSWORD", "")
        self.client.auth_header = f"Bearer {login(host, name, password)}"

    @task
    def batch_of_loans(self) -> None:
        body = {
            "type": "loan_amortization",
            "base": {"annual_rate": 0.05, "years": 1},
            "vary": {"principal": [1000 + i for i in range(ITEMS)]},
        }
        started = time.perf_counter()
        with self.client.post(
            "/api/v1/batches", json=body, name="POST /api/v1/batches", catch_response=True
        ) as resp:
            if resp.status_code != 202:
                resp.failure(f"{resp.status_code}: {(resp.text or '')[:200]}")
                gevent.sleep(1.0)
                return
            batch_id = resp.json()["id"]
        status = "PENDING"
        while status not in FINAL:
            gevent.sleep(POLL_SECONDS)
            resp = self.client.get(f"/api/v1/batches/{batch_id}", name="GET /api/v1/batches/[id]")
            if resp.status_code == 200:
                status = resp.json()["status"]
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        failed = None if status == "SUCCESS" else RuntimeError(f"batch {batch_id} {status}")
        events = self.environment.events.request
        events.fire(
            request_type="BATCH",
            name="batch done",
            response_time=elapsed_ms,
            response_length=ITEMS,
            exception=failed,
            context={},
        )
        for _ in range(ITEMS):
            events.fire(
                request_type="BATCH",
                name="items",
                response_time=elapsed_ms / ITEMS,
                response_length=0,
                exception=None,
                context={},
            )
