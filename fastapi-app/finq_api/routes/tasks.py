"""Task submission, listing, inspection, cancel, retry and delete (`/api/v1/tasks`)."""

import base64
import binascii
import logging
import uuid
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Query, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from finq_api.deps import CurrentUser, SessionDep, SettingsDep
from finq_api.errors import OUTAGE_RETRY_AFTER
from finq_api.ratelimit import SubmitLimit
from finq_api.schemas import (
    NotificationTargets,
    TaskCreate,
    TaskEventOut,
    TaskOut,
    TaskPage,
    TaskSummary,
)
from finq_core import broker, flags, metrics
from finq_core.changes import publish_change
from finq_core.config import Settings
from finq_core.logs import request_id_var
from finq_core.models import (
    FINAL_STATUSES,
    Role,
    Task,
    TaskChart,
    TaskDelivery,
    TaskEvent,
    TaskStatus,
    User,
)
from finq_core.notifications import TargetRefused, check_email, check_webhook_url
from finq_core.store import (
    TASKS,
    commit_and_queue_deliveries,
    deliveries,
    insert_task,
    task_view,
    transition,
)
from finq_core.timeutil import utcnow
from finq_core.uploads import find_upload
from finq_engine import get_task_type

log = logging.getLogger("finq.api")
router = APIRouter(prefix="/api/v1/tasks", tags=["tasks"])

# A task due within this margin is enqueued at once; later ones wait for the dispatcher.
DISPATCH_NOW_MARGIN = timedelta(seconds=1)


class QueueUnavailable(HTTPException):
    def __init__(self) -> None:
        super().__init__(
            status_code=503,
            detail="The task queue (Redis) is unavailable; nothing was queued. Retry shortly.",
            headers={"Retry-After": OUTAGE_RETRY_AFTER},
        )


def _invalid(*problems: tuple[tuple[str | int, ...], str]) -> RequestValidationError:
    return RequestValidationError(
        [{"loc": loc, "msg": msg, "type": "value_error"} for loc, msg in problems]
    )


def validate_params(
    type_name: str, raw: dict[str, Any], session: Session, user: User
) -> dict[str, Any]:
    """Check `params` against the type's model (finq_engine); 422 naming each wrong field.

    A type that reads an upload also gets its reference checked: the upload must exist and be
    the caller's, and the params must fit its shape (e.g. one weight per asset)."""
    task_type = get_task_type(type_name)
    if task_type is None:
        raise _invalid(
            (("body", "type"), f"unknown task type {type_name!r}; see GET /api/v1/task-types")
        )
    try:
        parsed = task_type.parse(raw)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**err, "loc": ("body", "params", *err["loc"])} for err in exc.errors()]
        ) from None
    # Store what was validated, with defaults filled in, so the worker runs exactly this.
    params: dict[str, Any] = parsed.model_dump(mode="json", by_alias=True)
    if task_type.upload is not None:
        field = task_type.upload.param
        upload = find_upload(session, task_type.upload_id(params), user.username)
        if upload is None:
            raise _invalid(
                (
                    ("body", "params", field),
                    f"upload {params.get(field)} not found; "
                    "upload a CSV with POST /api/v1/uploads and use its id",
                )
            )
        problems = task_type.upload.check(parsed, len(upload.assets))
        if problems:
            raise _invalid(*((("body", "params", name), msg) for name, msg in problems))
    return params


def validate_targets(
    targets: NotificationTargets | None, settings: Settings
) -> dict[str, str] | None:
    """Check notification targets now (422 on `notify.<field>`); the worker checks a webhook
    again before every attempt, since what a name resolves to can change."""
    if targets is None:
        return None
    problems: list[tuple[tuple[str | int, ...], str]] = []
    out: dict[str, str] = {}
    if targets.webhook_url is not None:
        loc: tuple[str | int, ...] = ("body", "notify", "webhook_url")
        if not settings.webhook_secret:
            problems.append(
                (loc, "webhooks are not enabled on this server (WEBHOOK_SECRET is not set)")
            )
        else:
            try:
                check_webhook_url(targets.webhook_url, settings.webhook_allow_private)
                out["webhook_url"] = targets.webhook_url
            except TargetRefused as exc:
                problems.append((loc, str(exc)))
    if targets.email is not None:
        loc = ("body", "notify", "email")
        if not settings.smtp_host:
            problems.append((loc, "e-mail is not enabled on this server (SMTP_HOST is not set)"))
        else:
            try:
                out["email"] = check_email(targets.email)
            except TargetRefused as exc:
                problems.append((loc, str(exc)))
    if problems:
        raise _invalid(*problems)
    return out


