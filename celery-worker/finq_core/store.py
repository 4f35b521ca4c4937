"""Task records and their status history: every transition goes through here.

Transitions are conditional updates (`WHERE status IN ...`), so two deliveries of the same
message, or a cancel racing a completion, can never both win: the loser sees rowcount 0.
"""

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from finq_core import events
from finq_core.models import Task, TaskEvent, TaskStatus
from finq_core.timeutil import utcnow


def task_view(task: Task) -> dict[str, Any]:
    """The public JSON shape of a task record."""
    return {
        "id": str(task.id),
        "owner": task.owner,
        "type": task.type,
        "params": task.params,
        "status": task.status,
        "priority": task.priority,
        "progress": task.progress,
        "progress_message": task.progress_message,
        "result": task.result,
        "error": task.error,
        "attempts": task.attempts,
        "max_retries": task.max_retries,
        "created_at": task.created_at,
        "scheduled_for": task.scheduled_for,
        "started_at": task.started_at,
        "finished_at": task.finished_at,
        "worker": task.worker,
        "idempotency_key": task.idempotency_key,
    }


def add_event(session: Session, task_id: uuid.UUID, status: str, message: str | None = None,
              at: datetime | None = None) -> None:
    session.add(TaskEvent(task_id=task_id, status=status, message=message, at=at or utcnow()))


def transition(
    session: Session,
    task_id: uuid.UUID,
    from_statuses: Iterable[str],
    to_status: TaskStatus,
    message: str | None = None,
    **values: Any,
) -> bool:
    """Move a task to `to_status` if it is in one of `from_statuses`; record the event.

    Returns False (and changes nothing) when another actor moved it first.
    """
    now = utcnow()
    if to_status.is_final:
        values.setdefault("finished_at", now)
    stmt = (
        update(Task)
        .where(Task.id == task_id, Task.status.in_([str(s) for s in from_statuses]))
        .values(status=to_status.value, **values)
        .execution_options(synchronize_session=False)
    )
    changed = session.execute(stmt).rowcount == 1  # type: ignore[attr-defined]
    if changed:
        add_event(session, task_id, to_status.value, message, at=now)
    return changed


def notify(task_id: uuid.UUID, status: str, **extra: Any) -> None:
    events.publish(str(task_id), {"id": str(task_id), "status": status, **extra})


def get_task(session: Session, task_id: uuid.UUID) -> Task | None:
    return session.get(Task, task_id)


def lock_task(session: Session, task_id: uuid.UUID) -> Task | None:
    return session.scalars(select(Task).where(Task.id == task_id).with_for_update()).first()
