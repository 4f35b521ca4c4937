"""Live streams through nginx: one Redis connection per API process however many streams it
serves, a per-user cap, a maximum lifetime, single-use tickets, and no credential in a log.

The stack has one API replica (every stream lands on it), a cap of 3 streams per user, a
lifetime of 8 s and tickets valid for 2 s.
"""

import asyncio
import hashlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.conftest import LocalStack, start_stack, stop_stack
from tests.e2e.client import login, submit
from tests.e2e.conftest import new_user
from tests.e2e.tasks import QUICK_LOAN
from tests.helpers import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CAP = 3
MAX_SECONDS = 8


@pytest.fixture(scope="module")
def streams_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    s = start_stack(
        tmp_path_factory.mktemp("streams") / "run",
        "--api-replicas",
        "1",
        "--worker-replicas",
        "1",
        env={
            "WORKER_CONCURRENCY": "1",
            "GUNICORN_WORKERS": "1",
            "RATE_LIMIT_ENABLED": "false",
            "STREAMS_PER_USER": str(CAP),
            "STREAM_MAX_SECONDS": str(MAX_SECONDS),
            "STREAM_TICKET_SECONDS": "2",
        },
    )
    yield s
    stop_stack(s)


@pytest.fixture(scope="module")
def admin(streams_stack: LocalStack) -> httpx.Client:
    return login(streams_stack.url, *streams_stack.admin)


@pytest.fixture(scope="module")
def store(streams_stack: LocalStack) -> redis.Redis:
    return redis.Redis.from_url(streams_stack.info["REDIS_URL"], decode_responses=True)


def user(stack: LocalStack, admin: httpx.Client) -> httpx.Client:
    return login(stack.url, *new_user(admin))


def waiting_task(client: httpx.Client) -> str:
    """A task that stays PENDING (due in an hour): its stream stays open."""
    return str(submit(client, "loan_amortization", QUICK_LOAN, delay_seconds=3600)["id"])


def clients(store: redis.Redis) -> int:
    listed: list[dict[str, str]] = store.client_list()  # type: ignore[assignment]
    return len(listed)


async def _open_streams(
    base: str, owners: list[tuple[str, str]], opened: asyncio.Event, done: asyncio.Event
) -> list[int]:
    """Open every (token, task) stream, read each one's first frame, hold them until done."""
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:

        async def one(token: str, task: str, ready: list[int]) -> int:
            headers = {"Authorization": f"Bearer {token}"}
            async with http.stream("GET", f"/api/v1/tasks/{task}/events", headers=headers) as r:
                if r.status_code == 200:
                    async for line in r.aiter_lines():
                        if line.startswith("data: "):
                            break
                ready.append(r.status_code)
                if len(ready) == len(owners):
                    opened.set()
                await done.wait()
                return r.status_code

        ready: list[int] = []
        return await asyncio.gather(*(one(t, task, ready) for t, task in owners))


