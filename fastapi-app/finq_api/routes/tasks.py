"""Task submission, listing, inspection, cancel, retry and delete (`/api/v1/tasks`)."""

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

import pydantic_core
from fastapi import APIRouter, Header, Query, Request, Response, status
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel

from finq_api import API_PREFIX
from finq_api.deps import Claims, CurrentUser, SessionDep, SettingsDep, caller
from finq_api.guard import GuardedRoute, body_limit, task_body
from finq_api.ratelimit import count_submit
from finq_api.schemas import TaskCreate, TaskEventOut, TaskOut, TaskPage, TaskSummary
from finq_core import lifecycle, listing
from finq_core.errors import Location, ResultNotFound
from finq_core.models import TaskStatus
from finq_core.result_rows import result_rows
from finq_core.row_streams import csv_stream, ndjson_stream
from finq_core.store import (
    VIEW_PARTS,
    deliveries,
    stored_result,
    summary_view,
    task_view,
    view_parts,
)

router = APIRouter(prefix="/tasks", tags=["tasks"], route_class=GuardedRoute)


def json_answer(
    model: BaseModel,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
    exclude: set[str] | None = None,
) -> Response:
    """A model encoded in the endpoint's thread. A plain `def` endpoint that returns a dict has
    it validated against its response model in another thread hop."""
    return Response(
        model.model_dump_json(exclude=exclude),
        status_code=status_code,
        media_type="application/json",
        headers=headers,
    )


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=TaskOut,
    responses={
        200: {
            "model": TaskOut,
            "description": "Idempotency-Key seen before: the task created then",
        },
        403: {"description": "`priority: high` without a role allowed it"},
        429: {"description": "Over the submit rate limit or the queued-tasks quota"},
        503: {"description": "Queue unavailable"},
    },
)
@body_limit(task_body)
def submit_task(
    body: TaskCreate,
    claims: Claims,
    session: SessionDep,
    settings: SettingsDep,
    request: Request,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> Any:
    """Validate, record and queue a task. Answers 202 with the record and a Location header.
    The busiest route makes one thread hop, not three (docs/performance.md): the caller, the
    submit limit and the answer are all done in the endpoint's thread."""
    user = caller(session, claims)
    count_submit(request, user)
    task_request = lifecycle.TaskRequest(
        type=body.type,
        params=body.params,
        priority=body.priority.value,
        run_at=body.run_at,
        delay_seconds=body.delay_seconds,
        max_retries=body.max_retries,
        notify=body.notify.model_dump() if body.notify is not None else None,
        idempotency_key=idempotency_key,
    )
    submitted = lifecycle.submit(session, user, task_request, settings)
    return json_answer(
        TaskOut.model_validate(task_view(submitted.task)),
        status_code=202 if submitted.created else 200,
        headers={"Location": f"{API_PREFIX}/tasks/{submitted.task.id}"},
    )


@router.get("", response_model=TaskPage)
def list_tasks(
    user: CurrentUser,
    session: SessionDep,
    status_filter: Annotated[TaskStatus | None, Query(alias="status")] = None,
    type_filter: Annotated[str | None, Query(alias="type", max_length=64)] = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    all_users: Annotated[bool, Query(alias="all", description="Admins only: every owner")] = False,
) -> Any:
    """The caller's tasks, newest first, with cursor pagination."""
    where = listing.TaskFilter(
        status=status_filter.value if status_filter is not None else None,
        type=type_filter,
        created_after=created_after,
        created_before=created_before,
        all_users=all_users,
    )
    page = listing.page_of_tasks(session, user, where, limit, cursor)
    items = [TaskSummary.model_validate(summary_view(t)) for t in page.tasks]
    return TaskPage(items=items, next_cursor=page.next_cursor)


@router.get(
    "/{task_id}",
    response_model=TaskOut,
    responses={
        404: {"description": "Not found"},
        422: {"description": "`include` names an unknown part"},
    },
)
def get_task(
    task_id: uuid.UUID,
    claims: Claims,
    session: SessionDep,
    include: Annotated[
        str | None,
        Query(
            max_length=100,
            description="Comma-separated parts to carry, of `params`, `result`, `deliveries` "
            "(absent: all). Parts left out are omitted from the answer, and not read; "
            "`include=` (empty) is the lean status poll.",
        ),
    ] = None,
) -> Any:
    """The record, with its notification attempts (`deliveries`); `include` chooses which of
    the big parts it carries. The status poll: one thread hop, like the submit."""
    user = caller(session, claims)
    parts = view_parts(include)
    task = lifecycle.find_owned(session, user, task_id, parts)
    view = task_view(task, parts)
    if "deliveries" in parts:
        view["deliveries"] = deliveries(session, task.id)
    return json_answer(TaskOut.model_validate(view), exclude=set(VIEW_PARTS - parts))


# Bytes of a stored result encoded and sent at a time.
RESULT_CHUNK_CHARS = 1024 * 1024
ROW_MEDIA = {"csv": "text/csv", "ndjson": "application/x-ndjson"}


def _result_format(request: Request, given: str | None) -> tuple[str, Location]:
    """The format asked for (`format`, else Accept; JSON by default) and where it was asked."""
    if given:
        return given, ("query", "format")
    accept = request.headers.get("accept", "")
    for name, media in ROW_MEDIA.items():
        if media in accept:
            return name, ("header", "accept")
    return "json", ("query", "format")


@router.get(
    "/{task_id}/result",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"application/json": {}, "text/csv": {}, "application/x-ndjson": {}},
            "description": "The whole stored result (JSON), or its array fields as rows",
        },
        404: {"description": "No such task, not yours, or no stored result"},
        422: {"description": "Rows asked of a result without arrays of one length"},
    },
)
def task_result(
    task_id: uuid.UUID,
    request: Request,
    user: CurrentUser,
    session: SessionDep,
    fmt: Annotated[
        Literal["json", "csv", "ndjson"] | None,
        Query(
            alias="format",
            description="json (default), or the result's equal-length array fields as rows: "
            "csv or ndjson (also chosen by Accept: text/csv or application/x-ndjson).",
        ),
    ] = None,
) -> Response:
    """The whole stored result of a task (what `result_url` names), as the database holds
    its JSON: sent in chunks, never decoded and encoded again. As CSV or NDJSON, one row per
    element of its arrays (finq_core.result_rows): the JSON is parsed once, and the rows are
    encoded a page at a time as they are sent."""
    lifecycle.find_owned(session, user, task_id, parts=())
    chosen, where = _result_format(request, fmt)
    text = stored_result(session, task_id)
    if text is None:
        raise ResultNotFound("This task has no stored result")
    headers = {"Cache-Control": "private, no-cache"}
    if chosen == "json":
        chunks = (
            text[i : i + RESULT_CHUNK_CHARS].encode()
            for i in range(0, len(text), RESULT_CHUNK_CHARS)
        )
        return StreamingResponse(chunks, media_type="application/json", headers=headers)
    # pydantic-core's parser, as the database layer's (finq_core.db): json.loads took 0.25 s
    # of an 11 MB result, this 0.04 s.
    table = result_rows(pydantic_core.from_json(text), where)
    del text
    body = csv_stream(table.columns, table.rows) if chosen == "csv" else ndjson_stream(table.rows)
    headers["Content-Disposition"] = f'attachment; filename="task-{task_id}.{chosen}"'
    return StreamingResponse(body, media_type=ROW_MEDIA[chosen], headers=headers)


