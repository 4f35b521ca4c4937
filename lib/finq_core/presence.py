"""Which workers are online and what they run: a heartbeat each worker's main process writes.

Not Celery's `inspect` broadcast, which leaves out a worker that answers late on a loaded
machine (docs/operations.md). Each heartbeat carries the worker's pool size and the tasks it
runs, at most BEAT_SECONDS old, and all are read in three short Redis reads.

Times come from the Redis server's clock, so workers on other hosts need no synchronised clock.
"""

import json
from typing import Any, cast

import redis

BEATS = "finq:workers"  # sorted set: worker name -> time of its last beat (Redis clock, s)
BEAT_SECONDS = 2.0
# A worker missing three beats in a row is gone (killed, frozen or cut off from Redis).
STALE_SECONDS = 3 * BEAT_SECONDS


def info_key(name: str) -> str:
    """What the worker announced (JSON); expires on its own when the beats stop."""
    return f"finq:workers:{name}"


def _now(r: "redis.Redis") -> float:
    seconds, micros = cast(tuple[int, int], r.time())
    return float(seconds) + micros / 1e6


def beat(r: "redis.Redis", name: str, info: dict[str, Any]) -> None:
    """Mark `name` alive now with `info`, and drop workers that stopped beating unannounced.
    One MULTI: the pruning cannot remove a beat that lands between a read and a delete."""
    now = _now(r)
    pipe = r.pipeline(transaction=True)
    pipe.zremrangebyscore(BEATS, "-inf", now - STALE_SECONDS)
    pipe.zadd(BEATS, {name: now})
    pipe.set(info_key(name), json.dumps(info), ex=int(STALE_SECONDS) + 1)
    pipe.execute()


def withdraw(r: "redis.Redis", name: str) -> None:
    """A worker shutting down cleanly leaves at once instead of after STALE_SECONDS."""
    pipe = r.pipeline(transaction=True)
    pipe.zrem(BEATS, name)
    pipe.delete(info_key(name))
    pipe.execute()


def online(r: "redis.Redis") -> dict[str, dict[str, Any]]:
    """Every worker that beat within STALE_SECONDS, with what it announced last."""
    # The redis client's stubs type every reply as sync-or-async; this client is sync.
    names = [
        _text(n)
        for n in cast(list[str | bytes], r.zrangebyscore(BEATS, _now(r) - STALE_SECONDS, "+inf"))
    ]
    if not names:
        return {}
    infos = cast(list[str | bytes | None], r.mget([info_key(n) for n in names]))
    return {name: json.loads(info) if info else {} for name, info in zip(names, infos, strict=True)}


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
