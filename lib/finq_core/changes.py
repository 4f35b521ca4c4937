"""Live change publications: a task's new status or progress, published on the Redis channel
`finq:task:<id>` (a batch's on `finq:batch:<id>`) by whoever made the change, read by the live
views (SSE) of every replica.
Best effort: a lost publication only delays a live view, the record is the truth."""

import contextlib
import json
import uuid
from typing import Any

import redis

from finq_core.flags import cancel_key
from finq_core.models import TaskStatus
from finq_core.redis_client import get_redis


def channel(task_id: str) -> str:
    return f"finq:task:{task_id}"


def batch_channel(batch_id: str) -> str:
    return f"finq:batch:{batch_id}"


def publish_batch_change(batch_id: uuid.UUID, status: str, **extra: Any) -> None:
    """A batch's status changed, or a chunk of its items ended (`extra`: that chunk's counts)."""
    with contextlib.suppress(redis.RedisError):
        get_redis().publish(batch_channel(str(batch_id)), _message(batch_id, status, extra))


def _message(task_id: uuid.UUID, status: str, extra: dict[str, Any]) -> str:
    """The payload of a change publication (what the live views read), encoded."""
    return json.dumps({"id": str(task_id), "status": status, **extra}, default=str)


def publish_change(task_id: uuid.UUID, status: str, **extra: Any) -> None:
    with contextlib.suppress(redis.RedisError):
        get_redis().publish(channel(str(task_id)), _message(task_id, status, extra))


def publish_progress(task_id: uuid.UUID, fraction: float, message: str | None) -> bool | None:
    """Publish a running task's progress and read its cancel flag in one round trip (a
    calculation makes one of each per chunk). Whether a cancel was requested; None when Redis
    failed: nothing is known then, and the caller's next own cancel check will say so."""
    extra = {"progress": fraction, "message": message}
    try:
        pipe = get_redis().pipeline(transaction=False)
        pipe.publish(channel(str(task_id)), _message(task_id, TaskStatus.RUNNING.value, extra))
        pipe.exists(cancel_key(str(task_id)))
        return bool(pipe.execute()[1])
    except redis.RedisError:
        return None
