"""Server-Sent Events of one task's changes (`GET /api/v1/tasks/{id}/events`).

Any replica can serve a stream: the worker and the API publish every change on a Redis
channel. The stream subscribes first (on a connection borrowed from the process's pool), then
sends the current record, so no change can fall between the two; it re-reads the record every
few seconds in case a message was lost, and ends when the task reaches a final status.
"""

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from functools import lru_cache
from typing import Any

import redis.asyncio as aioredis
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from finq_api import API_PREFIX
from finq_api.deps import StreamUser
from finq_api.errors import OUTAGE_RETRY_AFTER
from finq_api.guard import GuardedRoute
from finq_core import changes
from finq_core.config import get_settings
from finq_core.db import get_sessionmaker
from finq_core.lifecycle import find_owned
from finq_core.models import FINAL_STATUSES, User

router = APIRouter(prefix="/tasks", tags=["tasks"], route_class=GuardedRoute)

HEARTBEAT_SECONDS = 15.0
RESYNC_SECONDS = 5.0
MAX_STREAM_SECONDS = 3600.0


def _snapshot(task_id: uuid.UUID, user: User) -> dict[str, Any]:
    with get_sessionmaker()() as session:
        task = find_owned(session, user, task_id)
        return {
            "id": str(task.id),
            "status": task.status,
            "progress": task.progress,
            "message": task.progress_message,
        }


def _frame(payload: dict[str, Any], seq: int) -> bytes:
    return f"id: {seq}\nevent: task\ndata: {json.dumps(payload)}\n\n".encode()


@lru_cache
def _redis() -> aioredis.Redis:
    """One client (connection pool) per API process: a stream borrows a connection for its
    subscription and gives it back, instead of connecting to Redis anew for every stream."""
    return aioredis.from_url(get_settings().redis_url, decode_responses=True)


@router.get(
    "/{task_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "description": "`event: task` frames until a final status",
        },
        503: {"description": "Live updates unavailable (Redis)"},
    },
)
async def task_events(task_id: uuid.UUID, request: Request, user: StreamUser) -> StreamingResponse:
    """Status and progress of a task as Server-Sent Events, until it ends."""
    pubsub = _redis().pubsub()

    async def close() -> None:
        with contextlib.suppress(Exception):  # closing a broken connection may fail
            await asyncio.shield(pubsub.aclose())

    try:
        # Subscribe first, then read the record (404 before streaming starts): no change can
        # fall between the two.
        await pubsub.subscribe(changes.channel(str(task_id)))
        first = await run_in_threadpool(_snapshot, task_id, user)
    except (aioredis.RedisError, OSError):
        await close()
        raise HTTPException(
            status_code=503,
            detail=f"Live updates are unavailable (Redis); poll GET {API_PREFIX}/tasks/{{id}} "
            "meanwhile",
            headers={"Retry-After": OUTAGE_RETRY_AFTER},
        ) from None
    except BaseException:
        await close()
        raise

    async def stream() -> AsyncIterator[bytes]:
        last, seq = first, 1
        try:
            yield _frame(last, seq)
            started = last_sync = last_beat = time.monotonic()
            while last["status"] not in FINAL_STATUSES:
                now = time.monotonic()
                if now - started > MAX_STREAM_SECONDS or await request.is_disconnected():
                    return
                msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if msg is not None:
                    last = {**last, **json.loads(msg["data"])}
                    seq += 1
                    yield _frame(last, seq)
                    last_beat = now
                elif now - last_sync > RESYNC_SECONDS:
                    last_sync = now
                    fresh = await run_in_threadpool(_snapshot, task_id, user)
                    if fresh != last:
                        last = fresh
                        seq += 1
                        yield _frame(last, seq)
                if now - last_beat > HEARTBEAT_SECONDS:
                    last_beat = now
                    yield b": keep-alive\n\n"
        except (aioredis.RedisError, OSError):
            # Redis went away: end the stream; the client reconnects and gets a snapshot.
            return
        finally:
            await close()

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
