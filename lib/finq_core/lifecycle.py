"""The lifecycle of a task record as callers ask for it: submit, cancel, retry, delete, chart.

One protocol for every caller (the API's routes, schedules, the beat's firing, batches):
- a task's parameters are checked against its type's model (and its upload, if it reads one)
  and its notification targets against their rules, before anything is written
  (finq_core.checks, with the priority right and the owner's quotas);
- an immediate task's message is sent before its record is committed, so the record is created
  already marked queued in the one transaction of the submission (the message carries only the
  id; a worker that gets it before the commit is visible waits for the record:
  finq_worker.tasks). Redis refusing leaves nothing behind; a commit that fails after the send
  leaves a message for no record: it is marked void, and the worker drops it;
- an Idempotency-Key returns the task first created with it, also to the loser of a race;
- only an unfinished task can be cancelled, only a FAILED or CANCELLED one retried, only a
  finished one deleted (with its history, chart and deliveries);
- a task that is not the caller's (unless an admin asks) does not exist for the caller;
- per-user quotas are counted here, for every caller alike: tasks waiting (QUOTA_QUEUED_TASKS,
  at each submission, retry and schedule run) and schedules (QUOTA_SCHEDULES); `priority:
  "high"` is a right of the roles in HIGH_PRIORITY_ROLES. A schedule may not run more often
  than SCHEDULE_MIN_INTERVAL. (The submit rate limit is counted by the API per request and by
  the beat per run: finq_core.ratelimit.)

Refusals are finq_core.errors exceptions; nothing here knows about HTTP.
"""

import logging
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import redis
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from finq_core import broker, flags, metrics
from finq_core.changes import publish_change
from finq_core.checks import (
    check_cron,
    check_priority,
    check_schedule_quota,
    check_storage_quota,
    check_task_quota,
    check_template,
)
from finq_core.config import Settings, get_settings
from finq_core.errors import (
    ChartNotFound,
    InvalidInput,
    Problem,
    QueueUnavailable,
    TaskNotFound,
    TaskStateConflict,
)
from finq_core.logs import request_id_var
from finq_core.models import (
    FINAL_STATUSES,
    Priority,
    Role,
    Schedule,
    Task,
    TaskChart,
    TaskStatus,
    User,
)
from finq_core.scheduling import next_fire
from finq_core.store import (
    TASKS,
    VIEW_PARTS,
    WITHOUT_RESULT,
    commit_and_queue_deliveries,
    delete_finished,
    insert_task,
    transition,
    view_options,
)
from finq_core.timeutil import as_utc, utcnow

log = logging.getLogger("finq.api")

# A task due within this margin is enqueued at once; later ones wait for the dispatcher.
DISPATCH_NOW_MARGIN = timedelta(seconds=1)


@dataclass(frozen=True)
class TaskRequest:
    """What a caller asks to run. `notify`: the notification targets as given (a field left
    out is None); `run_at` or `delay_seconds` delays the start."""

    type: str
    params: dict[str, Any]
    priority: str = Priority.NORMAL.value
    run_at: datetime | None = None
    delay_seconds: float | None = None
    max_retries: int | None = None
    notify: Mapping[str, str | None] | None = None
    idempotency_key: str | None = None


@dataclass(frozen=True)
class Submitted:
    task: Task
    created: bool  # False: the Idempotency-Key's first task, created earlier


def task_values(
    *,
    owner: str,
    type_name: str,
    params: dict[str, Any],
    priority: str,
    max_retries: int,
    targets: dict[str, str] | None,
    now: datetime,
    run_at: datetime | None,
    idempotency_key: str | None,
    enqueued_at: datetime | None = None,
    request_id: str | None = None,
    schedule_id: uuid.UUID | None = None,
) -> dict[str, Any]:
    """Every column of a new PENDING task (store.insert_task writes them)."""
    return dict(
        id=uuid.uuid4(),
        owner=owner,
        type=type_name,
        params=params,
        status=TaskStatus.PENDING.value,
        priority=priority,
        max_retries=max_retries,
        created_at=now,
        scheduled_for=run_at,
        schedule_id=schedule_id,
        idempotency_key=idempotency_key,
        request_id=request_id,
        attempts=0,
        progress=0.0,
        notify=targets,
        enqueued_at=enqueued_at,
    )


