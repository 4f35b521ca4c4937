"""Runs one task record to an outcome. Only this module decides statuses on the worker side.

The rules: a record already final is never recomputed nor overwritten (at-least-once delivery
made idempotent); validation and calculation errors fail at once with their message; transient
infrastructure errors are retried by the caller with backoff; anything else fails the task
alone, with its type and message recorded and the traceback kept in the worker's log.

A result's chart is drawn by a `finq.chart` task only when someone first asks for it; one that
fails to render is remembered as "none" (an empty PNG), never failing the task. A type that
reads an upload gets its table here, looked up by id *and* the task's owner.
"""

import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from finq_core import flags, metrics
from finq_core.changes import publish_change
from finq_core.config import get_settings
from finq_core.db import encode_json, session_scope
from finq_core.models import Task, TaskChart, TaskStatus, UploadKind
from finq_core.store import (
    claim_running,
    commit_and_queue_deliveries,
    defer_pending,
    fail_lost_run,
    get_task,
    owner_running,
    result_summary,
    transition,
)
from finq_core.timeutil import utcnow
from finq_core.uploads import find_upload, upload_table
from finq_engine import CalculationError, Cancelled, PriceTable, TaskType, get_task_type
from finq_worker import charts
from finq_worker.progress import WorkerContext

log = logging.getLogger("finq.worker")

QUEUED = (TaskStatus.PENDING, TaskStatus.RETRYING)
RUNNABLE = (*QUEUED, TaskStatus.RUNNING)


def claimable(take_over: bool) -> tuple[TaskStatus, ...]:
    """The statuses a delivery may claim. A RUNNING record is taken over only by a delivery
    that continues the run: a message redelivered because its worker died (kombu marks every
    restored message `redelivered`) or this worker's own retry of it. Any other message for a
    RUNNING task is a duplicate (say the beat re-sent a task whose "queued" mark a crash lost)
    and must not start a second run beside the first."""
    return RUNNABLE if take_over else QUEUED


@dataclass
class Claim:
    type: str
    params: dict[str, Any]
    attempts: int
    max_retries: int
    priority: str = "normal"
    owner: str = ""


class NoRecord(Exception):  # noqa: N818
    """The message names a task whose record this transaction could not claim although it
    is, or may soon be, runnable: not committed yet, or committed just between the claim's
    UPDATE and the read that explains it (PostgreSQL's READ COMMITTED gives each statement
    its own snapshot; then `seen` is True). Look again later; never drop such a message at
    once, and never one whose record was seen."""

    def __init__(self, task_id: str, seen: bool = False) -> None:
        super().__init__(task_id)
        self.seen = seen


# The API sends a new task's message just before it commits the record, so a worker can get
# the message before the record is visible. It looks again after these pauses, then the
# caller (finq_worker.tasks) retries the message later instead of holding a process.
RECORD_WAITS = (0.005, 0.01, 0.02, 0.04)


def claim_when_visible(task_id: uuid.UUID, worker: str, take_over: bool = False) -> Claim | None:
    """`claim`, looking again briefly while the task's record is not visible yet."""
    for pause in RECORD_WAITS:
        try:
            return claim(task_id, worker, take_over)
        except NoRecord:
            time.sleep(pause)
    return claim(task_id, worker, take_over)


def claim(task_id: uuid.UUID, worker: str, take_over: bool = False) -> Claim | None:
    """Mark the task RUNNING; None when it is final, running elsewhere (no `take_over`),
    cancelled meanwhile, failed here because its worker was lost once too often, or PENDING
    while its owner has QUOTA_RUNNING_TASKS running: then it is deferred (see `_refused` and
    `finq_core.store.defer_pending`); `NoRecord` when it could not be claimed yet (see
    `NoRecord` and `claim_when_visible`). One write transaction; the record is read only to
    explain a refusal.
    """
    cancelled, row, given_up = False, None, False
    statuses = claimable(take_over)
    with session_scope() as session:
        if flags.cancel_requested(str(task_id)):
            cancelled = transition(
                session, task_id, statuses, TaskStatus.CANCELLED, "cancelled before start"
            )
        else:
            row = claim_running(session, task_id, statuses, worker)
        if not cancelled and row is None:
            given_up = _refused(session, task_id, statuses)
        commit_and_queue_deliveries(session)
    if cancelled or given_up:
        publish_change(task_id, (TaskStatus.CANCELLED if cancelled else TaskStatus.FAILED).value)
    if row is None:
        return None
    info = Claim(row.type, dict(row.params), row.attempts, row.max_retries, row.priority, row.owner)
    waited_since = row.scheduled_for or row.created_at
    metrics.tasks_started.labels(info.type, info.priority).inc()
    metrics.task_queue_wait.labels(info.type, info.priority).observe(
        max(0.0, (utcnow() - waited_since).total_seconds())
    )
    publish_change(task_id, TaskStatus.RUNNING.value, progress=0.0)
    return info


