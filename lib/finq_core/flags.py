"""Per-task flags kept in Redis so every replica sees them: cancel requests (of tasks and of
batches), void messages, chart requests."""

import contextlib

import redis

from finq_core.redis_client import get_redis

CANCEL_TTL_SECONDS = 24 * 3600
# A submission whose record was never written, although its message was already sent, is
# marked void so that the worker drops that message at once instead of looking for the record
# for a minute (finq_worker.tasks). Kept longer than any message can wait in a queue.
VOID_TTL_SECONDS = 24 * 3600
# A chart asked for is queued once; if its drawing was lost, a request after this asks again.
CHART_REQUEST_TTL_SECONDS = 60


def cancel_key(task_id: str) -> str:
    return f"finq:cancel:{task_id}"


def batch_cancel_key(batch_id: str) -> str:
    return f"finq:cancel:batch:{batch_id}"


def request_batch_cancel(batch_id: str) -> None:
    get_redis().set(batch_cancel_key(batch_id), "1", ex=CANCEL_TTL_SECONDS)


def clear_batch_cancel(batch_id: str) -> None:
    get_redis().delete(batch_cancel_key(batch_id))


def batch_cancel_requested(batch_id: str) -> bool:
    return bool(get_redis().exists(batch_cancel_key(batch_id)))


def void_key(task_id: str) -> str:
    return f"finq:void:{task_id}"


def chart_request_key(task_id: str) -> str:
    return f"finq:chart-requested:{task_id}"


def request_cancel(task_id: str) -> None:
    get_redis().set(cancel_key(task_id), "1", ex=CANCEL_TTL_SECONDS)


def clear_cancel(task_id: str) -> None:
    get_redis().delete(cancel_key(task_id))


def cancel_requested(task_id: str) -> bool:
    return bool(get_redis().exists(cancel_key(task_id)))


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
