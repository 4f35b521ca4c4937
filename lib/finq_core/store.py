"""Task records and their status history: every transition goes through here.

Transitions are conditional updates (`WHERE status IN ...`), so two deliveries of the same
message, or a cancel racing a completion, can never both win: the loser's UPDATE returns no row.

A final status of a task with `notify` is remembered on the session; its committer uses
`commit_and_queue_deliveries`, which queues the deliveries after the commit, never before (a
delivery must read the final status; a rollback notifies nobody). A plain commit of such a
session is refused in tests and logged as an error elsewhere (`_refuse_plain_commit`).
"""

import logging
import uuid
from collections.abc import Collection, Iterable, Sequence
from datetime import datetime
from functools import lru_cache
from itertools import pairwise
from typing import Any

import numpy as np
from sqlalchemy import (
    Row,
    Table,
    Text,
    Update,
    and_,
    bindparam,
    case,
    cast,
    delete,
    event,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session, defer

from finq_core import broker
from finq_core.config import get_settings
from finq_core.db import session_scope
from finq_core.errors import InvalidInput, Problem
from finq_core.models import (
    FINAL_STATUSES,
    DeliveryStatus,
    Task,
    TaskChart,
    TaskDelivery,
    TaskEvent,
    TaskStatus,
    User,
)
from finq_core.notifications import TARGET_FIELDS
from finq_core.timeutil import utcnow

log = logging.getLogger("finq.store")
PENDING_DELIVERIES = "finq_pending_deliveries"  # session.info key: (task id, status, targets)
LATE_DELIVERIES = "finq_late_deliveries"  # the same, left by a plain commit (see the guard)


# Where the whole stored result of a task is read (finq_api's GET .../result).
RESULT_URL = "/api/v1/tasks/{}/result"


def result_summary(result: dict[str, Any]) -> dict[str, Any]:
    """The scalar fields of a result: what a view carries of one too big to inline."""
    return {k: v for k, v in result.items() if not isinstance(v, list | dict | np.ndarray)}


def result_view(task: Task, with_result: bool = True) -> dict[str, Any]:
    """The result as a task view carries it: whole up to RESULT_INLINE_MAX_BYTES; above, only
    its scalar fields, `result_truncated` and the link to the whole (`result_url`). The whole
    is never read from the database for a view that does not carry it; `with_result=False`
    leaves `result` out (its size and link stay)."""
    size = task.result_bytes
    truncated = size is not None and size > get_settings().result_inline_max_bytes
    carried: dict[str, Any] = {}
    if with_result:
        carried["result"] = task.result_summary if truncated else task.result
    return {
        **carried,
        "result_truncated": truncated,
        "result_bytes": size,
        "result_url": RESULT_URL.format(task.id) if size is not None else None,
    }


# The parts of a task view that can be megabytes, which GET of one task may leave out
# (`?include=`): params, the result (its size and link stay), notification attempts.
VIEW_PARTS = frozenset({"params", "result", "deliveries"})


def view_parts(include: str | None) -> frozenset[str]:
    """The parts a comma-separated `include` names (None: every part); InvalidInput on
    `include` for a name that is none of them."""
    if include is None:
        return VIEW_PARTS
    names = {name.strip() for name in include.split(",")} - {""}
    unknown = sorted(names - VIEW_PARTS)
    if unknown:
        raise InvalidInput(
            [
                Problem(
                    ("query", "include"),
                    f"unknown part {', '.join(map(repr, unknown))}; "
                    f"include names some of {', '.join(sorted(VIEW_PARTS))}",
                )
            ]
        )
    return frozenset(names)


def view_options(parts: Collection[str]) -> tuple[Any, ...]:
    """Loader options of a task for a view of these parts: what it leaves out is not read."""
    if "result" in parts and "params" in parts:
        return WITHOUT_RESULT
    deferred = [defer(Task.result)]
    if "result" not in parts:
        deferred.append(defer(Task.result_summary))
    if "params" not in parts:
        deferred.append(defer(Task.params))
    return tuple(deferred)


def task_view(task: Task, parts: Collection[str] = VIEW_PARTS) -> dict[str, Any]:
    """The public JSON shape of a task record (load it with `view_options(parts)`): params
    and the result only when `parts` names them."""
    result = result_view(task, "result" in parts)
    return {
        "id": str(task.id),
        "owner": task.owner,
        "type": task.type,
        **({"params": task.params} if "params" in parts else {}),
        "status": task.status,
        "priority": task.priority,
        "progress": task.progress,
        "progress_message": task.progress_message,
        **result,
        "error": task.error,
        "attempts": task.attempts,
        "max_retries": task.max_retries,
        "created_at": task.created_at,
        "scheduled_for": task.scheduled_for,
        "started_at": task.started_at,
        "finished_at": task.finished_at,
        "worker": task.worker,
        "idempotency_key": task.idempotency_key,
        "notify": task.notify,
    }


# The columns of a task listing (TaskSummary): never params nor result, which can be megabytes.
SUMMARY_COLUMNS = (
    Task.id,
    Task.type,
    Task.status,
    Task.priority,
    Task.progress,
    Task.created_at,
    Task.started_at,
    Task.finished_at,
    Task.attempts,
    Task.error,
    Task.result_bytes,
)


def summary_view(task: Task) -> dict[str, Any]:
    """A task in a listing, from the `SUMMARY_COLUMNS` alone."""
    return {column.key: getattr(task, column.key) for column in SUMMARY_COLUMNS}


def delivery_view(d: TaskDelivery) -> dict[str, Any]:
    return {
        "channel": d.channel,
        "target": d.target,
        "task_status": d.task_status,
        "attempt": d.attempt,
        "status": d.status,
        "http_status": d.http_status,
        "error": d.error,
        "at": d.at,
    }


def deliveries(session: Session, task_id: uuid.UUID) -> list[dict[str, Any]]:
    """Every notification attempt of a task, oldest first."""
    rows = session.scalars(
        select(TaskDelivery).where(TaskDelivery.task_id == task_id).order_by(TaskDelivery.id)
    )
    return [delivery_view(d) for d in rows]


def add_event(
    session: Session,
    task_id: uuid.UUID,
    status: str,
    message: str | None = None,
    at: datetime | None = None,
) -> None:
    """Record an event with the unit of work (flushed after a task added in the same session)."""
    session.add(TaskEvent(task_id=task_id, status=status, message=message, at=at or utcnow()))


# New tasks and transitions are Core statements built once with bound parameters, not the
# ORM: these rows are never loaded as objects here, and building a statement costs more than
# running it (docs/performance.md).
TASKS: Table = Task.__table__  # type: ignore[assignment]
EVENTS: Table = TaskEvent.__table__  # type: ignore[assignment]
_C = TASKS.c
_TASK_COLUMNS = frozenset(_C.keys())
_INSERT_TASK = insert(TASKS)
_INSERT_EVENT = insert(EVENTS)
_BY_ID_AND_STATUS = (
    _C.id == bindparam("task_id"),
    _C.status.in_(bindparam("from_statuses", expanding=True)),
)
# A manual retry counted the attempt when asked (it cleared started_at); every other start
# (first runs, transient retries, redeliveries after a lost worker) counts it here.
_COUNTED_ALREADY = and_(_C.attempts > 0, _C.started_at.is_(None))
# A RUNNING record is taken over only by a delivery continuing a run whose worker was lost,
# and only while it has attempts left: a task that kills its process on every run must stop.
_ATTEMPTS_LEFT = or_(_C.status != TaskStatus.RUNNING.value, _C.attempts <= _C.max_retries)
_RUNNING = TASKS.alias("running")
# How many of the row's owner's tasks are RUNNING (few rows match: ix_tasks_status).
owner_running_now = (
    select(func.count())
    .select_from(_RUNNING)
    .where(_RUNNING.c.owner == _C.owner, _RUNNING.c.status == TaskStatus.RUNNING.value)
    .scalar_subquery()
)
# A PENDING record starts only while its owner has fewer than QUOTA_RUNNING_TASKS running; a
# retry (RETRYING) or a take-over (RUNNING) continues a run already admitted. Counted, not
# locked: concurrent claims on PostgreSQL may pass the cap by the number in flight.
_UNDER_RUNNING_CAP = or_(
    _C.status != TaskStatus.PENDING.value, owner_running_now < bindparam("running_cap")
)
_CLAIM = (
    update(TASKS)
    .where(*_BY_ID_AND_STATUS, _ATTEMPTS_LEFT, _UNDER_RUNNING_CAP)
    .values(
        status=TaskStatus.RUNNING.value,
        worker=bindparam("worker_name"),
        started_at=bindparam("now"),
        progress=0.0,
        progress_message=None,
        error=None,
        attempts=case((_COUNTED_ALREADY, _C.attempts), else_=_C.attempts + 1),
    )
    .returning(
        _C.type,
        _C.params,
        _C.attempts,
        _C.max_retries,
        _C.priority,
        _C.owner,
        _C.scheduled_for,
        _C.created_at,
    )
)
_PROGRESS = (
    update(TASKS)
    .where(_C.id == bindparam("task_id"), _C.status == TaskStatus.RUNNING.value)
    .values(progress=bindparam("fraction"), progress_message=bindparam("text"))
)


@lru_cache(maxsize=64)
def _transition_stmt(columns: tuple[str, ...]) -> Update:
    """The transition UPDATE setting `columns` (a handful of combinations in practice).
    Parameters are named `set_<column>`: a column's own name is reserved for SQLAlchemy."""
    return (
        update(TASKS)
        .where(*_BY_ID_AND_STATUS)
        .values({name: bindparam(f"set_{name}") for name in columns})
        .returning(_C.notify, _C.owner)
    )


def count_result_bytes(session: Session, owner: str, change: int) -> None:
    """Add `change` to the owner's stored-results counter (users.result_bytes), in the
    transaction that stores or deletes the results."""
    if change:
        session.execute(
            update(User)
            .where(User.username == owner)
            .values(result_bytes=User.result_bytes + change)
            .execution_options(synchronize_session=False)
        )


def recount_result_bytes(session: Session) -> None:
    """Every user's counter set to the sum it counts: repairs any drift (the beat, hourly)."""
    session.execute(
        update(User)
        .values(
            result_bytes=select(func.coalesce(func.sum(_C.result_bytes), 0))
            .where(_C.owner == User.username)
            .scalar_subquery()
        )
        .execution_options(synchronize_session=False)
    )


def insert_event(
    session: Session, task_id: uuid.UUID, status: str, message: str | None, at: datetime
) -> None:
    session.execute(
        _INSERT_EVENT, {"task_id": task_id, "status": status, "message": message, "at": at}
    )


def insert_task(session: Session, values: dict[str, Any], message: str) -> None:
    """Write a new task row (every column in `values`) and its first event."""
    # Executed with parameters, an INSERT ignores keys that are not columns: refuse them.
    if unknown := values.keys() - _TASK_COLUMNS:
        raise ValueError(f"not columns of tasks: {sorted(unknown)}")
    session.execute(_INSERT_TASK, values)
    insert_event(session, values["id"], values["status"], message, values["created_at"])


def transition(
    session: Session,
    task_id: uuid.UUID,
    from_statuses: Iterable[str],
    to_status: TaskStatus,
    message: str | None = None,
    **values: Any,
) -> bool:
    """Move a task to `to_status` if it is in one of `from_statuses`; record the event.

    Returns False (and changes nothing) when another actor moved it first. One statement:
    the UPDATE returns the task's `notify` for a final status (SQLite >= 3.35, PostgreSQL).
    """
    now = utcnow()
    if to_status.is_final:
        values.setdefault("finished_at", now)
    if "status" in values:
        raise TypeError("transition() sets status from to_status")
    values["status"] = to_status.value
    stmt = _transition_stmt(tuple(sorted(values)))
    params = {f"set_{name}": value for name, value in values.items()}
    params.update(task_id=task_id, from_statuses=[str(s) for s in from_statuses])
    row = session.execute(stmt, params).first()
    if row is None:
        return False
    insert_event(session, task_id, to_status.value, message, now)
    count_result_bytes(session, row.owner, values.get("result_bytes") or 0)
    if to_status.is_final and row.notify:
        session.info.setdefault(PENDING_DELIVERIES, []).append(
            (str(task_id), to_status.value, dict(row.notify))
        )
    return True


def set_progress(
    session: Session, task_id: uuid.UUID, fraction: float, message: str | None
) -> None:
    """Store a running task's progress (no event: progress is not a transition), with a
    prebuilt Core UPDATE: it runs several times a second per task."""
    session.execute(_PROGRESS, {"task_id": task_id, "fraction": fraction, "text": message})


def claim_running(
    session: Session,
    task_id: uuid.UUID,
    from_statuses: Iterable[str],
    worker: str,
    running_cap: int | None = None,
) -> Row[Any] | None:
    """Move a task to RUNNING on `worker` and return what running it needs, in one UPDATE ...
    RETURNING (the attempt counted in SQL, see _COUNTED_ALREADY); None when it is in none of
    `from_statuses`, or PENDING while its owner has `running_cap` tasks running
    (QUOTA_RUNNING_TASKS by default; see `defer_pending`)."""
    now = utcnow()
    row = session.execute(
        _CLAIM,
        {
            "task_id": task_id,
            "worker_name": worker,
            "now": now,
            "from_statuses": [str(s) for s in from_statuses],
            "running_cap": running_cap or get_settings().quota_running_tasks,
        },
    ).first()
    if row is not None:
        insert_event(
            session, task_id, TaskStatus.RUNNING.value, f"attempt {row.attempts} on {worker}", now
        )
    return row


_DEFER = (
    update(TASKS)
    .where(_C.id == bindparam("task_id"), _C.status == TaskStatus.PENDING.value)
    .values(enqueued_at=None, scheduled_for=bindparam("now"), progress_message=bindparam("why"))
)


def defer_pending(session: Session, task_id: uuid.UUID, why: str) -> bool:
    """Hand a PENDING task whose claim found its owner at QUOTA_RUNNING_TASKS back to the beat's
    dispatcher: not queued (`enqueued_at` cleared), due now, `why` as its progress message. No
    attempt is counted and no event written; the dispatcher queues it again once its owner
    has room (finq_core.dispatch.dispatch_due). False when it is no longer PENDING."""
    params = {"task_id": task_id, "now": utcnow(), "why": why}
    return bool(session.execute(_DEFER, params).rowcount)  # type: ignore[attr-defined]


def owner_running(session: Session, owner: str) -> int:
    """How many of the owner's tasks are RUNNING."""
    count = select(func.count()).where(_C.owner == owner, _C.status == TaskStatus.RUNNING.value)
    return int(session.scalar(count) or 0)


def lost_runs(session: Session, task_id: uuid.UUID) -> int:
    """How many runs since the task was last queued ended with their worker lost, the current
    RUNNING one included: each RUNNING event followed directly by another RUNNING (a delivery
    that took the record over) is one."""
    statuses = list(
        session.scalars(
            select(EVENTS.c.status).where(EVENTS.c.task_id == task_id).order_by(EVENTS.c.id)
        )
    )
    pending = [i for i, status in enumerate(statuses) if status == TaskStatus.PENDING.value]
    since = statuses[pending[-1] if pending else 0 :]
    running = TaskStatus.RUNNING.value
    return 1 + sum(1 for a, b in pairwise(since) if a == b == running)


def fail_lost_run(session: Session, task_id: uuid.UUID) -> int | None:
    """Give up a RUNNING task whose worker was lost on its last allowed attempt: FAILED
    "worker lost N times". Returns N, or None when the task is no longer RUNNING."""
    lost = lost_runs(session, task_id)
    message = f"worker lost {lost} times"
    ok = transition(
        session,
        task_id,
        [TaskStatus.RUNNING],
        TaskStatus.FAILED,
        message,
        error={"type": "WorkerLost", "message": message},
    )
    return lost if ok else None


def commit_and_queue_deliveries(session: Session) -> None:
    """Commit, then queue the deliveries of the final statuses this commit made durable. The
    commit of every change that may end a notified task goes through here."""
    pending = session.info.pop(PENDING_DELIVERIES, None)
    session.commit()
    _queue_deliveries(pending or ())


def _queue_deliveries(pending: Iterable[tuple[str, str, dict[str, Any]]]) -> None:
    """Queue each task's deliveries; one that cannot be queued is recorded as a failed attempt
    on its task, where the user looks for deliveries, and the others still go."""
    for task_id, status, targets in pending:
        try:
            broker.enqueue_deliveries(task_id, status, targets)
        except broker.UNAVAILABLE as exc:
            log.error("could not queue the deliveries of task %s: %s", task_id, exc)
            _record_unqueued(task_id, status, targets)
        except Exception:  # after the commit: the change stands, so log and carry on
            log.exception("could not queue the deliveries of task %s", task_id)
            _record_unqueued(task_id, status, targets)


class UnqueuedDeliveriesError(RuntimeError):
    """A plain commit of a session whose final transitions wait for their deliveries."""


@event.listens_for(Session, "before_commit")
def _refuse_plain_commit(session: Session) -> None:
    """Deliveries left on a session at commit mean a caller committed a final status with a
    plain commit. Loud in tests; elsewhere an error in the log, and they are queued anyway."""
    pending = session.info.pop(PENDING_DELIVERIES, None)
    if not pending:
        return
    tasks = ", ".join(task_id for task_id, _, _ in pending)
    message = f"plain commit of final statuses with deliveries: {tasks}"
    if get_settings().app_env == "test":
        raise UnqueuedDeliveriesError(message + " (use store.commit_and_queue_deliveries)")
    log.error(message)
    session.info[LATE_DELIVERIES] = pending


@event.listens_for(Session, "after_commit")
def _queue_late_deliveries(session: Session) -> None:
    """The guard's fallback outside tests: a plain commit's deliveries still go."""
    _queue_deliveries(session.info.pop(LATE_DELIVERIES, ()))


@event.listens_for(Session, "after_rollback")
def _forget_pending_deliveries(session: Session) -> None:
    session.info.pop(PENDING_DELIVERIES, None)
    session.info.pop(LATE_DELIVERIES, None)


def _record_unqueued(task_id: str, status: str, targets: dict[str, Any]) -> None:
    try:
        with session_scope() as s:
            for channel, field in TARGET_FIELDS.items():
                if targets.get(field):
                    s.add(
                        TaskDelivery(
                            task_id=uuid.UUID(task_id),
                            channel=channel,
                            target=targets[field],
                            task_status=status,
                            attempt=0,
                            status=DeliveryStatus.FAILED.value,
                            error="could not be queued: the queue (Redis) was unavailable",
                        )
                    )
    except Exception as exc:  # best effort after the commit: logged, never raised to the caller
        log.error("could not record the unqueued notifications of %s: %s", task_id, exc)


def delete_finished(session: Session, ids: Sequence[uuid.UUID]) -> None:
    """Delete these tasks, if finished, with their history, charts and deliveries. The task
    rows go first, so a task retried meanwhile keeps its row and its history alike."""
    rows = session.execute(
        delete(Task)
        .where(Task.id.in_(ids), Task.status.in_([s.value for s in FINAL_STATUSES]))
        .returning(Task.id, Task.owner, Task.result_bytes)
    ).all()
    freed: dict[str, int] = {}
    for row in rows:
        freed[row.owner] = freed.get(row.owner, 0) + (row.result_bytes or 0)
    for owner, size in sorted(freed.items()):
        count_result_bytes(session, owner, -size)
    if gone := [row.id for row in rows]:
        for table in (TaskEvent, TaskChart, TaskDelivery):
            session.execute(delete(table).where(table.task_id.in_(gone)))


def get_task(session: Session, task_id: uuid.UUID) -> Task | None:
    return session.get(Task, task_id)


# Loads a task for its view: the result is read only if the view carries it whole.
WITHOUT_RESULT = (defer(Task.result),)


def stored_result(session: Session, task_id: uuid.UUID) -> str | None:
    """The task's whole stored result as the database holds its JSON text, not decoded."""
    text: str | None = session.scalar(
        select(cast(_C.result, Text)).where(_C.id == task_id, _C.result_bytes.is_not(None))
    )
    return text
