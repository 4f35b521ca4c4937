"""The batch benchmark's HTTP side: a logged-in client, waiting on a condition, timestamps."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import httpx


def login(url: str, user: str, password: str) -> httpx.Client:
    client = httpx.Client(base_url=url, timeout=120)
    token = client.post("/api/v1/auth/token", data={"username": user, "password": password})
    token.raise_for_status()
    client.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
    return client


def wait(probe: Any, timeout: float = 600, every: float = 0.05) -> Any:
    """The first true value `probe()` returns, asked every `every` seconds until `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError("timed out")


def at(text: str) -> float:
    """An API timestamp (ISO 8601) as epoch seconds."""
    return datetime.fromisoformat(text).timestamp()