def test_sixty_streams_share_the_replicas_redis_connection(
    streams_stack: LocalStack, admin: httpx.Client, store: redis.Redis
) -> None:
    owners = []
    for _ in range(60 // CAP):
        client = user(streams_stack, admin)
        token = client.headers["Authorization"].split()[1]
        owners += [(token, waiting_task(client)) for _ in range(CAP)]
    # One stream first: the hub's connection is made once per process, then kept.
    warm = owners.pop()
    asyncio.run(_hold(streams_stack.url, [warm], store, lambda _: None))
    before = clients(store)
    counted: list[int] = []
    statuses = asyncio.run(_hold(streams_stack.url, owners, store, lambda n: counted.append(n)))
    assert statuses == [200] * len(owners)
    print(f"redis clients: {before} before, {counted[0]} with {len(owners)} streams open")
    assert counted[0] - before <= 2, (before, counted)


async def _hold(
    base: str, owners: list[tuple[str, str]], store: redis.Redis, measure: Callable[[int], None]
) -> list[int]:
    opened, done = asyncio.Event(), asyncio.Event()
    task = asyncio.ensure_future(_open_streams(base, owners, opened, done))
    await asyncio.wait_for(opened.wait(), 60)
    measure(await asyncio.to_thread(clients, store))
    done.set()
    return await task


def test_a_stream_over_the_users_cap_is_429_until_one_closes(
    streams_stack: LocalStack, admin: httpx.Client
) -> None:
    client = user(streams_stack, admin)
    task = waiting_task(client)
    url = f"/api/v1/tasks/{task}/events"
    held = [client.stream("GET", url) for _ in range(CAP)]
    responses = [h.__enter__() for h in held]
    try:
        assert [r.status_code for r in responses] == [200] * CAP
        over = client.get(url)
        assert over.status_code == 429
        assert f"at most {CAP} per user" in over.json()["detail"]
        assert "STREAMS_PER_USER" in over.json()["detail"]
        # Another user is not affected.
        other = user(streams_stack, admin)
        with other.stream("GET", f"/api/v1/tasks/{waiting_task(other)}/events") as r:
            assert r.status_code == 200
    finally:
        held[0].__exit__(None, None, None)

    def reopened() -> bool:
        with client.stream("GET", url) as r:
            return r.status_code == 200

    try:
        wait_until(reopened, timeout=10, what="a stream after one closed")
    finally:
        for h in held[1:]:
            h.__exit__(None, None, None)


def test_a_stream_ends_after_its_maximum_lifetime(
    streams_stack: LocalStack, admin: httpx.Client
) -> None:
    client = user(streams_stack, admin)
    task = waiting_task(client)
    started = time.monotonic()
    with client.stream("GET", f"/api/v1/tasks/{task}/events", timeout=MAX_SECONDS * 3) as r:
        assert r.status_code == 200
        frames = [line for line in r.iter_lines() if line.startswith("data: ")]
    elapsed = time.monotonic() - started
    assert frames and MAX_SECONDS <= elapsed < MAX_SECONDS + 5, elapsed
    assert '"status": "PENDING"' in frames[0]


def _ticket(client: httpx.Client, task: str) -> str:
    resp = client.post(f"/api/v1/tasks/{task}/events/ticket")
    assert resp.status_code == 201, resp.text
    assert resp.headers["cache-control"] == "no-store"
    assert resp.json()["expires_in"] == 2
    ticket: str = resp.json()["ticket"]
    return ticket


def test_a_ticket_opens_one_stream_once(
    streams_stack: LocalStack, admin: httpx.Client, store: redis.Redis
) -> None:
    client = user(streams_stack, admin)
    task, other_task = waiting_task(client), waiting_task(client)
    url = f"{streams_stack.url}/api/v1/tasks/{task}/events"
    ticket = _ticket(client, task)
    with httpx.stream("GET", url, params={"ticket": ticket}) as r:
        assert r.status_code == 200
        assert next(line for line in r.iter_lines() if line.startswith("data: "))
    assert httpx.get(url, params={"ticket": ticket}).status_code == 401  # used
    # For another task: refused, and spent.
    wrong = _ticket(client, other_task)
    assert httpx.get(url, params={"ticket": wrong}).status_code == 401
    # Expired unused (STREAM_TICKET_SECONDS=2).
    late = _ticket(client, task)
    key = "finq:stream-ticket:" + hashlib.sha256(late.encode()).hexdigest()
    assert store.exists(key)
    wait_until(lambda: not store.exists(key), timeout=10, what="the ticket to expire")
    assert httpx.get(url, params={"ticket": late}).status_code == 401
    # Nobody else's ticket, no token in the URL, nothing at all: 401.
    token = client.headers["Authorization"].split()[1]
    assert httpx.get(url, params={"access_token": token}).status_code == 401
    assert httpx.get(url, params={"ticket": "x" * 43}).status_code == 401
    assert httpx.get(url).status_code == 401
    # Someone else cannot have a ticket for the task.
    stranger = user(streams_stack, admin)
    assert stranger.post(f"/api/v1/tasks/{task}/events/ticket").status_code == 404


def test_no_token_or_ticket_reaches_a_log(streams_stack: LocalStack, admin: httpx.Client) -> None:
    """Errors nginx logs with the request line: the replica dies under an open stream (an
    upstream reset), a body too large. Afterwards no log of the stack holds a ticket or the
    token."""
    client = user(streams_stack, admin)
    task = waiting_task(client)
    token = client.headers["Authorization"].split()[1]
    url = f"{streams_stack.url}/api/v1/tasks/{task}/events"
    tickets = [_ticket(client, task) for _ in range(2)]
    with httpx.stream("GET", url, params={"ticket": tickets[0]}, timeout=30) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        next(line for line in lines if line.startswith("data: "))
        # The replica's whole process group at once: the stream is reset mid-response.
        os.killpg(os.getpgid(streams_stack.pid_of("api:api-1")), signal.SIGKILL)
        with pytest.raises(httpx.HTTPError):
            for _ in lines:
                pass
    wait_until(
        lambda: httpx.get(f"{streams_stack.url}/health/ready").status_code == 200,
        timeout=60,
        what="the replica back",
    )
    big = httpx.post(
        url, params={"ticket": tickets[1], "access_token": token}, content=b"x" * 200_000
    )
    assert big.status_code == 413
    logs = Path(streams_stack.run_dir, "logs")
    for log in logs.iterdir():
        text = log.read_text(errors="replace")
        for secret in (*tickets, token):
            assert secret not in text, (log.name, secret[:8])


def test_the_ticket_route_is_documented(streams_stack: LocalStack) -> None:
    paths = httpx.get(f"{streams_stack.url}/openapi.json").json()["paths"]
    ticket = paths["/api/v1/tasks/{task_id}/events/ticket"]["post"]
    assert "201" in ticket["responses"]
    events = paths["/api/v1/tasks/{task_id}/events"]["get"]
    assert {"401", "429"} <= set(events["responses"])
    assert [p["name"] for p in events["parameters"] if p["in"] == "query"] == ["ticket"]
