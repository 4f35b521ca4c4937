"""Redis loses what it holds, the database does not: every task, and every item of a batch,
still ends exactly once.

One stack of its own (these tests flush, kill and reconfigure its Redis), with the repair's
grace period cut to GRACE seconds and a sweep starting every second; batches in small chunks
(CHUNK_ITEMS loans), more of them on the queue than the workers run and prefetch, so that
chunk messages wait in the list to be lost."""

import os
import secrets
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime
from typing import Any, cast

import httpx
import pytest
import redis
import sqlalchemy as sa

from finq_core.models import BatchEvent
from tests.conftest import ROOT, VENV_BIN, LocalStack, start_stack, stop_stack
from tests.e2e.client import login, submit, wait_final
from tests.e2e.tasks import ONE_SECOND_MC, QUICK_LOAN
from tests.e2e.test_faults import wait_running
from tests.helpers import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

GRACE = 3
LOST = "queued again: broker lost its message"
CHUNK_ITEMS = 20  # BATCH_CHUNK_SECONDS 0.01 / 0.0005 s a loan (finq_core.batch_runs)


@pytest.fixture(scope="module")
def lossy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    s = start_stack(
        tmp_path_factory.mktemp("broker-loss") / "run",
        "--api-replicas",
        "2",
        "--worker-replicas",
        "2",
        env={
            "WORKER_CONCURRENCY": "2",
            "GUNICORN_WORKERS": "1",
            "RATE_LIMIT_ENABLED": "false",
            "DEFAULT_TASK_TIMEOUT": "10",
            "BROKER_REPAIR_GRACE_SECONDS": str(GRACE),
            "BROKER_REPAIR_INTERVAL_SECONDS": "1",
            "QUOTA_QUEUED_TASKS": "10000",  # 2000 queued at once
            "BATCH_CHUNK_SECONDS": "0.01",
            # 4 worker slots, each with a message prefetched: 8 chunks wait in the list.
            "BATCH_CHUNKS_IN_FLIGHT": "16",
        },
    )
    yield s
    stop_stack(s)


@pytest.fixture(scope="module")
def client(lossy: LocalStack) -> httpx.Client:
    return login(lossy.url, *lossy.admin)


@pytest.fixture(scope="module")
def broker(lossy: LocalStack) -> redis.Redis:
    return redis.Redis(port=int(lossy.info["REDIS_PORT"]), decode_responses=True)


@contextmanager
def workers_stopped(stack: LocalStack) -> Iterator[None]:
    """The workers are stopped inside the block, and started again when it ends."""
    stack.supervisorctl("stop", "workers:*")
    try:
        yield
    finally:
        stack.supervisorctl("start", "workers:*")


def submit_many(client: httpx.Client, n: int, params: dict[str, Any] = QUICK_LOAN) -> list[str]:
    with ThreadPoolExecutor(4) as pool:
        tasks = pool.map(lambda _: submit(client, "loan_amortization", params)["id"], range(n))
        return list(tasks)


def depth(broker: redis.Redis, queue: str = "normal") -> int:
    return int(cast(int, broker.llen(queue)))


def unfinished(client: httpx.Client) -> int:
    counts = client.get("/api/v1/monitoring/queues").json()["tasks_by_status"]
    return int(sum(counts.get(s, 0) for s in ("PENDING", "RUNNING", "RETRYING")))


def histories(client: httpx.Client, ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    with ThreadPoolExecutor(4) as pool:
        pages = pool.map(lambda t: client.get(f"/api/v1/tasks/{t}/history").json(), ids)
        return dict(zip(ids, pages, strict=True))


def assert_each_succeeded_exactly_once(client: httpx.Client, ids: list[str]) -> None:
    for tid, events in histories(client, ids).items():
        statuses = [e["status"] for e in events]
        assert statuses.count("SUCCESS") == 1 and statuses[-1] == "SUCCESS", (tid, events)


def repaired(events: list[dict[str, Any]]) -> bool:
    return any((e["message"] or "").startswith(LOST) for e in events)


def beat_metric(lossy: LocalStack, series: str) -> float:
    """The sum of the beat's samples of `series` (a name, or a name with some labels)."""
    name, _, labels = series.partition("{")
    text = httpx.get(f"http://127.0.0.1:{lossy.info['BEAT_METRICS_PORT']}/metrics").text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + ("{" if labels else "")) and labels.rstrip("}") in line
    )


