"""Task change notifications and cancel flags, kept in Redis so every replica sees them."""

import contextlib
import json
from functools import lru_cache
from typing import Any

import redis

from finq_core.config import get_settings

CANCEL_TTL_SECONDS = 24 * 3600
# A submission whose record was never written, although its message was already sent, is
# marked void so that the worker drops that message at once instead of looking for the record
# for a minute (finq_worker.tasks). Kept longer than any message can wait in a queue.
VOID_TTL_SECONDS = 24 * 3600
# A chart asked for is queued once; if its drawing was lost, a request after this asks again.
CHART_REQUEST_TTL_SECONDS = 60


def channel(task_id: str) -> str:
    return f"finq:task:{task_id}"


def cancel_key(task_id: str) -> str:
    return f"finq:cancel:{task_id}"


def chart_request_key(task_id: str) -> str:
    return f"finq:chart-requested:{task_id}"


@lru_cache
def get_redis() -> "redis.Redis":
    """One client (with its own connection pool) per process; created lazily after fork."""
    return redis.Redis.from_url(
        get_settings().redis_url,
        socket_timeout=5,
        socket_connect_timeout=3,
        health_check_interval=30,
        decode_responses=True,
    )


def _message(payload: dict[str, Any]) -> str:
    return json.dumps(payload, default=str)


def publish(task_id: str, payload: dict[str, Any]) -> None:
    """Best effort: a lost notification only delays a live view, the record is the truth."""
    with contextlib.suppress(redis.RedisError):
        get_redis().publish(channel(task_id), _message(payload))


def publish_and_check_cancel(task_id: str, payload: dict[str, Any]) -> bool | None:
    """A running task's progress publication and its cancel check in one round trip (a
    calculation makes one of each per chunk). None when Redis failed: nothing is known then,
    and the caller's next own cancel check will say so."""
    try:
        pipe = get_redis().pipeline(transaction=False)
        pipe.publish(channel(task_id), _message(payload))
        pipe.exists(cancel_key(task_id))
        return bool(pipe.execute()[1])
    except redis.RedisError:
        return None


def queue_depths(queues: list[str]) -> dict[str, int]:
    """Messages waiting per Celery queue (kombu keeps priority sub-lists beside each list)."""
    r = get_redis()
    pipe = r.pipeline()
    for name in queues:
        for key in (name, *(f"{name}\x06\x16{step}" for step in (3, 6, 9))):
            pipe.llen(key)
    counts = pipe.execute()
    return {name: int(sum(counts[i * 4 : (i + 1) * 4])) for i, name in enumerate(queues)}


def request_cancel(task_id: str) -> None:
    get_redis().set(cancel_key(task_id), "1", ex=CANCEL_TTL_SECONDS)


def clear_cancel(task_id: str) -> None:
    get_redis().delete(cancel_key(task_id))


def cancel_requested(task_id: str) -> bool:
    return bool(get_redis().exists(cancel_key(task_id)))


def void_key(task_id: str) -> str:
    return f"finq:void:{task_id}"


def mark_void(task_id: str) -> None:
    """Best effort: unmarked, the message is still dropped, only later."""
    with contextlib.suppress(redis.RedisError):
        get_redis().set(void_key(task_id), "1", ex=VOID_TTL_SECONDS)


def is_void(task_id: str) -> bool:
    """False when Redis cannot tell: looking for the record again is the safe side."""
    try:
        return bool(get_redis().exists(void_key(task_id)))
    except redis.RedisError:
        return False


def request_chart(task_id: str) -> bool:
    """True for the one request that should queue the drawing of this chart."""
    return bool(
        get_redis().set(chart_request_key(task_id), "1", nx=True, ex=CHART_REQUEST_TTL_SECONDS)
    )


def forget_chart_request(task_id: str) -> None:
    with contextlib.suppress(redis.RedisError):
        get_redis().delete(chart_request_key(task_id))
