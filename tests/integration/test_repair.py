"""The beat's repair of what Redis lost, against a real redis-server and a real database of
its own (no worker consumes these queues: what the repair sends stays there to be counted)."""

import json
import os
import secrets
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import cast

import pytest
import redis
from prometheus_client import REGISTRY
from sqlalchemy import select

from finq_core import batch_runs, batches, broker, broker_check, presence, repair
from finq_core.config import get_settings
from finq_core.db import reset_engine, session_scope
from finq_core.migrate import upgrade
from finq_core.models import Batch, BatchEvent, Task, TaskEvent, TaskStatus
from finq_core.redis_client import get_redis
from finq_core.store import add_event
from finq_core.timeutil import utcnow
from tests.conftest import ROOT, start_redis, stop_process
from tests.e2e.tasks import QUICK_LOAN
from tests.helpers import free_port, wait_until

pytestmark = pytest.mark.integration

GRACE = 5


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """A redis-server and a migrated database file for this module alone."""
    folder = tmp_path_factory.mktemp("repair")
    port = free_port()
    proc = start_redis(port, folder / "redis")
    template = folder / "migrated.db"
    upgrade(f"sqlite:///{template}")
    yield port, template
    stop_process(proc)


@pytest.fixture
def own(
    services: tuple[int, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[redis.Redis]:
    """An empty Redis and a new database, which the code under test uses."""
    port, template = services
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url, decode_responses=True)
    client.flushall()
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("appendonly", "yes")
    shutil.copy(template, tmp_path / "repair.db")
    monkeypatch.setenv("REDIS_URL", url)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/repair.db")
    monkeypatch.setenv("BROKER_REPAIR_GRACE_SECONDS", str(GRACE))
    monkeypatch.setenv("BROKER_REPAIR_INTERVAL_SECONDS", "0.5")
    _forget_clients()
    previous = broker.celery_app
    monkeypatch.setattr(broker, "celery_app", broker.make_celery(get_settings()))
    yield client
    monkeypatch.undo()
    previous.set_current()
    _forget_clients()


def _forget_clients() -> None:
    get_settings.cache_clear()
    get_redis.cache_clear()
    reset_engine()


def queued(priority: str = "normal", age: float = 0, send: bool = True) -> uuid.UUID:
    """A PENDING record marked queued `age` seconds ago, with its message sent (or not)."""
    tid = uuid.uuid4()
    at = utcnow() - timedelta(seconds=age)
    with session_scope() as s:
        s.add(
            Task(
                id=tid,
                owner="tester",
                type="loan_amortization",
                params=QUICK_LOAN,
                priority=priority,
                created_at=at,
                enqueued_at=at,
            )
        )
        add_event(s, tid, TaskStatus.PENDING.value, "queued", at=at)
    if send:
        broker.enqueue(str(tid), priority)
    return tid


def running(worker: str, age: float) -> uuid.UUID:
    tid = queued(age=age, send=False)
    with session_scope() as s:
        task = s.get(Task, tid)
        assert task is not None
        task.status, task.worker, task.attempts = TaskStatus.RUNNING.value, worker, 1
        task.started_at = utcnow() - timedelta(seconds=age)
    return tid


def messages(r: redis.Redis, queue: str = "normal") -> list[str | None]:
    return [repair.message_task_id(raw) for raw in cast(list[str], r.lrange(queue, 0, -1))]


def events(tid: uuid.UUID) -> list[tuple[str, str | None]]:
    with session_scope() as s:
        rows = s.execute(
            select(TaskEvent.status, TaskEvent.message)
            .where(TaskEvent.task_id == tid)
            .order_by(TaskEvent.id)
        )
        return [(row.status, row.message) for row in rows]


def record(tid: uuid.UUID) -> Task:
    with session_scope() as s:
        task = s.get(Task, tid)
        assert task is not None
        return task


def repaired(reason: str) -> float:
    return REGISTRY.get_sample_value("finq_messages_repaired_total", {"reason": reason}) or 0.0


def clean_sweeps() -> float:
    return REGISTRY.get_sample_value("finq_repair_sweeps_total", {"result": "clean"}) or 0.0


def sweeps() -> float:
    return sum(
        REGISTRY.get_sample_value("finq_repair_sweeps_total", {"result": result}) or 0.0
        for result in ("idle", "clean", "repaired")
    )


def until_swept(repairer: repair.Repairer, now: datetime, count: int = 2) -> int:
    """Run passes until `count` more sweeps ended; what they queued again."""
    target, sent = sweeps() + count, 0

    def one_pass() -> bool:
        nonlocal sent
        sent += repairer.run_pass(now)
        return sweeps() >= target

    wait_until(one_pass, 30, 0.05, what=f"{count} sweeps")
    return sent


def settled(r: redis.Redis) -> repair.Repairer:
    """A repairer past its first pass (which writes the marker) that trusts heartbeats."""
    repairer = repair.Repairer()
    assert repairer.run_pass(utcnow()) == 0
    assert r.exists(broker_check.MARKER)
    repairer.presence_trusted_at = 0
    return repairer


def test_a_redis_that_came_back_empty_gets_every_queued_task_again_at_once(
    own: redis.Redis,
) -> None:
    repairer = settled(own)
    low, old_normal, new_normal, high = (
        queued("low", age=30),
        queued("normal", age=20),
        queued("normal", age=1),
        queued("high", age=0),
    )
    before = repaired("broker_emptied")
    own.flushall()
    assert repairer.run_pass(utcnow()) == 4
    assert messages(own, "high") == [str(high)]
    assert messages(own, "normal") == [str(new_normal), str(old_normal)]  # oldest at the tail
    assert messages(own, "low") == [str(low)]
    assert repaired("broker_emptied") == before + 4
    assert own.exists(broker_check.MARKER)
    assert events(high)[-1] == (
        "PENDING",
        "queued again: broker lost its message (Redis came back empty)",
    )
    assert repairer.run_pass(utcnow()) == 0, "the next pass finds the marker again"


def test_a_message_removed_from_its_list_is_queued_again_and_the_others_are_not(
    own: redis.Redis,
) -> None:
    repairer = settled(own)
    ids = [queued(age=2 * GRACE) for _ in range(5)]
    lost = ids[2]
    own.lrem("normal", 1, cast(list[str], own.lrange("normal", 2, 2))[0])
    assert str(lost) not in messages(own)
    before = repaired("message_missing")
    sent = until_swept(repairer, utcnow())
    assert sent == 1
    assert messages(own).count(str(lost)) == 1
    assert repaired("message_missing") == before + 1
    assert events(lost)[-1][1] == (
        "queued again: broker lost its message (found in no queue nor in any worker's hands)"
    )
    for tid in ids:
        assert messages(own).count(str(tid)) == 1
        if tid != lost:
            assert len(events(tid)) == 1


def test_a_message_is_recorded_as_queued_again_before_it_is_sent(
    own: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker may claim a message the moment it lands: the record says why it came back
    before that (a record no longer PENDING would not take the event any more)."""
    repairer = settled(own)
    missing, emptied = queued(age=2 * GRACE, send=False), queued(age=2 * GRACE)
    seen_at_send: dict[str, list[str | None]] = {}
    send = broker.enqueue

    def spying_send(task_id: str, priority: str, request_id: str | None = None) -> None:
        seen_at_send.setdefault(task_id, [message for _, message in events(uuid.UUID(task_id))])
        send(task_id, priority, request_id)

    monkeypatch.setattr(broker, "enqueue", spying_send)
    assert until_swept(repairer, utcnow()) == 1
    own.flushall()
    assert repairer.run_pass(utcnow()) == 2
    assert "found in no queue" in cast(str, seen_at_send[str(missing)][-1])
    assert seen_at_send[str(emptied)][-1] == (
        "queued again: broker lost its message (Redis came back empty)"
    )


def test_a_young_record_is_not_a_suspect(own: redis.Redis) -> None:
    repairer = settled(own)
    young = queued(age=0, send=False)
    assert until_swept(repairer, utcnow()) == 0
    assert str(young) not in messages(own)


def test_nothing_lost_under_a_moving_queue_sends_nothing(
    own: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Thousands of messages read 300 a pass while new ones are published at the head and
    others move from the tail into the unacked hash, as a consuming worker moves them."""
    monkeypatch.setenv("BROKER_REPAIR_SCAN_BUDGET", "300")
    get_settings.cache_clear()
    repairer = settled(own)
    for _ in range(3000):
        queued(age=2 * GRACE)
    sweeps_before, sent, step = clean_sweeps(), 0, 0

    def consumed_while_swept() -> bool:
        nonlocal sent, step
        step += 1
        taken = [cast(str | None, own.rpop("normal")) for _ in range(5)]
        for i, raw in enumerate(t for t in taken if t):
            envelope = [json.loads(raw), "", "normal"]
            own.hset(broker.UNACKED_KEY, f"tag-{step}-{i}", json.dumps(envelope))
        queued(age=2 * GRACE)
        sent += repairer.run_pass(utcnow())
        return clean_sweeps() >= sweeps_before + 3

    wait_until(consumed_while_swept, 60, 0.01, what="three clean sweeps")
    assert sent == 0


def test_a_retrying_task_whose_retry_message_is_lost_is_queued_again(
    own: redis.Redis,
) -> None:
    repairer = settled(own)
    age = broker.visibility_timeout(get_settings()) + 10
    tid = queued(age=age, send=False)
    with session_scope() as s:
        task = s.get(Task, tid)
        assert task is not None
        task.status, task.attempts = TaskStatus.RETRYING.value, 1
        add_event(
            s, tid, TaskStatus.RETRYING.value, "retry in 1.0s", at=utcnow() - timedelta(seconds=age)
        )
    assert until_swept(repairer, utcnow()) == 1
    assert messages(own) == [str(tid)]
    assert record(tid).status == TaskStatus.RETRYING
    assert events(tid)[-1][0] == "RETRYING"


def test_a_running_task_whose_worker_is_gone_and_message_lost_is_queued_again(
    own: redis.Redis,
) -> None:
    repairer = settled(own)
    tid = running("ghost@nowhere", age=2 * GRACE)
    before = repaired("worker_lost")
    assert until_swept(repairer, utcnow()) == 1
    task = record(tid)
    assert task.status == TaskStatus.PENDING and task.worker is None
    assert task.enqueued_at is not None
    assert messages(own) == [str(tid)]
    assert events(tid)[-1] == (
        "PENDING",
        "queued again: broker lost its message (its worker ghost@nowhere is gone)",
    )
    assert repaired("worker_lost") == before + 1
    from finq_worker import runner

    claim = runner.claim(tid, "alive@host")
    assert claim is not None and claim.attempts == 2, "the claim counts a new attempt"


def test_after_redis_came_back_empty_a_dead_workers_running_task_is_queued_again_at_once(
    own: redis.Redis,
) -> None:
    repairer = settled(own)
    tid = running("ghost@nowhere", age=1)  # well within the grace period
    own.flushall()
    repairer.run_pass(utcnow())
    repairer.presence_trusted_at = 0  # as if the live workers had beaten again since
    assert until_swept(repairer, utcnow()) == 1
    assert record(tid).status == TaskStatus.PENDING
    assert messages(own) == [str(tid)]


def test_a_running_task_whose_message_waits_unacked_is_left_to_kombu(own: redis.Redis) -> None:
    repairer = settled(own)
    tid = running("ghost@nowhere", age=2 * GRACE)
    broker.enqueue(str(tid), "normal")
    raw = cast(str | None, own.rpop("normal"))
    assert raw is not None
    own.hset(broker.UNACKED_KEY, "tag-1", json.dumps([json.loads(raw), "", "normal"]))
    assert until_swept(repairer, utcnow()) == 0
    assert record(tid).status == TaskStatus.RUNNING


def test_a_running_task_that_its_live_worker_announces_is_left_alone(own: redis.Redis) -> None:
    repairer = settled(own)
    tid = running("busy@host", age=2 * GRACE)
    presence.beat(own, "busy@host", {"slots": 1, "tasks": [str(tid)]})
    assert until_swept(repairer, utcnow()) == 0
    assert record(tid).status == TaskStatus.RUNNING


def test_running_tasks_wait_until_heartbeats_can_be_trusted(own: redis.Redis) -> None:
    repairer = repair.Repairer()  # just started: live workers may not have beaten yet
    repairer.run_pass(utcnow())
    tid = running("busy@host", age=2 * GRACE)
    assert until_swept(repairer, utcnow()) == 0
    assert record(tid).status == TaskStatus.RUNNING


def test_an_evicting_policy_and_a_redis_without_aof_are_reported(own: redis.Redis) -> None:
    assert broker_check.check(own).problems == []
    own.config_set("maxmemory-policy", "allkeys-lru")
    found = broker_check.check(own)
    assert found.evicting and "allkeys-lru evicts keys" in found.problems[0]
    own.config_set("maxmemory-policy", "volatile-lru")
    assert not broker_check.check(own).evicting, "no queue key has a TTL"
    broker.enqueue(str(uuid.uuid4()), "normal")
    own.expire("normal", 3600)
    assert broker_check.check(own).evicting
    own.config_set("maxmemory-policy", "noeviction")
    own.config_set("appendonly", "no")
    assert "appendonly is off" in broker_check.check(own).problems[0]


def test_production_refuses_to_start_with_an_evicting_policy(own: redis.Redis) -> None:
    own.config_set("maxmemory-policy", "allkeys-lru")
    env = {
        **os.environ,
        "APP_ENV": "production",
        "APP_SECRET_KEY": secrets.token_urlsafe(48),  # production checks it
    }
    check = [sys.executable, "-m", "finq_core.broker_check"]
    refused = subprocess.run(check, env=env, capture_output=True, text=True, cwd=ROOT)
    assert refused.returncode == 2
    assert "refusing to start" in refused.stderr and "allkeys-lru" in refused.stderr
    warned = subprocess.run(
        check, env={**env, "APP_ENV": "development"}, capture_output=True, text=True, cwd=ROOT
    )
    assert warned.returncode == 0
    assert "warning: maxmemory-policy allkeys-lru evicts keys" in warned.stderr


# Batches: chunk messages lost with Redis, or on their own.


def chunked_batch(chunks: int, age: float, sent: int, max_retries: int = 3) -> uuid.UUID:
    """An unfinished batch of `chunks` chunks of 3 loans created `age` seconds ago, its first
    `sent` chunks sent as the submission sends them (batch_runs.pump)."""
    request = batches.BatchRequest(
        type="loan_amortization",
        base=QUICK_LOAN,
        vary={"principal": [1000 + i for i in range(3 * chunks)]},
    )
    varied, params = batches.validated(request, get_settings())
    bid = uuid.uuid4()
    with session_scope() as s:
        s.add(
            Batch(
                id=bid,
                owner="tester",
                type="loan_amortization",
                status=TaskStatus.PENDING.value,
                priority="normal",
                varied=varied,
                total=len(params),
                chunk_size=3,
                chunks=chunks,
                next_chunk=0,
                max_retries=max_retries,
                created_at=utcnow() - timedelta(seconds=age),
            )
        )
        s.flush()
        batches._insert_items(s, bid, 3, params)
        s.commit()
        assert batch_runs.pump(s, bid, "normal", sent) == sent
    return bid


def chunk_messages(r: redis.Redis, queue: str = "normal") -> list[str | None]:
    return [repair.message_chunk(raw) for raw in cast(list[str], r.lrange(queue, 0, -1))]


def claimed(bid: uuid.UUID, chunk: int) -> None:
    """A worker took the chunk's message off the list and claimed its items."""
    with session_scope() as s:
        assert batch_runs.claim_chunk(s, bid, chunk, take_over=False) is not None


def batch_events(bid: uuid.UUID) -> list[str | None]:
    with session_scope() as s:
        rows = s.scalars(
            select(BatchEvent.message).where(BatchEvent.batch_id == bid).order_by(BatchEvent.id)
        )
        return list(rows)


def item_counts(bid: uuid.UUID) -> dict[str, int]:
    with session_scope() as s:
        return batch_runs.counts(s, bid)


def test_a_chunk_removed_from_its_list_is_sent_again_and_the_others_are_not(
    own: redis.Redis,
) -> None:
    repairer = settled(own)
    bid = chunked_batch(chunks=6, age=2 * GRACE, sent=4)
    key = broker.chunk_key
    raw = next(m for m in cast(list[str], own.lrange("normal", 0, -1)) if "', 1]" in m)
    assert own.lrem("normal", 1, raw) == 1
    before = repaired("message_missing")
    assert until_swept(repairer, utcnow()) == 1
    found = chunk_messages(own)
    assert sorted(c for c in found if c) == sorted(key(bid, c) for c in range(4))
    assert repaired("message_missing") == before + 1
    assert batch_events(bid)[-1] == (
        "queued again: broker lost its message (chunk 1 found in no queue nor in any worker's "
        "hands)"
    )


def test_a_young_batch_is_not_a_suspect(own: redis.Redis) -> None:
    repairer = settled(own)
    bid = chunked_batch(chunks=2, age=0, sent=1)
    own.delete("normal")
    assert until_swept(repairer, utcnow()) == 0
    assert chunk_messages(own) == [] and item_counts(bid) == {"PENDING": 6}


def test_after_redis_came_back_empty_a_batchs_pending_chunks_are_sent_again_at_once(
    own: redis.Redis,
) -> None:
    """And the chunk a dead worker ran (its message went with the rest) once the heartbeats
    say no live worker runs it: back to PENDING, its next claim counting a new attempt."""
    repairer = settled(own)
    bid = chunked_batch(chunks=4, age=1, sent=3)  # well within the grace period
    own.rpop("normal")
    claimed(bid, 0)
    own.flushall()
    assert repairer.run_pass(utcnow()) == 2
    assert chunk_messages(own) == [broker.chunk_key(bid, 2), broker.chunk_key(bid, 1)]
    assert batch_events(bid)[-1] == (
        "queued again: broker lost its message (Redis came back empty: chunks 1, 2 sent again)"
    )
    repairer.presence_trusted_at = 0  # as if the live workers had beaten again since
    before = repaired("worker_lost")
    assert until_swept(repairer, utcnow()) == 1
    assert chunk_messages(own)[0] == broker.chunk_key(bid, 0)
    assert item_counts(bid) == {"PENDING": 12}
    assert repaired("worker_lost") == before + 1
    assert batch_events(bid)[-1] == (
        "queued again: broker lost its message (chunk 0: its worker is gone; 3 items back to "
        "PENDING, 0 failed (worker lost))"
    )
    with session_scope() as s:
        claim = batch_runs.claim_chunk(s, bid, 0, take_over=False)
        assert claim is not None and len(claim.items) == 3
        attempts = s.scalars(
            select(batch_runs.ITEMS.c.attempts).where(
                batch_runs.ITEMS.c.batch_id == bid, batch_runs.ITEMS.c.chunk == 0
            )
        ).all()
    assert attempts == [2, 2, 2], "the claim counts a new attempt"


def test_items_whose_worker_was_lost_on_every_attempt_fail_and_the_next_chunk_runs(
    own: redis.Redis,
) -> None:
    repairer = settled(own)
    bid = chunked_batch(chunks=2, age=2 * GRACE, sent=1, max_retries=0)
    own.rpop("normal")
    claimed(bid, 0)  # attempt 1 of 1, lost with its worker and its message
    assert until_swept(repairer, utcnow()) == 1
    assert item_counts(bid) == {"FAILED": 3, "PENDING": 3}
    assert chunk_messages(own) == [broker.chunk_key(bid, 1)]
    with session_scope() as s:
        errors = s.scalars(
            select(batch_runs.ITEMS.c.error).where(batch_runs.ITEMS.c.status == "FAILED")
        ).all()
    assert {e["type"] for e in errors} == {"WorkerLost"}


def test_a_running_chunk_announced_by_its_worker_or_waiting_unacked_is_left_alone(
    own: redis.Redis,
) -> None:
    repairer = settled(own)
    announced = chunked_batch(chunks=1, age=2 * GRACE, sent=1)
    own.rpop("normal")
    claimed(announced, 0)
    presence.beat(own, "busy@host", {"slots": 1, "chunks": [broker.chunk_key(announced, 0)]})
    unacked = chunked_batch(chunks=1, age=2 * GRACE, sent=1)
    raw = cast(str | None, own.rpop("normal"))
    assert raw is not None
    own.hset(broker.UNACKED_KEY, "tag-1", json.dumps([json.loads(raw), "", "normal"]))
    claimed(unacked, 0)
    assert until_swept(repairer, utcnow()) == 0
    assert item_counts(announced) == item_counts(unacked) == {"RUNNING": 3}


def test_a_batch_with_nothing_in_flight_gets_its_next_chunks(own: redis.Redis) -> None:
    """Every chunk sent has run, but the message sending the next one was lost."""
    repairer = settled(own)
    bid = chunked_batch(chunks=6, age=2 * GRACE, sent=1)
    own.rpop("normal")
    claimed(bid, 0)
    with session_scope() as s:
        outcomes = [batch_runs.Outcome(i, TaskStatus.SUCCESS.value) for i in range(3)]
        batch_runs.finish_items(s, bid, outcomes, utcnow())
    in_flight = get_settings().batch_chunks_in_flight
    assert until_swept(repairer, utcnow()) == in_flight
    assert chunk_messages(own) == [broker.chunk_key(bid, c) for c in range(in_flight, 0, -1)]
    assert batch_events(bid)[-1] == (
        "queued again: broker lost its message (nothing in flight: the next chunks sent)"
    )
