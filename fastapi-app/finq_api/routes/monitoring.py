"""What the queues and workers are doing (`/api/v1/monitoring`)."""

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from sqlalchemy import func, select
from starlette.concurrency import run_in_threadpool

from finq_api.deps import CurrentUser, SessionDep
from finq_core import events
from finq_core.broker import QUEUES, celery_app
from finq_core.models import Role, Task, TaskStatus
from finq_core.timeutil import utcnow

router = APIRouter(prefix="/api/v1/monitoring", tags=["monitoring"])
INSPECT_TIMEOUT = 0.5


def workers() -> list[dict[str, Any]]:
    """Workers answering within INSPECT_TIMEOUT, with the task ids they are running."""
    replies = celery_app.control.inspect(timeout=INSPECT_TIMEOUT).active() or {}
    return [
        {"name": name, "active": len(tasks),
         "tasks": [t.get("args", [None])[0] for t in tasks]}
        for name, tasks in sorted(replies.items())
    ]


@router.get("/queues")
async def queues(
    user: CurrentUser, session: SessionDep,
    all_users: Annotated[bool, Query(alias="all", description="Admins only: every owner")] = False,
) -> dict[str, Any]:
    """Queue depths, workers online with their active tasks, task counts by status, and the
    tasks completed and failed in the last minute (the caller's, or everyone's for admins)."""
    if all_users and user.role != Role.ADMIN:
        raise HTTPException(status_code=403, detail="Admin role required for all=true")
    depths = await run_in_threadpool(events.queue_depths, QUEUES)
    online = await run_in_threadpool(workers)

    def counts() -> tuple[dict[str, int], int, int]:
        scope = [] if all_users else [Task.owner == user.username]
        by_status = dict(session.execute(
            select(Task.status, func.count()).where(*scope).group_by(Task.status)).all())
        since = utcnow() - timedelta(minutes=1)
        recent = dict(session.execute(
            select(Task.status, func.count())
            .where(*scope, Task.finished_at >= since,
                   Task.status.in_([TaskStatus.SUCCESS.value, TaskStatus.FAILED.value]))
            .group_by(Task.status)).all())
        return ({s.value: int(by_status.get(s.value, 0)) for s in TaskStatus},
                int(recent.get(TaskStatus.SUCCESS.value, 0)),
                int(recent.get(TaskStatus.FAILED.value, 0)))

    by_status, completed, failed = await run_in_threadpool(counts)
    return {
        "queues": depths,
        "workers": online,
        "workers_online": len(online),
        "tasks_by_status": by_status,
        "last_minute": {"completed": completed, "failed": failed},
    }
