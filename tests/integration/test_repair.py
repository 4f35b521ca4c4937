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

from finq_core import broker, broker_check, presence, repair
from finq_core.config import get_settings
from finq_core.db import reset_engine, session_scope
from finq_core.migrate import upgrade
from finq_core.models import Task, TaskEvent, TaskStatus
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