def find_owned(session: Session, task_id: uuid.UUID, user: User) -> Task:
    """The task if the caller may see it; 404 otherwise, exactly as if it did not exist."""
    task = session.get(Task, task_id)
    if task is None or (task.owner != user.username and user.role != Role.ADMIN):
        raise HTTPException(status_code=404, detail="Task not found")
    return task


def _send(task: Task) -> bool:
    """Put the task's message on its priority queue; False if Redis refused."""
    try:
        broker.enqueue(str(task.id), task.priority, request_id_var.get())
    except Exception as exc:
        log.error("enqueue of %s failed: %s", task.id, exc)
        return False
    return True


def _enqueue(session: Session, task: Task) -> bool:
    """Send a committed PENDING task to its queue and mark it queued; False if Redis refused.
    (A crash between the two is repaired by the beat's dispatcher; see finq_core.dispatch.)"""
    if not _send(task):
        return False
    task.enqueued_at = utcnow()
    session.execute(update(TASKS).where(TASKS.c.id == task.id).values(enqueued_at=task.enqueued_at))
    session.commit()
    return True


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=TaskOut,
    responses={
        200: {
            "model": TaskOut,
            "description": "Idempotency-Key seen before: the task created then",
        },
        503: {"description": "Queue unavailable"},
    },
)
def submit_task(
    body: TaskCreate,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    response: Response,
    _: SubmitLimit,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> Any:
    """Validate, record and queue a task. Answers 202 with the record and a Location header."""
    params = validate_params(body.type, body.params, session, user)
    targets = validate_targets(body.notify, settings)
    if idempotency_key:
        existing = _by_key(session, user.username, idempotency_key)
        if existing is not None:
            return _existing(existing)

    now = utcnow()
    run_at = body.run_at or (
        now + timedelta(seconds=body.delay_seconds) if body.delay_seconds else None
    )
    immediate = run_at is None or run_at <= now + DISPATCH_NOW_MARGIN
    values: dict[str, Any] = dict(
        id=uuid.uuid4(),
        owner=user.username,
        type=body.type,
        params=params,
        status=TaskStatus.PENDING.value,
        priority=body.priority.value,
        max_retries=(
            body.max_retries if body.max_retries is not None else settings.max_retry_attempts
        ),
        created_at=now,
        scheduled_for=run_at,
        idempotency_key=idempotency_key,
        request_id=request_id_var.get(),
        attempts=0,
        progress=0.0,
        notify=targets,
        enqueued_at=now if immediate else None,
    )
    task = Task(**values)  # the response's view; the rows are written with Core statements
    # Sent before the record is written, so the record is created already marked queued, in
    # the one transaction of the submission (the message carries only the id; a worker that
    # gets it before the commit is visible waits for the record: finq_worker.tasks). Redis
    # refusing leaves nothing behind, and the client's 503 means "nothing created"; a commit
    # that fails after the send leaves a message for no record: it is marked void, and the
    # worker drops it (or, if even Redis failed us, drops it once it has waited long enough).
    if immediate and not _send(task):
        raise QueueUnavailable()
    try:
        insert_task(session, values, f"scheduled for {run_at.isoformat()}" if run_at else "queued")
        session.commit()
    except IntegrityError:
        _void(task, immediate)
        session.rollback()
        existing = _by_key(session, user.username, idempotency_key or "")
        if existing is None:
            raise
        return _existing(existing)
    except Exception:
        _void(task, immediate)
        raise

    metrics.tasks_submitted.labels(task.type, task.priority).inc()
    log.info(
        "task submitted",
        extra={
            "task_id": str(task.id),
            "type": task.type,
            "priority": task.priority,
            "owner": task.owner,
        },
    )
    response.headers["Location"] = f"/api/v1/tasks/{task.id}"
    return task_view(task)


def _void(task: Task, sent: bool) -> None:
    """The submission's message is out but its record will never be written (a concurrent
    submission won the idempotency key, or the commit failed). A commit that raised yet did
    commit is safe too: the worker looks for the record once more before it drops a void
    message (finq_worker.tasks)."""
    if sent:
        flags.mark_void(str(task.id))


def _by_key(session: Session, owner: str, key: str) -> Task | None:
    return session.scalars(
        select(Task).where(Task.owner == owner, Task.idempotency_key == key)
    ).first()


def _existing(task: Task) -> JSONResponse:
    return JSONResponse(
        TaskOut.model_validate(task_view(task)).model_dump(mode="json"),
        status_code=200,
        headers={"Location": f"/api/v1/tasks/{task.id}"},
    )


def _encode_cursor(task: Task) -> str:
    raw = f"{task.created_at.isoformat()}|{task.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode()


def _decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        created, tid = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        return datetime.fromisoformat(created), uuid.UUID(tid)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise RequestValidationError(
            [{"loc": ("query", "cursor"), "msg": "invalid cursor", "type": "value_error"}]
        ) from None


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
    if all_users and user.role != Role.ADMIN:
        raise HTTPException(status_code=403, detail="Admin role required for all=true")
    stmt = select(Task)
    if not all_users:
        stmt = stmt.where(Task.owner == user.username)
    if status_filter is not None:
        stmt = stmt.where(Task.status == status_filter.value)
    if type_filter:
        stmt = stmt.where(Task.type == type_filter)
    if created_after:
        stmt = stmt.where(Task.created_at > created_after)
    if created_before:
        stmt = stmt.where(Task.created_at < created_before)
    if cursor:
        c_at, c_id = _decode_cursor(cursor)
        stmt = stmt.where(
            or_(Task.created_at < c_at, and_(Task.created_at == c_at, Task.id < c_id))
        )
    rows = session.scalars(
        stmt.order_by(Task.created_at.desc(), Task.id.desc()).limit(limit + 1)
    ).all()
    items = [TaskSummary.model_validate(task_view(t)) for t in rows[:limit]]
    next_cursor = _encode_cursor(rows[limit - 1]) if len(rows) > limit else None
    return TaskPage(items=items, next_cursor=next_cursor)


@router.get("/{task_id}", response_model=TaskOut, responses={404: {"description": "Not found"}})
def get_task(task_id: uuid.UUID, user: CurrentUser, session: SessionDep) -> Any:
    """The record, with its notification attempts (`deliveries`)."""
    task = find_owned(session, task_id, user)
    return {**task_view(task), "deliveries": deliveries(session, task.id)}


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
    task = find_owned(session, task_id, user)
    chart = session.get(TaskChart, task_id)
    if chart is not None:
        if not chart.png:
            raise HTTPException(status_code=404, detail="No chart could be drawn for this result")
        # private: a shared cache must never hand one user's chart to another.
        return Response(
            content=chart.png,
            media_type="image/png",
            headers={"Cache-Control": "private, max-age=3600"},
        )
    if task.status != TaskStatus.SUCCESS:
        raise HTTPException(status_code=404, detail="Only a successful task has a chart")
    try:
        if flags.request_chart(str(task_id)):
            try:
                broker.enqueue_chart(str(task_id))
            except Exception:
                flags.forget_chart_request(str(task_id))
                raise
    except Exception as exc:
        log.warning("chart of %s could not be queued: %s", task_id, exc)
        raise QueueUnavailable() from None
    return JSONResponse(
        status_code=status.HTTP_202_ACCEPTED,
        content={"detail": "The chart is being drawn; ask again in a moment"},
        headers={"Retry-After": "1", "Cache-Control": "no-store"},
    )


@router.get("/{task_id}/history", response_model=list[TaskEventOut])
def task_history(task_id: uuid.UUID, user: CurrentUser, session: SessionDep) -> Any:
    """Every status change of the task, oldest first."""
    find_owned(session, task_id, user)
    return [
        TaskEventOut(status=e.status, at=e.at, message=e.message)
        for e in session.scalars(
            select(TaskEvent).where(TaskEvent.task_id == task_id).order_by(TaskEvent.id)
        )
    ]


@router.post(
    "/{task_id}/cancel",
    response_model=TaskOut,
    responses={409: {"description": "Already finished"}},
)
def cancel_task(
    task_id: uuid.UUID, user: CurrentUser, session: SessionDep, response: Response
) -> Any:
    """Pending: cancelled at once. Running: stops within one chunk (202). Finished: 409."""
    task = find_owned(session, task_id, user)
    if task.status in FINAL_STATUSES:
        raise HTTPException(status_code=409, detail=f"Task is already {task.status}")
    try:
        flags.request_cancel(str(task_id))
    except Exception:
        if task.status == TaskStatus.RUNNING:
            raise QueueUnavailable() from None
    cancelled = transition(
        session,
        task_id,
        [TaskStatus.PENDING, TaskStatus.RETRYING],
        TaskStatus.CANCELLED,
        "cancelled by user",
    )
    commit_and_queue_deliveries(session)
    if cancelled:
        publish_change(task_id, TaskStatus.CANCELLED.value)
    else:
        response.status_code = status.HTTP_202_ACCEPTED
    session.refresh(task)
    if task.status in FINAL_STATUSES and task.status != TaskStatus.CANCELLED:
        raise HTTPException(status_code=409, detail=f"Task is already {task.status}")
    return task_view(task)


@router.post(
    "/{task_id}/retry",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=TaskOut,
    responses={409: {"description": "Not failed or cancelled"}},
)
def retry_task(task_id: uuid.UUID, user: CurrentUser, session: SessionDep) -> Any:
    """A FAILED or CANCELLED task goes back to PENDING with attempts + 1."""
    task = find_owned(session, task_id, user)
    if task.status not in (TaskStatus.FAILED, TaskStatus.CANCELLED):
        raise HTTPException(
            status_code=409,
            detail=f"Only FAILED or CANCELLED tasks can be retried; this one is {task.status}",
        )
    try:
        flags.clear_cancel(str(task_id))
    except Exception:
        raise QueueUnavailable() from None
    ok = transition(
        session,
        task_id,
        [TaskStatus.FAILED, TaskStatus.CANCELLED],
        TaskStatus.PENDING,
        "retried by user",
        attempts=task.attempts + 1,
        started_at=None,
        finished_at=None,
        progress=0.0,
        progress_message=None,
        result=None,
        error=None,
        scheduled_for=None,
        worker=None,
        enqueued_at=None,
    )
    if not ok:
        raise HTTPException(status_code=409, detail="Task changed meanwhile; try again")
    session.commit()
    session.refresh(task)
    if not _enqueue(session, task):
        transition(
            session,
            task_id,
            [TaskStatus.PENDING],
            TaskStatus.FAILED,
            "retry could not be queued",
            error={
                "type": "QueueUnavailable",
                "message": "the queue was unavailable when the retry was asked",
            },
        )
        commit_and_queue_deliveries(session)
        raise QueueUnavailable() from None
    publish_change(task_id, TaskStatus.PENDING.value)
    return task_view(task)


@router.delete(
    "/{task_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={409: {"description": "Still pending or running"}},
)
def delete_task(task_id: uuid.UUID, user: CurrentUser, session: SessionDep) -> Response:
    """Remove a finished task's record and its history."""
    task = find_owned(session, task_id, user)
    if task.status not in FINAL_STATUSES:
        raise HTTPException(status_code=409, detail=f"Task is {task.status}; cancel it first")
    for table in (TaskEvent, TaskChart, TaskDelivery):
        session.execute(delete(table).where(table.task_id == task_id))
    session.execute(
        delete(Task).where(Task.id == task_id, Task.status.in_([s.value for s in FINAL_STATUSES]))
    )
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
