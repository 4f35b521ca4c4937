"""A worker's heartbeat names the finq tasks and the batch chunks its pool is running (the
beat's repair leaves those alone)."""

import weakref
from dataclasses import dataclass, field

import pytest
from celery.worker import state

from finq_worker import heartbeat

BATCH = "11111111-2222-3333-4444-555555555555"


@dataclass(eq=False)
class Request:
    name: str
    args: list[object] = field(default_factory=list)


def test_running_tasks_and_chunks_are_named_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    live = [
        Request("finq.run", ["task-1"]),
        Request("finq.batch_chunk", [BATCH, 7]),
        Request("finq.chart", ["task-2"]),
    ]
    monkeypatch.setattr(state, "active_requests", weakref.WeakSet(live))
    active, tasks, chunks = heartbeat.running()
    assert (active, tasks, chunks) == (3, ["task-1"], [f"{BATCH}:7"])