def test_500_queued_tasks_run_after_flushall(
    lossy: LocalStack, client: httpx.Client, broker: redis.Redis
) -> None:
    with workers_stopped(lossy):
        ids = submit_many(client, 500)
        assert depth(broker) == 500
        broker.flushall()
        # The beat notices at its next tick and sends them all again.
        wait_until(lambda: depth(broker) >= 500, 15, 0.1, what="the 500 re-sent")
        started = time.monotonic()
    wait_until(lambda: unfinished(client) == 0, 60, 0.5, what="500 tasks done within a minute")
    took = time.monotonic() - started
    print(f"\n500 tasks SUCCESS {took:.1f} s after the workers' start")
    assert_each_succeeded_exactly_once(client, ids)
    assert all(repaired(events) for events in histories(client, ids).values())


def test_redis_killed_and_restarted_empty_while_tasks_run_and_others_wait(
    lossy: LocalStack, client: httpx.Client, broker: redis.Redis
) -> None:
    ids = [submit(client, "monte_carlo_option", ONE_SECOND_MC)["id"] for _ in range(16)]
    wait_running(client, 2)
    # The AOF goes first (Redis keeps writing its open file), then Redis itself; supervisor
    # starts it again at once, on an empty data directory.
    shutil.rmtree(lossy.run_dir / "redis" / "appendonlydir")
    os.kill(lossy.pid_of("redis"), signal.SIGKILL)
    wait_until(lambda: broker.ping(), 30, 0.2, what="Redis back")
    for tid in ids:
        assert wait_final(client, tid, timeout=120)["status"] == "SUCCESS"
    assert_each_succeeded_exactly_once(client, ids)


def test_a_message_removed_from_its_list_is_sent_again_after_the_grace_period(
    lossy: LocalStack, client: httpx.Client, broker: redis.Redis
) -> None:
    with workers_stopped(lossy):
        ids = submit_many(client, 5)
        lost = ids[2]
        raw = next(m for m in cast(list[str], broker.lrange("normal", 0, -1)) if lost in m)
        assert broker.lrem("normal", 1, raw) == 1
    done = {tid: wait_final(client, tid, timeout=60) for tid in ids}
    assert {t["status"] for t in done.values()} == {"SUCCESS"}
    assert_each_succeeded_exactly_once(client, ids)
    events = histories(client, ids)
    assert [tid for tid in ids if repaired(events[tid])] == [lost]
    queued_at = events[lost][0]["at"]
    requeued = next(e for e in events[lost] if repaired([e]))
    assert "found in no queue" in requeued["message"]
    gap = _seconds(requeued["at"]) - _seconds(queued_at)
    assert gap >= GRACE, "queued again only after the grace period"


