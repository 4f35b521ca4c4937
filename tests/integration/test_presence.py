"""Worker heartbeats in a real redis-server, and the real worker announcing what it runs."""

import json
import socket
import subprocess
import uuid
from typing import cast

import pytest
import redis

from finq_core import presence
from tests.e2e.tasks import LONG_MC
from tests.helpers import wait_until
from tests.integration.test_worker import outcome, submit

pytestmark = pytest.mark.integration


@pytest.fixture
def r(redis_server: str) -> redis.Redis:
    return redis.Redis.from_url(redis_server, decode_responses=True)


def test_a_beating_worker_is_online_until_it_withdraws(r: redis.Redis) -> None:
    name = f"w-{uuid.uuid4().hex}@host"
    presence.beat(r, name, {"slots": 3})
    assert presence.online(r)[name] == {"slots": 3}
    presence.withdraw(r, name)
    assert name not in presence.online(r)
    assert r.get(presence.info_key(name)) is None


def test_a_worker_that_stopped_beating_drops_out(r: redis.Redis) -> None:
    """Killed without withdrawing: out of the count after STALE_SECONDS, its entry pruned by
    the next beat of any worker and its announcement expired by Redis."""
    gone, alive = f"gone-{uuid.uuid4().hex}", f"alive-{uuid.uuid4().hex}"
    seconds, micros = cast(tuple[int, int], r.time())
    r.zadd(presence.BEATS, {gone: seconds + micros / 1e6 - presence.STALE_SECONDS - 1})
    r.set(presence.info_key(gone), json.dumps({"slots": 4}))
    assert gone not in presence.online(r)
    presence.beat(r, alive, {"slots": 1})
    assert r.zscore(presence.BEATS, gone) is None
    assert alive in presence.online(r)
    assert 0 < cast(int, r.ttl(presence.info_key(alive))) <= presence.STALE_SECONDS + 1
    presence.withdraw(r, alive)


def test_the_worker_announces_itself_and_the_task_it_runs(
    r: redis.Redis, celery_worker: subprocess.Popen[bytes]
) -> None:
    from finq_api.routes.monitoring import workers

    name = f"testworker@{socket.gethostname()}"
    info = wait_until(
        lambda: presence.online(r).get(name), 30, 0.2, what="the worker's first heartbeat"
    )
    assert info["slots"] == 2 and info["pid"] == celery_worker.pid
    task_id = submit("monte_carlo_option", LONG_MC)
    # The heartbeat carries the running task within a beat or two.
    listed = wait_until(
        lambda: next(
            (w for w in workers() if w["name"] == name and str(task_id) in w["tasks"]), None
        ),
        10 * presence.BEAT_SECONDS,
        0.1,
        what="the running task announced",
    )
    assert listed["slots"] == 2 and 1 <= listed["active"] <= 2
    assert outcome(task_id, 120).status == "SUCCESS"
    wait_until(
        lambda: str(task_id) not in presence.online(r)[name]["tasks"],
        3 * presence.BEAT_SECONDS,
        0.1,
        what="the finished task to leave the heartbeat",
    )