def start_time(request: TaskRequest, now: datetime, settings: Settings) -> datetime | None:
    """When the task may start (None: now), in UTC. `run_at` and `delay_seconds` must lie
    within RUN_AT_MAX_DAYS of now: a start years away only holds a record (and a queued-tasks
    quota slot), and one outside UTC's range (year 1 or 9999 at an offset) cannot be stored."""
    horizon = timedelta(days=settings.run_at_max_days)
    if request.run_at is None:
        if not request.delay_seconds:
            return None
        if request.delay_seconds > horizon.total_seconds():
            raise InvalidInput(
                [
                    Problem(
                        ("body", "delay_seconds"),
                        f"must be at most {settings.run_at_max_days} days "
                        f"({int(horizon.total_seconds())} s; RUN_AT_MAX_DAYS)",
                    )
                ]
            )
        return now + timedelta(seconds=request.delay_seconds)
    run_at = as_utc(request.run_at)
    if run_at is None or abs(run_at - now) > horizon:
        raise InvalidInput(
            [
                Problem(
                    ("body", "run_at"),
                    f"must lie within {settings.run_at_max_days} days of now (RUN_AT_MAX_DAYS)",
                )
            ]
        )
    return run_at


def submit(session: Session, owner: User, request: TaskRequest, settings: Settings) -> Submitted:
    """Check, record and (unless delayed) queue a task; commits. QueueUnavailable when Redis
    refused an immediate task's message: then nothing was recorded. NotAllowed for a priority
    the owner's role lacks, QuotaExceeded when the owner's queued tasks fill their quota (a
    repeated Idempotency-Key still gets its task)."""
    params, targets = check_template(
        session, owner, request.type, request.params, request.notify, settings
    )
    check_priority(owner, request.priority, settings)
    now = utcnow()
    run_at = start_time(request, now, settings)
    key = request.idempotency_key
    if key:
        existing = _by_key(session, owner.username, key)
        if existing is not None:
            return Submitted(existing, created=False)
    check_task_quota(session, owner.username, settings)
    check_storage_quota(session, owner, settings)

    immediate = run_at is None or run_at <= now + DISPATCH_NOW_MARGIN
    values = task_values(
        owner=owner.username,
        type_name=request.type,
        params=params,
        priority=request.priority,
        max_retries=(
            request.max_retries if request.max_retries is not None else settings.max_retry_attempts
        ),
        targets=targets,
        now=now,
        run_at=run_at,
        idempotency_key=key,
        enqueued_at=now if immediate else None,
        request_id=request_id_var.get(),
    )
    task = Task(**values)  # the caller's view; the rows are written with Core statements
    if immediate and not _send(task):
        raise QueueUnavailable()
    try:
        insert_task(session, values, f"scheduled for {run_at.isoformat()}" if run_at else "queued")
        session.commit()
    except IntegrityError:
        _void(task, immediate)
        session.rollback()
        existing = _by_key(session, owner.username, key or "")
        if existing is None:
            raise
        return Submitted(existing, created=False)
    except Exception:  # any failed commit loses the record: void its message, then re-raise
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
    return Submitted(task, created=True)


@dataclass(frozen=True)
class ScheduleRequest:
    """A recurring task: its template (as TaskRequest's fields) and a cron expression (UTC)."""

    name: str
    cron: str
    type: str
    params: dict[str, Any]
    priority: str = Priority.NORMAL.value
    max_retries: int | None = None
    notify: Mapping[str, str | None] | None = None


def create_schedule(
    session: Session, owner: User, request: ScheduleRequest, settings: Settings
) -> Schedule:
    """Check and store a schedule, first run at the cron's next time; commits. Its runs are
    tasks submitted by the beat under the same quotas (finq_core.dispatch)."""
    now = utcnow()
    cron = check_cron(request.cron, now, settings)
    params, targets = check_template(
        session, owner, request.type, request.params, request.notify, settings
    )
    check_priority(owner, request.priority, settings)
    check_schedule_quota(session, owner.username, settings)
    schedule = Schedule(
        id=uuid.uuid4(),
        owner=owner.username,
        name=request.name,
        cron=cron,
        type=request.type,
        params=params,
        priority=request.priority,
        created_at=now,
        max_retries=(
            request.max_retries if request.max_retries is not None else settings.max_retry_attempts
        ),
        next_run_at=next_fire(cron, now),
        notify=targets,
    )
    session.add(schedule)
    session.commit()
    return schedule


def _send(task: Task) -> bool:
    """Put the task's message on its priority queue; False if Redis refused."""
    try:
        broker.enqueue(str(task.id), task.priority, request_id_var.get())
    except broker.UNAVAILABLE as exc:
        log.error("enqueue of %s failed: %s", task.id, exc)
        return False
    return True


def _void(task: Task, sent: bool) -> None:
    """The submission's message is out but its record will never be written (a concurrent
    submission won the idempotency key, or the commit failed). A commit that raised yet did
    commit is safe too: the worker looks for the record once more before it drops a void
    message (finq_worker.tasks)."""
    if sent:
        flags.mark_void(str(task.id))