@router.get(
    "/{task_id}/chart.png",
    response_class=Response,
    responses={
        200: {"content": {"image/png": {}}, "description": "The chart"},
        202: {"description": "Being drawn: ask again after Retry-After seconds"},
        404: {
            "description": "No such task, not yours, not successful, or no "
            "chart could be drawn for its result"
        },
        503: {"description": "The queue (Redis) is unavailable"},
    },
)
def task_chart(task_id: uuid.UUID, user: CurrentUser, session: SessionDep) -> Response:
    """The PNG chart of a successful task, drawn by a worker the first time it is asked for.

    Until it exists this answers 202 with `Retry-After`: a chart costs more CPU than most
    calculations, so it is drawn only for the results someone looks at. Concurrent requests
    queue one drawing (a Redis flag), and the chart is stored for every later request.
    """
    png = lifecycle.chart(session, user, task_id)
    if png is None:
        return JSONResponse(
            status_code=status.HTTP_202_ACCEPTED,
            content={"detail": "The chart is being drawn; ask again in a moment"},
            headers={"Retry-After": "1", "Cache-Control": "no-store"},
        )
    # private: a shared cache must never hand one user's chart to another.
    return Response(
        content=png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"}
    )


@router.get("/{task_id}/history", response_model=list[TaskEventOut])
def task_history(task_id: uuid.UUID, user: CurrentUser, session: SessionDep) -> Any:
    """Every status change of the task, oldest first."""
    lifecycle.find_owned(session, user, task_id)
    return listing.history(session, task_id)


@router.post(
    "/{task_id}/cancel",
    response_model=TaskOut,
    responses={409: {"description": "Already finished"}},
)
def cancel_task(
    task_id: uuid.UUID, user: CurrentUser, session: SessionDep, response: Response
) -> Any:
    """Pending: cancelled at once. Running: stops within one chunk (202). Finished: 409."""
    task, stopping = lifecycle.cancel(session, user, task_id)
    if stopping:
        response.status_code = status.HTTP_202_ACCEPTED
    return task_view(task)


@router.post(
    "/{task_id}/retry",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=TaskOut,
    responses={
        409: {"description": "Not failed or cancelled"},
        429: {"description": "The owner's queued-tasks quota is full"},
    },
)
def retry_task(
    task_id: uuid.UUID, user: CurrentUser, session: SessionDep, settings: SettingsDep
) -> Any:
    """A FAILED or CANCELLED task goes back to PENDING with attempts + 1."""
    return task_view(lifecycle.retry(session, user, task_id, settings))


@router.delete(
    "/{task_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={409: {"description": "Still pending or running"}},
)
def delete_task(task_id: uuid.UUID, user: CurrentUser, session: SessionDep) -> Response:
    """Remove a finished task's record and its history."""
    lifecycle.delete(session, user, task_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
