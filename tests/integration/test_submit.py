"""The submit path against a real database and redis-server (the API app in-process)."""

import uuid
from collections.abc import Iterator
from typing import Any

import anyio.to_thread
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from finq_api.main import create_app
from finq_api.security import create_access_token, decode_access_token, hash_password
from finq_core import flags, lifecycle
from finq_core.config import get_settings
from finq_core.db import session_scope
from finq_core.models import Role, Task, User
from finq_core.timeutil import utcnow

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


def test_a_submit_and_a_status_poll_make_one_trip_to_the_thread_pool_each(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each trip is a wake-up and a GIL hand-over. The two busiest routes read the caller,
    count the submit limit and encode the answer in their endpoint's thread; only the global
    rate limit (Redis) has a trip of its own. The history still makes one for its caller's
    dependency and one for its response model."""
    trips: list[str] = []
    real = anyio.to_thread.run_sync

    async def counted(func: Any, *args: Any, **kwargs: Any) -> Any:
        named = getattr(func, "func", func)  # functools.partial
        trips.append(getattr(named, "__name__", type(named).__name__))
        return await real(func, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counted)
    submitted = client.post("/api/v1/tasks", json=LOAN)
    assert submitted.status_code == 202, submitted.text
    assert trips[0] == "check"
    assert len(trips) == 2, trips  # the global limit, then the endpoint: nothing else
    for path in (submitted.headers["Location"], submitted.headers["Location"] + "?include="):
        trips.clear()
        assert client.get(path).status_code == 200
        assert len(trips) == 2, trips
    trips.clear()
    assert client.get(submitted.headers["Location"] + "/history").status_code == 200
    assert trips[:2] == ["check", "get_current_user"]
    assert len(trips) == 4, trips  # ... then the endpoint, then its response model


def test_a_submit_with_the_token_of_a_deleted_account_is_refused(client: TestClient) -> None:
    """The caller is read in the endpoint's thread: a signed, unexpired token of an account
    deleted since still gets 401."""
    token = client.headers["Authorization"].removeprefix("Bearer ")
    user_id = decode_access_token(token, get_settings()).user_id
    with session_scope() as s:
        s.execute(update(User).where(User.id == user_id).values(deleted_at=utcnow()))
    refused = client.post("/api/v1/tasks", json=LOAN)
    assert refused.status_code == 401, refused.text
    assert refused.headers["WWW-Authenticate"] == "Bearer"