def _by_key(session: Session, owner: str, key: str) -> Task | None:
    return session.scalars(
        select(Task)
        .options(*WITHOUT_RESULT)
        .where(Task.owner == owner, Task.idempotency_key == key)
    ).first()


def find_owned(
    session: Session, user: User, task_id: uuid.UUID, parts: Collection[str] = VIEW_PARTS
) -> Task:
    """The task if the caller may see it, loaded for a view of `parts` (store.view_parts);
    TaskNotFound otherwise, exactly as if it did not exist."""
    task = session.get(Task, task_id, options=view_options(parts))
    if task is None or (task.owner != user.username and user.role != Role.ADMIN):
        raise TaskNotFound()
    return task


def chart(session: Session, user: User, task_id: uuid.UUID) -> bytes | None:
    """A successful task's chart PNG, or None while it is being drawn. The first request queues
    one drawing (a Redis flag keeps concurrent requests from queueing more)."""
    task = find_owned(session, user, task_id)
    stored = session.get(TaskChart, task_id)
    if stored is not None:
        if not stored.png:
            raise ChartNotFound("No chart could be drawn for this result")
        return stored.png
    if task.status != TaskStatus.SUCCESS:
        raise ChartNotFound("Only a successful task has a chart")
    try:
        if flags.request_chart(str(task_id)):
            try:
                broker.enqueue_chart(str(task_id))
            except BaseException:  # not queued, whatever the reason: the next request asks again
                flags.forget_chart_request(str(task_id))
                raise
    except broker.UNAVAILABLE as exc:
        log.warning("chart of %s could not be queued: %s", task_id, exc)
        raise QueueUnavailable() from None
    return None


def cancel(session: Session, user: User, task_id: uuid.UUID) -> tuple[Task, bool]:
    """Pending or retrying: cancelled at once. Running: asked to stop (it stops within one
    chunk). Returns the task and whether it is still stopping; TaskStateConflict when it has
    finished, QueueUnavailable when a running task could not be asked (Redis)."""
    task = find_owned(session, user, task_id)
    if task.status in FINAL_STATUSES:
        raise TaskStateConflict(f"Task is already {task.status}")
    try:
        flags.request_cancel(str(task_id))
    except redis.RedisError:
        # A queued task is cancelled by its record alone; a running one only hears the flag.
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
    session.refresh(task)
    if task.status in FINAL_STATUSES and task.status != TaskStatus.CANCELLED:
        raise TaskStateConflict(f"Task is already {task.status}")
    return task, not cancelled


def retry(
    session: Session, user: User, task_id: uuid.UUID, settings: Settings | None = None
) -> Task:
    """A FAILED or CANCELLED task goes back to PENDING with attempts + 1 and is queued (within
    its owner's queued-tasks quota); if the queue refuses, it is FAILED again ("retry could not
    be queued") and QueueUnavailable raised."""
    task = find_owned(session, user, task_id)
    if task.status not in (TaskStatus.FAILED, TaskStatus.CANCELLED):
        raise TaskStateConflict(
            f"Only FAILED or CANCELLED tasks can be retried; this one is {task.status}"
        )
    settings = settings or get_settings()
    check_task_quota(session, task.owner, settings)
    check_storage_quota(session, user, settings)
    try:
        flags.clear_cancel(str(task_id))
    except redis.RedisError:
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
        result_bytes=None,
        result_summary=None,
        error=None,
        scheduled_for=None,
        worker=None,
        enqueued_at=None,
    )
    if not ok:
        raise TaskStateConflict("Task changed meanwhile; try again")
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
        raise QueueUnavailable()
    publish_change(task_id, TaskStatus.PENDING.value)
    return task


def _enqueue(session: Session, task: Task) -> bool:
    """Send a committed PENDING task to its queue and mark it queued; False if Redis refused.
    (A crash between the two is repaired by the beat's dispatcher; see finq_core.dispatch.)"""
    if not _send(task):
        return False
    task.enqueued_at = utcnow()
    session.execute(update(TASKS).where(TASKS.c.id == task.id).values(enqueued_at=task.enqueued_at))
    session.commit()
    return True


def delete(session: Session, user: User, task_id: uuid.UUID) -> None:
    """Remove a finished task's record with its history, chart and deliveries;
    TaskStateConflict while it is still active."""
    task = find_owned(session, user, task_id)
    if task.status not in FINAL_STATUSES:
        raise TaskStateConflict(f"Task is {task.status}; cancel it first")
    delete_finished(session, [task_id])
    session.commit()
