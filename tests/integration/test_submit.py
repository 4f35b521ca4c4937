"""The submit path against a real database and redis-server (the API app in-process)."""

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from finq_api.main import create_app
from finq_api.security import create_access_token, hash_password
from finq_core import flags, lifecycle
from finq_core.config import get_settings
from finq_core.db import session_scope
from finq_core.models import Role, Task, User

pytestmark = pytest.mark.integration

LOAN = {"type": "loan_amortization", "params": {"principal": 1000, "annual_rate": 0.05, "years": 1}}


@pytest.fixture
def client(redis_server: str, migrated_db: str) -> Iterator[TestClient]:
    name = f"submitter-{uuid.uuid4().hex[:8]}"
    with session_scope() as s:
        user = User(username=name, role=Role.USER.value, password_hash=hash_password("x" * 12))
        s.add(user)
        s.flush()
        user_id = user.id
    token, _ = create_access_token(user_id, 0, get_settings())
    with TestClient(create_app()) as c:
        c.headers["Authorization"] = f"Bearer {token}"
        yield c


def test_a_submission_that_loses_the_race_for_its_key_voids_its_message(
    client: TestClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two submissions with one Idempotency-Key both pass the early look-up; the loser has
    sent its message when the unique key refuses its record. It answers with the winner's
    task, and marks its own message void so that no worker looks for its record."""
    key = f"race-{uuid.uuid4().hex}"
    first = client.post("/api/v1/tasks", json=LOAN, headers={"Idempotency-Key": key})
    assert first.status_code == 202, first.text
    sent: list[str] = []
    real_send = lifecycle._send

    def spy(task: Task) -> bool:
        sent.append(str(task.id))
        return real_send(task)

    look_ups: list[Any] = []
    real_by_key = lifecycle._by_key

    def late(*args: Any) -> Task | None:  # the early look-up misses, as in the race
        look_ups.append(args)
        return None if len(look_ups) == 1 else real_by_key(*args)

    monkeypatch.setattr(lifecycle, "_send", spy)
    monkeypatch.setattr(lifecycle, "_by_key", late)
    second = client.post("/api/v1/tasks", json=LOAN, headers={"Idempotency-Key": key})
    assert second.status_code == 200, second.text
    assert second.json()["id"] == first.json()["id"]
    assert len(sent) == 1 and sent[0] != first.json()["id"]
    assert flags.is_void(sent[0])
    assert not flags.is_void(first.json()["id"])
    with session_scope() as s:
        assert s.get(Task, uuid.UUID(sent[0])) is None
