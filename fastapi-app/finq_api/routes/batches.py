"""Batches (`/api/v1/batches`): submit many items of one type, follow, page, stream results,
cancel, retry, delete. The rules live in finq_core.batches."""

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any, Literal

import redis.asyncio as aioredis
from fastapi import APIRouter, Header, HTTPException, Query, Request, Response, status
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from finq_api import API_PREFIX, stream_access
from finq_api.deps import CurrentUser, SessionDep, SettingsDep
from finq_api.errors import OUTAGE_RETRY_AFTER
from finq_api.guard import GuardedRoute, batch_body, body_limit
from finq_api.hub import HubUnavailableError, hub
from finq_api.ratelimit import SubmitLimit
from finq_api.schemas import BatchCreate, BatchItemPage, BatchOut, BatchPage
from finq_core import batch_views, batches
from finq_core.changes import batch_channel
from finq_core.config import get_settings
from finq_core.db import get_sessionmaker
from finq_core.models import TaskStatus, User

router = APIRouter(prefix="/batches", tags=["batches"], route_class=GuardedRoute)


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=BatchOut,
    responses={
        200: {"model": BatchOut, "description": "Idempotency-Key seen before: that batch"},
        403: {"description": "`priority: high` without a role allowed it"},
        413: {"description": "Body larger than BATCH_BODY_MAX_BYTES"},
        422: {
            "description": "An item is wrong: `loc` names it (items, 17, annual_rate), or "
            "`upload_id` is not the caller's upload of kind items"
        },
        429: {"description": "Over the submit rate limit or QUOTA_BATCH_ITEMS"},
        503: {"description": "Queue unavailable: nothing was recorded"},
    },
)
@body_limit(batch_body)
def submit_batch(
    body: BatchCreate,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    response: Response,
    _: SubmitLimit,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> Any:
    """Validate every item, record the batch and start it; 202 with the batch."""
    request = batches.BatchRequest(
        type=body.type,
        items=body.items,
        base=body.base,
        vary=body.vary,
        csv=body.csv,
        upload_id=str(body.upload_id) if body.upload_id is not None else None,
        priority=body.priority.value,
        max_retries=body.max_retries,
        notify=body.notify.model_dump() if body.notify is not None else None,
        idempotency_key=idempotency_key,
    )
    submitted = batches.submit(session, user, request, settings)
    view = batch_views.view(session, submitted.batch)
    location = f"{API_PREFIX}/batches/{submitted.batch.id}"
    if not submitted.created:
        out = BatchOut.model_validate(view).model_dump(mode="json")
        return JSONResponse(out, status_code=200, headers={"Location": location})
    response.headers["Location"] = location
    return view


@router.get("", response_model=BatchPage)
def list_batches(
    user: CurrentUser,
    session: SessionDep,
    status_filter: Annotated[TaskStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Any:
    """The caller's batches, newest first, with cursor pagination."""
    wanted = status_filter.value if status_filter is not None else None
    page = batch_views.page_of_batches(session, user, wanted, limit, cursor)
    return {
        "items": [batch_views.view(session, b) for b in page.batches],
        "next_cursor": page.next_cursor,
    }


@router.get("/{batch_id}", response_model=BatchOut, responses={404: {"description": "Not found"}})
def get_batch(batch_id: uuid.UUID, user: CurrentUser, session: SessionDep) -> Any:
    """Counts by status, progress, start and end, items per second so far."""
    return batch_views.view(session, batches.find_owned(session, user, batch_id))


@router.get("/{batch_id}/items", response_model=BatchItemPage)
def batch_items(
    batch_id: uuid.UUID,
    user: CurrentUser,
    session: SessionDep,
    status_filter: Annotated[TaskStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after: Annotated[int | None, Query(ge=-1)] = None,
) -> Any:
    """Items in index order: params, status, error, result; `after` pages on."""
    batch = batches.find_owned(session, user, batch_id)
    wanted = status_filter.value if status_filter is not None else None
    items, next_after = batch_views.page_of_items(session, batch, wanted, limit, after)
    return {"items": items, "next_after": next_after}


MEDIA = {"csv": "text/csv", "ndjson": "application/x-ndjson"}


def _format(request: Request, given: str | None) -> str:
    if given:
        return given
    return "csv" if "text/csv" in request.headers.get("accept", "") else "ndjson"


@router.get(
    "/{batch_id}/results",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"application/x-ndjson": {}, "text/csv": {}},
            "description": "Every item: index, status, varied params, result fields, error",
        }
    },
)
def batch_results(
    batch_id: uuid.UUID,
    request: Request,
    user: CurrentUser,
    session: SessionDep,
    fmt: Annotated[Literal["csv", "ndjson"] | None, Query(alias="format")] = None,
) -> Response:
    """The whole result set, streamed a page at a time (NDJSON, or CSV by `Accept: text/csv`
    or `?format=csv`; CSV leaves array fields out)."""
    batch = batches.find_owned(session, user, batch_id)
    chosen = _format(request, fmt)

    def body() -> Iterator[bytes]:
        with get_sessionmaker()() as own:
            rows = batch_views.csv_results if chosen == "csv" else batch_views.ndjson_results
            yield from rows(own, batch)

    return StreamingResponse(
        body(),
        media_type=MEDIA[chosen],
        headers={
            "Cache-Control": "private, no-cache",
            "Content-Disposition": f'attachment; filename="batch-{batch_id}.{chosen}"',
        },
    )


@router.post(
    "/{batch_id}/cancel", response_model=BatchOut, responses={409: {"description": "Ended"}}
)
def cancel_batch(batch_id: uuid.UUID, user: CurrentUser, session: SessionDep) -> Any:
    """Pending items cancelled at once; running chunks stop between items."""
    return batch_views.view(session, batches.cancel(session, user, batch_id))


@router.post(
    "/{batch_id}/retry",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=BatchOut,
    responses={409: {"description": "Still running, or nothing to retry"}},
)
def retry_batch(
    batch_id: uuid.UUID, user: CurrentUser, session: SessionDep, settings: SettingsDep
) -> Any:
    """The FAILED and CANCELLED items run again."""
    return batch_views.view(session, batches.retry(session, user, batch_id, settings))


@router.delete(
    "/{batch_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={409: {"description": "Still running"}},
)
def delete_batch(batch_id: uuid.UUID, user: CurrentUser, session: SessionDep) -> Response:
    """Remove an ended batch, its items and its history."""
    batches.delete_batch(session, user, batch_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# A stream re-reads the counts at most this often while chunks end, and at least this
# often otherwise (a lost publication only delays it).
SNAPSHOT_MIN_SECONDS, RESYNC_SECONDS = 0.5, 5.0
FINAL = {s.value for s in TaskStatus if s.is_final}


def _snapshot(batch_id: uuid.UUID, user: User) -> dict[str, Any]:
    with get_sessionmaker()() as session:
        view = batch_views.view(session, batches.find_owned(session, user, batch_id))
    return BatchOut.model_validate(view).model_dump(mode="json")


def _unavailable() -> HTTPException:
    return HTTPException(
        503,
        "Live updates are unavailable (Redis); poll the batch",
        {"Retry-After": OUTAGE_RETRY_AFTER},
    )


@router.get(
    "/{batch_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "`event: batch` frames"}},
)
async def batch_events(
    batch_id: uuid.UUID, request: Request, user: CurrentUser
) -> StreamingResponse:
    """The batch's counts and progress as Server-Sent Events, until it ends."""
    first = await run_in_threadpool(_snapshot, batch_id, user)
    settings = get_settings()
    try:
        lease = await stream_access.acquire(user.id, settings.streams_per_user)
    except (aioredis.RedisError, OSError):
        raise _unavailable() from None
    if lease is None:
        raise HTTPException(429, "Too many open event streams (STREAMS_PER_USER)")
    channel = batch_channel(str(batch_id))
    try:
        queue = await hub().subscribe(channel)
    except HubUnavailableError:
        await lease.release()
        raise _unavailable() from None

    async def stream() -> AsyncIterator[bytes]:
        seq, last = 1, first
        started = last_read = last_renew = time.monotonic()
        try:
            yield f"id: 1\nevent: batch\ndata: {json.dumps(first)}\n\n".encode()
            changed = False
            while last["status"] not in FINAL and not await request.is_disconnected():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(queue.get(), timeout=1.0)
                    changed = True
                now = time.monotonic()
                if now - started > settings.stream_max_seconds:
                    return
                due = now - last_read > (SNAPSHOT_MIN_SECONDS if changed else RESYNC_SECONDS)
                if not due:
                    continue
                changed = False
                last_read = now
                fresh = await run_in_threadpool(_snapshot, batch_id, user)
                if fresh != last:
                    last, seq = fresh, seq + 1
                    yield f"id: {seq}\nevent: batch\ndata: {json.dumps(last)}\n\n".encode()
                if now - last_renew > stream_access.RENEW_SECONDS:
                    last_renew = now
                    with contextlib.suppress(aioredis.RedisError, OSError):
                        await lease.renew()
        finally:
            await asyncio.shield(hub().unsubscribe(channel, queue))
            with contextlib.suppress(aioredis.RedisError, OSError):
                await asyncio.shield(lease.release())

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
