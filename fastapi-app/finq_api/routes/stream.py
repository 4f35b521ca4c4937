"""Server-Sent Events of one task's changes (`GET /api/v1/tasks/{id}/events`).

Any replica can serve a stream: the worker and the API publish every change on a Redis
channel. The stream subscribes first (through the process's one pub/sub connection,
`finq_api.hub`), then sends the current record, so no change can fall between the two; it
re-reads the record every few seconds in case a message was lost, and ends when the task
reaches a final status or after STREAM_MAX_SECONDS. A user has at most STREAMS_PER_USER open
(`finq_api.stream_access`); a browser opens one with a single-use ticket.
"""

import asyncio
import contextlib
import json
import time
import uuid
from asyncio import Queue
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from finq_api import API_PREFIX, stream_access
from finq_api.deps import CurrentUser, StreamUser
from finq_api.errors import OUTAGE_RETRY_AFTER
from finq_api.guard import GuardedRoute
from finq_api.hub import RESYNC, Change, HubUnavailableError, hub
from finq_api.schemas import StreamTicket
from finq_core import changes
from finq_core.config import get_settings
from finq_core.db import get_sessionmaker
from finq_core.lifecycle import find_owned
from finq_core.models import FINAL_STATUSES, User

router = APIRouter(prefix="/tasks", tags=["tasks"], route_class=GuardedRoute)

HEARTBEAT_SECONDS = 15.0
RESYNC_SECONDS = 5.0
# When a user over the stream cap may try again: a stream's lease outlives a dead replica
# by at most this (finq_api.stream_access), most end sooner.
STREAM_CAP_RETRY_AFTER = 30


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


def _unavailable() -> HTTPException:
    return HTTPException(
        status_code=503,
        detail=f"Live updates are unavailable (Redis); poll GET {API_PREFIX}/tasks/{{id}} "
        "meanwhile",
        headers={"Retry-After": OUTAGE_RETRY_AFTER},
    )


def _owned(task_id: uuid.UUID, user: User) -> None:
    with get_sessionmaker()() as session:
        find_owned(session, user, task_id)


@router.post(
    "/{task_id}/events/ticket",
    status_code=201,
    response_model=StreamTicket,
    responses={404: {"description": "Task not found"}},
)
async def stream_ticket(task_id: uuid.UUID, user: CurrentUser, response: Response) -> StreamTicket:
    """A single-use ticket opening one stream of this task within STREAM_TICKET_SECONDS:
    `GET .../events?ticket=...`, for EventSource, which cannot send an Authorization header."""
    await run_in_threadpool(_owned, task_id, user)
    ttl = get_settings().stream_ticket_seconds
    response.headers["Cache-Control"] = "no-store"
    ticket = await stream_access.issue_ticket(user.id, user.token_version, task_id, ttl)
    return StreamTicket(ticket=ticket, expires_in=ttl)


async def _open(task_id: uuid.UUID, user: User) -> tuple[stream_access.Lease, Queue[Change]]:
    """Count the stream against its user (429 over STREAMS_PER_USER), then subscribe: the
    caller reads the record after this, so no change falls between the two."""
    cap = get_settings().streams_per_user
    try:
        lease = await stream_access.acquire(user.id, cap)
    except (aioredis.RedisError, OSError):
        raise _unavailable() from None
    if lease is None:
        raise HTTPException(
            status_code=429,
            detail=f"Too many open event streams: at most {cap} per user (STREAMS_PER_USER); "
            "close one, or poll the task",
            headers={"Retry-After": str(int(STREAM_CAP_RETRY_AFTER))},
        )
    try:
        return lease, await hub().subscribe(changes.channel(str(task_id)))
    except HubUnavailableError:
        await _release(lease)
        raise _unavailable() from None


async def _release(lease: stream_access.Lease) -> None:
    with contextlib.suppress(aioredis.RedisError, OSError):  # its lease then runs out alone
        await asyncio.shield(lease.release())


@router.get(
    "/{task_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "description": "`event: task` frames until a final status, or STREAM_MAX_SECONDS",
        },
        401: {
            "description": "No valid token, or a ticket already used, expired or for another task"
        },
        429: {"description": "The user has STREAMS_PER_USER streams open"},
        503: {"description": "Live updates unavailable (Redis)"},
    },
)
async def task_events(task_id: uuid.UUID, request: Request, user: StreamUser) -> StreamingResponse:
    """Status and progress of a task as Server-Sent Events, until it ends."""
    lease, queue = await _open(task_id, user)
    channel = changes.channel(str(task_id))

    async def close() -> None:
        await asyncio.shield(hub().unsubscribe(channel, queue))
        await _release(lease)

    try:
        first = await run_in_threadpool(_snapshot, task_id, user)
    except BaseException:
        await close()
        raise
    follow = _Follower(task_id, user, lease, queue, get_settings().stream_max_seconds)

    async def stream() -> AsyncIterator[bytes]:
        try:
            yield _frame(first, 1)
            async for frame in follow.frames(first, request):
                yield frame
        finally:
            await close()

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


class _Follower:
    """One stream's loop: changes from the hub, a re-read of the record every RESYNC_SECONDS
    (or when the hub says changes were lost), a heartbeat, its lease renewed, its end."""

    def __init__(
        self,
        task_id: uuid.UUID,
        user: User,
        lease: stream_access.Lease,
        queue: Queue[Change],
        max_seconds: int,
    ) -> None:
        self.task_id, self.user, self.lease, self.queue = task_id, user, lease, queue
        self.max_seconds = max_seconds

    async def frames(self, last: dict[str, Any], request: Request) -> AsyncIterator[bytes]:
        seq = 1
        started = last_sync = last_beat = last_renew = time.monotonic()
        while last["status"] not in FINAL_STATUSES:
            now = time.monotonic()
            if now - started >= self.max_seconds or await request.is_disconnected():
                return  # a clean end: the client reconnects (the page with a new ticket)
            fresh = await self._next(last, resync=now - last_sync > RESYNC_SECONDS)
            if fresh is not None:
                last_sync = now
                if fresh != last:
                    last, seq = fresh, seq + 1
                    last_beat = now
                    yield _frame(last, seq)
            if now - last_beat > HEARTBEAT_SECONDS:
                last_beat = now
                yield b": keep-alive\n\n"
            if now - last_renew > stream_access.RENEW_SECONDS:
                last_renew = now
                with contextlib.suppress(aioredis.RedisError, OSError):
                    await self.lease.renew()

    async def _next(self, last: dict[str, Any], resync: bool) -> dict[str, Any] | None:
        """The record as it now is, or None when nothing changed within a second."""
        change: Change | None
        try:
            change = await asyncio.wait_for(self.queue.get(), timeout=1.0)
        except TimeoutError:
            change = RESYNC if resync else None
        if change is None:
            return None
        if change is RESYNC:
            return await run_in_threadpool(_snapshot, self.task_id, self.user)
        return {**last, **change}