def _refused(session: Session, task_id: uuid.UUID, statuses: tuple[TaskStatus, ...]) -> bool:
    """Explain a claim that matched nothing: not visible yet (`NoRecord`), final or running
    elsewhere (False), or a run whose worker was lost on its last allowed attempt: the task
    is FAILED "worker lost N times" and the message dropped (True), or it would loop forever
    when every run kills its process (out of memory, a native crash). A PENDING task whose
    owner is at QUOTA_RUNNING_TASKS is handed back to the dispatcher (False: the message is
    dropped, the record keeps the task)."""
    current = session.execute(
        select(
            Task.status, Task.attempts, Task.max_retries, Task.type, Task.priority, Task.owner
        ).where(Task.id == task_id)
    ).first()
    if current is None:
        raise NoRecord(str(task_id))
    if current.status == TaskStatus.PENDING and TaskStatus.PENDING in statuses:
        cap = get_settings().quota_running_tasks
        running = owner_running(session, current.owner)
        if running >= cap:
            _defer(session, task_id, current.owner, running, cap)
            return False
    out_of_attempts = current.attempts > current.max_retries
    if current.status == TaskStatus.RUNNING and TaskStatus.RUNNING in statuses and out_of_attempts:
        lost = fail_lost_run(session, task_id)
        if lost is not None:
            log.warning("task %s: worker lost %d times; failing it", task_id, lost)
            metrics.tasks_finished.labels(current.type, current.priority, "failed").inc()
            return True
    if current.status in statuses:
        raise NoRecord(str(task_id), seen=True)
    log.info("task %s is already %s; not running it again", task_id, current.status)
    return False


def _defer(session: Session, task_id: uuid.UUID, owner: str, running: int, cap: int) -> None:
    """The owner is at their share of the workers: the task goes back to the dispatcher, which
    queues it again once one of theirs ends (no attempt counted, nothing lost)."""
    why = f"waiting: {running} of your tasks are running, at most {cap} (QUOTA_RUNNING_TASKS)"
    if defer_pending(session, task_id, why):
        metrics.quota_refusals.labels("running_tasks").inc()
        log.info("task %s of %s deferred: %s", task_id, owner, why)


def finish(
    task_id: uuid.UUID,
    status: TaskStatus,
    message: str | None = None,
    claim_info: Claim | None = None,
    **values: Any,
) -> bool:
    """Record the outcome of a run (only if the record is still RUNNING: a cancel or another
    delivery may have ended it first) and count it."""
    with session_scope() as session:
        ok = transition(session, task_id, [TaskStatus.RUNNING], status, message, **values)
        commit_and_queue_deliveries(session)
    if ok:
        if claim_info is not None:
            labels = (claim_info.type, claim_info.priority)
            if status == TaskStatus.RETRYING:
                metrics.tasks_retried.labels(*labels).inc()
            else:
                metrics.tasks_finished.labels(*labels, status.value.lower()).inc()
        extra = {"message": values["progress_message"]} if "progress_message" in values else {}
        publish_change(task_id, status.value, progress=values.get("progress"), **extra)
        if status != TaskStatus.SUCCESS:
            log.info(
                "task %s",
                status.value.lower(),
                extra={
                    "task_id": str(task_id),
                    "status": status.value,
                    "error": (values.get("error") or {}).get("message"),
                },
            )
    return ok


def error_view(exc: BaseException, message: str | None = None) -> dict[str, str]:
    return {"type": type(exc).__name__, "message": message or str(exc) or type(exc).__name__}


def validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "params"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def execute(task_id: uuid.UUID, claim_info: Claim) -> None:
    """Compute and record the outcome; transient errors propagate for the caller to retry."""
    settings = get_settings()
    task_type = get_task_type(claim_info.type)
    if task_type is None:
        finish(
            task_id,
            TaskStatus.FAILED,
            claim_info=claim_info,
            error={"type": "UnknownTaskType", "message": f"unknown type {claim_info.type!r}"},
        )
        return
    table: PriceTable | None = None
    if task_type.upload is not None:
        table = load_upload(task_type, claim_info)
        if table is None:
            upload_id = task_type.upload_id(claim_info.params)
            finish(
                task_id,
                TaskStatus.FAILED,
                claim_info=claim_info,
                error={
                    "type": "UploadNotFound",
                    "message": f"{task_type.upload.param}: upload {upload_id} not found (deleted, "
                    "or not yours)",
                },
            )
            return
    ctx = WorkerContext(task_id, settings.progress_interval_seconds)
    log.info(
        "task started",
        extra={"task_id": str(task_id), "type": claim_info.type, "attempt": claim_info.attempts},
    )
    started, cpu_started = time.perf_counter(), time.process_time()
    try:
        result = task_type.execute(claim_info.params, ctx, table, keep_arrays=True)
    except Cancelled:
        finish(task_id, TaskStatus.CANCELLED, "cancelled while running", claim_info)
        return
    except ValidationError as exc:
        finish(
            task_id,
            TaskStatus.FAILED,
            claim_info=claim_info,
            error=error_view(exc, validation_message(exc)),
        )
        return
    except (CalculationError, ValueError, ArithmeticError, MemoryError) as exc:
        finish(task_id, TaskStatus.FAILED, claim_info=claim_info, error=error_view(exc))
        return
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started
    metrics.task_runtime.labels(claim_info.type).observe(seconds)
    store_result(task_id, claim_info, result, settings.result_max_bytes, ctx.message)
    # CPU beside wall time: on a busy host the two part, and CPU is what a task costs.
    log.info(
        "task succeeded",
        extra={
            "task_id": str(task_id),
            "type": claim_info.type,
            "seconds": round(seconds, 4),
            "cpu_seconds": round(cpu_seconds, 6),
        },
    )


def store_result(
    task_id: uuid.UUID,
    claim_info: Claim,
    result: dict[str, Any],
    limit: int,
    progress_message: str | None = None,
) -> None:
    """SUCCESS with the result, encoded once to be measured and stored, at 100% with the
    calculation's last progress message (counts that agree with 100%, or none); FAILED naming
    the limit when it is bigger than RESULT_MAX_BYTES."""
    encoded = encode_json(result)
    size = len(encoded.data)
    if size > limit:
        message = (
            f"the result is {size} bytes of JSON, over the limit of {limit} bytes a task may "
            "store (RESULT_MAX_BYTES); ask for fewer elements"
        )
        error = {"type": "ResultTooLarge", "message": message}
        finish(task_id, TaskStatus.FAILED, claim_info=claim_info, error=error)
        return
    finish(
        task_id,
        TaskStatus.SUCCESS,
        claim_info=claim_info,
        result=encoded,
        result_bytes=size,
        result_summary=result_summary(result),
        progress=1.0,
        progress_message=progress_message,
    )


def draw_chart(task_id: uuid.UUID) -> bool:
    """Render and store the chart of a successful task (the `finq.chart` task). Idempotent:
    a task already drawn, or no longer SUCCESS, is left alone. A chart that cannot be drawn is
    stored empty, so the API answers "no chart" instead of asking for it again and again."""
    with session_scope() as session:
        task = get_task(session, task_id)
        if task is None or task.status != TaskStatus.SUCCESS or task.result is None:
            return False
        if session.get(TaskChart, task_id) is not None:
            return False
        claim_info = Claim(
            task.type,
            dict(task.params),
            task.attempts,
            task.max_retries,
            task.priority,
            owner=task.owner,
        )
        result = dict(task.result)
    task_type = get_task_type(claim_info.type)
    table = None
    if task_type is not None and task_type.upload is not None:
        table = load_upload(task_type, claim_info)
    png = charts.render_safely(
        claim_info.type, claim_info.params, result, table, context=(str(task_id),)
    )
    with session_scope() as session:
        if get_task(session, task_id) is not None:
            session.merge(TaskChart(task_id=task_id, png=png or b"", created_at=utcnow()))
    return png is not None


def load_upload(task_type: TaskType, claim_info: Claim) -> PriceTable | None:
    """The table the task's params name, if it exists and belongs to the task's owner."""
    with session_scope() as session:
        upload = find_upload(session, task_type.upload_id(claim_info.params), claim_info.owner)
        if upload is None or upload.kind != UploadKind.PRICES.value:
            return None
        return upload_table(upload)
