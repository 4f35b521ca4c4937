"""Worker heartbeats in a real redis-server, and the real worker announcing itself."""

import json
import socket
import subprocess
import uuid

import pytest
import redis

from finq_core import presence
from tests.helpers import wait_until

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
    assert r.hget(presence.INFO, name) is None


def test_a_worker_that_stopped_beating_drops_out(r: redis.Redis) -> None:
    """Killed without withdrawing: out of the count after STALE_SECONDS, and the next beat
    of any worker removes its entry."""
    gone, alive = f"gone-{uuid.uuid4().hex}", f"alive-{uuid.uuid4().hex}"
    seconds, micros = r.time()
    r.zadd(presence.BEATS, {gone: seconds + micros / 1e6 - presence.STALE_SECONDS - 1})
    r.hset(presence.INFO, gone, json.dumps({"slots": 4}))
    assert gone not in presence.online(r)
    presence.beat(r, alive, {"slots": 1})
    assert r.zscore(presence.BEATS, gone) is None and r.hget(presence.INFO, gone) is None
    assert alive in presence.online(r)
    presence.withdraw(r, alive)


def test_the_worker_announces_itself_and_answers_inspect(
        r: redis.Redis, celery_worker: subprocess.Popen[bytes]) -> None:
    from finq_api.routes.monitoring import workers

    name = f"testworker@{socket.gethostname()}"
    info = wait_until(lambda: presence.online(r).get(name), 30, 0.2,
                      what="the worker's first heartbeat")
    assert info["slots"] == 2 and info["pid"] == celery_worker.pid
    listed = {w["name"]: w for w in workers()}
    assert listed[name]["slots"] == 2 and listed[name]["answered"] is True
