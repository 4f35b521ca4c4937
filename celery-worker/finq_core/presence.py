"""Which workers are online: a heartbeat each worker's main process writes to Redis.

Celery's `inspect` is a broadcast: it waits its whole timeout unless it knows how many replies
to expect, and a worker whose main loop answers late (a loaded machine) is silently left out,
so a count of workers taken from it flickers. A heartbeat is read in one round trip, counts a
busy worker for as long as it beats, and tells `inspect` how many replies to wait for.

Times come from the Redis server's clock, so workers on other hosts need no synchronised clock.
"""

import json
from typing import Any, cast

import redis

BEATS = "finq:workers"  # sorted set: worker name -> time of its last beat (Redis clock, s)
INFO = "finq:workers:info"  # hash: worker name -> JSON (slots, pid, host)
BEAT_SECONDS = 5.0
# A worker missing three beats in a row is gone (killed, frozen or cut off from Redis).
STALE_SECONDS = 3 * BEAT_SECONDS


def _now(r: "redis.Redis") -> float:
    seconds, micros = cast(tuple[int, int], r.time())
    return float(seconds) + micros / 1e6


def beat(r: "redis.Redis", name: str, info: dict[str, Any]) -> None:
    """Mark `name` alive now, and forget workers that stopped beating without saying so."""
    now = _now(r)
    stale = cast(list[str], r.zrangebyscore(BEATS, "-inf", now - STALE_SECONDS))
    pipe = r.pipeline()
    pipe.zadd(BEATS, {name: now})
    pipe.hset(INFO, name, json.dumps(info))
    if stale:
        pipe.zrem(BEATS, *stale)
        pipe.hdel(INFO, *stale)
    pipe.execute()


def withdraw(r: "redis.Redis", name: str) -> None:
    """A worker shutting down cleanly leaves at once instead of after STALE_SECONDS."""
    pipe = r.pipeline()
    pipe.zrem(BEATS, name)
    pipe.hdel(INFO, name)
    pipe.execute()


def online(r: "redis.Redis") -> dict[str, dict[str, Any]]:
    """Every worker that beat within STALE_SECONDS, with what it announced."""
    # The redis client's stubs type every reply as sync-or-async; this client is sync.
    names = cast(list[str | bytes], r.zrangebyscore(BEATS, _now(r) - STALE_SECONDS, "+inf"))
    if not names:
        return {}
    infos = cast(list[str | bytes | None], r.hmget(INFO, names))
    return {_text(name): json.loads(info) if info else {}
            for name, info in zip(names, infos, strict=True)}


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