def _seconds(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_under_a_moving_load_with_nothing_lost_the_repair_sends_nothing(
    lossy: LocalStack, client: httpx.Client
) -> None:
    """A backlog older than the grace period, swept while the workers drain it and more
    arrive: every message is found, in a list or in a worker's hands. A thousand queued take
    several sweeps (a second apart) to drain; more would only make the test longer."""
    repaired_before = beat_metric(lossy, "finq_messages_repaired_total")
    clean_before = beat_metric(lossy, 'finq_repair_sweeps_total{result="clean"}')
    with workers_stopped(lossy):
        ids = submit_many(client, 1000)
    ids += submit_many(client, 500)
    wait_until(lambda: unfinished(client) == 0, 240, 1, what="1500 tasks done")
    assert beat_metric(lossy, 'finq_repair_sweeps_total{result="clean"}') > clean_before
    assert beat_metric(lossy, "finq_messages_repaired_total") == repaired_before
    assert not any(repaired(events) for events in histories(client, ids[::10]).values())


def test_an_evicting_policy_is_reported_and_refused_in_production(
    lossy: LocalStack, broker: redis.Redis
) -> None:
    broker.config_set("maxmemory-policy", "allkeys-lru")
    try:
        ready = httpx.get(lossy.url + "/health/ready")
        assert ready.status_code == 200, "a warning, not an outage"
        durability = ready.json()["checks"]["redis_durability"]
        assert durability.startswith("warning: maxmemory-policy allkeys-lru evicts keys")
        env = {
            "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
            "APP_ENV": "production",
            "APP_SECRET_KEY": secrets.token_urlsafe(48),
            "REDIS_URL": f"redis://127.0.0.1:{lossy.info['REDIS_PORT']}/0",
            "DATABASE_URL": lossy.info["DATABASE_URL"],
        }
        refused = subprocess.run(
            [str(ROOT / "deploy" / "finq-service"), "api"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert refused.returncode == 2, refused.stderr
        assert "refusing to start" in refused.stderr and "allkeys-lru" in refused.stderr
    finally:
        broker.config_set("maxmemory-policy", "noeviction")
    assert httpx.get(lossy.url + "/health/ready").json()["checks"]["redis_durability"] == "ok"


def submit_batch(client: httpx.Client, n: int) -> str:
    resp = client.post(
        "/api/v1/batches",
        json={
            "type": "loan_amortization",
            "base": QUICK_LOAN,
            "vary": {"principal": [1000 + i for i in range(n)]},
        },
    )
    assert resp.status_code == 202, resp.text
    assert resp.json()["chunk_size"] == CHUNK_ITEMS
    return str(resp.json()["id"])


def batch(client: httpx.Client, batch_id: str) -> dict[str, Any]:
    body: dict[str, Any] = client.get(f"/api/v1/batches/{batch_id}").json()
    return body


def wait_batch_final(client: httpx.Client, batch_id: str, timeout: float) -> dict[str, Any]:
    def final() -> dict[str, Any] | None:
        body = batch(client, batch_id)
        return body if body["status"] in ("SUCCESS", "FAILED", "CANCELLED") else None

    return wait_until(final, timeout, 0.2, what=f"batch {batch_id} to end")


def assert_every_item_succeeded_once(client: httpx.Client, batch_id: str, n: int) -> None:
    """Every item SUCCESS with its result, claimed once: no run lost, none repeated."""
    items: list[dict[str, Any]] = []
    after = -1
    while after is not None:
        page = client.get(
            f"/api/v1/batches/{batch_id}/items", params={"limit": 1000, "after": after}
        ).json()
        items += page["items"]
        after = page["next_after"]
    assert [i["index"] for i in items] == list(range(n))
    wrong = [i for i in items if i["status"] != "SUCCESS" or i["attempts"] != 1 or not i["result"]]
    assert wrong == [], wrong[:3]


def batch_history(lossy: LocalStack, batch_id: str) -> list[tuple[datetime, str]]:
    """The batch's events, read from the database (the API shows none)."""
    engine = sa.create_engine(lossy.info["DATABASE_URL"])
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.select(BatchEvent.at, BatchEvent.message)
                .where(BatchEvent.batch_id == uuid.UUID(batch_id))
                .order_by(BatchEvent.id)
            ).all()
    finally:
        engine.dispose()
    return [(at, str(message)) for at, message in rows]


def test_a_batch_of_thousands_flushed_mid_run_ends_with_every_item_once(
    lossy: LocalStack, client: httpx.Client, broker: redis.Redis
) -> None:
    """Without the repair the chunks lost from the list would keep their items PENDING for
    ever: the running chunks go on sending the next ones, and the batch never ends."""
    n = 5000  # 250 chunks
    batch_id = submit_batch(client, n)
    wait_until(
        lambda: batch(client, batch_id)["counts"]["SUCCESS"] >= n // 5,
        60,
        0.05,
        what="a fifth of the batch done",
    )
    waiting = [m for m in cast(list[str], broker.lrange("normal", 0, -1)) if batch_id in m]
    broker.flushall()
    started = time.monotonic()
    body = wait_batch_final(client, batch_id, 120)
    print(
        f"\n{n} items: {len(waiting)} chunks lost from the list at FLUSHALL, batch ended "
        f"{time.monotonic() - started:.1f} s later"
    )
    assert body["status"] == "SUCCESS" and body["counts"]["SUCCESS"] == n
    assert_every_item_succeeded_once(client, batch_id, n)
    assert waiting, "chunks were waiting in the list when it was flushed"
    repairs = [m for _, m in batch_history(lossy, batch_id) if m.startswith(LOST)]
    assert any("Redis came back empty: chunks" in m for m in repairs), repairs


def test_a_chunk_removed_from_its_list_is_sent_again_after_the_grace_period(
    lossy: LocalStack, client: httpx.Client, broker: redis.Redis
) -> None:
    n = 5 * CHUNK_ITEMS
    with workers_stopped(lossy):
        batch_id = submit_batch(client, n)
        chunks = [m for m in cast(list[str], broker.lrange("normal", 0, -1)) if batch_id in m]
        assert len(chunks) == 5
        raw = next(m for m in chunks if f"'{batch_id}', 2]" in m)
        assert broker.lrem("normal", 1, raw) == 1
    assert wait_batch_final(client, batch_id, 60)["status"] == "SUCCESS"
    assert_every_item_succeeded_once(client, batch_id, n)
    history = batch_history(lossy, batch_id)
    repairs = [(at, m) for at, m in history if m.startswith(LOST)]
    assert [m for _, m in repairs] == [
        f"{LOST} (chunk 2 found in no queue nor in any worker's hands)"
    ]
    gap = (repairs[0][0] - history[0][0]).total_seconds()
    assert gap >= GRACE, "sent again only after the grace period"
