"""The window docs/operations.md states for a whole worker's death: its task's message is back
in its queue, taken over by a live worker, within the visibility timeout plus one restore scan
(finq_core.broker.redelivery_bound: 380 s with the defaults) after it was delivered.

DEFAULT_TASK_TIMEOUT=5 makes the visibility timeout 20 s here. Two real workers on a Redis and
a database of their own: the first takes the task and is killed with its pool (SIGKILL to the
process group, so nothing is acknowledged or restored at shutdown); the second, started just
after, must run it again in time. kombu's own cadence (a scan every 100 s) missed that."""

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
import redis

from finq_core import broker
from finq_core.config import Settings, get_settings
from finq_core.db import reset_engine, session_scope
from finq_core.migrate import upgrade
from finq_core.models import Task, TaskStatus
from finq_core.redis_client import get_redis
from finq_core.store import add_event
from tests.conftest import ROOT, start_redis, stop_process
from tests.e2e.tasks import ONE_SECOND_MC
from tests.helpers import free_port, wait_until

pytestmark = pytest.mark.integration
VENV_BIN = Path(sys.executable).parent
TIMEOUT = 5
FINAL = {TaskStatus.SUCCESS.value, TaskStatus.FAILED.value}


@pytest.fixture
def own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """A redis-server and a migrated database used by the test and its workers alone."""
    port = free_port()
    proc = start_redis(port, tmp_path / "redis")
    env = {
        "REDIS_URL": f"redis://127.0.0.1:{port}/0",
        "DATABASE_URL": f"sqlite:///{tmp_path}/finq.db",
        "DEFAULT_TASK_TIMEOUT": str(TIMEOUT),
    }
    upgrade(env["DATABASE_URL"])
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    get_redis.cache_clear()
    reset_engine()
    previous = broker.celery_app
    monkeypatch.setattr(broker, "celery_app", broker.make_celery(get_settings()))
    try:
        yield env
    finally:
        stop_process(proc)
        monkeypatch.undo()
        previous.set_current()
        get_settings.cache_clear()
        get_redis.cache_clear()
        reset_engine()


def start_worker(env: dict[str, str], name: str, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [str(ROOT / "deploy" / "finq-service"), "worker"],
            env={
                **os.environ,
                **env,
                "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
                "WORKER_CONCURRENCY": "1",
                "WORKER_NAME": f"{name}@%h",
                "WORKER_METRICS_PORT": "0",
                "PROMETHEUS_MULTIPROC_DIR": str(log.parent / f"metrics-{name}"),
            },
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def consumers(r: redis.Redis) -> int:
    clients = cast(list[dict[str, str]], r.client_list())
    return sum(c.get("cmd") == "brpop" for c in clients)


def state(task_id: uuid.UUID) -> tuple[str, int]:
    with session_scope() as s:
        task = s.get(Task, task_id)
        assert task is not None
        return task.status, task.attempts


def test_a_whole_worker_dies_and_its_task_runs_again_within_the_bound(
    own: dict[str, str], tmp_path: Path
) -> None:
    bound = broker.redelivery_bound(Settings())
    assert (bound, broker.visibility_timeout(Settings())) == (30, 20)
    r = redis.Redis.from_url(own["REDIS_URL"])
    first = start_worker(own, "doomed", tmp_path / "doomed.log")
    second: subprocess.Popen[bytes] | None = None
    try:
        wait_until(lambda: consumers(r) >= 1, 60, 0.2, what="the first worker to consume")
        tid = uuid.uuid4()
        with session_scope() as s:
            s.add(Task(id=tid, owner="tester", type="monte_carlo_option", params=ONE_SECOND_MC))
            add_event(s, tid, TaskStatus.PENDING.value, "queued")
        broker.enqueue(str(tid), "normal")
        wait_until(lambda: state(tid) == ("RUNNING", 1), 30, 0.02, what="the first run")
        delivered = time.monotonic()  # the claim follows the delivery by milliseconds
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(10)
        assert r.hlen("unacked") == 1, "the dead worker's message waits unacknowledged"

        second = start_worker(own, "rescuer", tmp_path / "rescuer.log")
        # Started after the death: its scan at start-up comes before the visibility timeout,
        # so only the periodic scans can bring the message back.
        wait_until(lambda: consumers(r) >= 1, 60, 0.2, what="the second worker to consume")
        assert time.monotonic() - delivered < broker.visibility_timeout(Settings())
        wait_until(
            lambda: state(tid)[1] == 2, bound + 5, 0.1, what="the second run within the bound"
        )
        again = time.monotonic() - delivered
        assert broker.visibility_timeout(Settings()) - 1 <= again <= bound + 3, again
        print(f"delivered again {again:.1f} s after the first delivery (bound {bound} s)")
        # The rescuer ran it to an end (its 1 s soft limit may well cut it short: "timed out").
        wait_until(lambda: state(tid)[0] in FINAL, 60, 0.1, what="the second run to end")
        with session_scope() as s:
            task = s.get(Task, tid)
            assert task is not None and (task.worker or "").startswith("rescuer@"), task
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
