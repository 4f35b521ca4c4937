"""What the queues and workers are doing (`/api/v1/monitoring`)."""

import uuid
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from finq_api.deps import CurrentUser, SessionDep
from finq_api.guard import GuardedRoute
from finq_core import presence
from finq_core.broker import ALL_QUEUES, queue_depths
from finq_core.models import Role, Task, TaskEvent, TaskStatus, User
from finq_core.redis_client import get_redis
from finq_core.timeutil import utcnow

router = APIRouter(prefix="/monitoring", tags=["monitoring"], route_class=GuardedRoute)


def workers() -> list[dict[str, Any]]:
    """Workers with a live heartbeat and what each is running (finq_core.presence): three short
    Redis reads, at most presence.BEAT_SECONDS old, and no broadcast to wait for."""
    return [
        {
            "name": name,
            "active": int(info.get("active", 0)),
            "slots": int(info.get("slots", 0)),
            "tasks": list(info.get("tasks", [])),
        }
        for name, info in sorted(presence.online(get_redis()).items())
    ]


def own_work(session: Session, user: User, online: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What a plain user may see of the workers: those running one of their tasks, with only
    those tasks. Other owners' task ids, and the hosts running them, stay hidden."""
    running = {t: _as_uuid(t) for w in online for t in w["tasks"]}
    ids = [u for u in running.values() if u is not None]
    if not ids:
        return []
    mine = set(
        session.scalars(select(Task.id).where(Task.owner == user.username, Task.id.in_(ids)))
    )
    session.commit()  # end the read transaction (see finq_api.deps)
    visible = []
    for w in online:
        tasks = [t for t in w["tasks"] if running[t] in mine]
        if tasks:
            visible.append({"name": w["name"], "active": len(tasks), "tasks": tasks})
    return visible


def _as_uuid(value: object) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


@router.get("/queues")
async def queues(
    user: CurrentUser,
    session: SessionDep,
    all_users: Annotated[bool, Query(alias="all", description="Admins only: every owner")] = False,
) -> dict[str, Any]:
    """Queue depths, workers online with their active tasks, task counts by status, and the
    tasks completed and failed in the last minute (the caller's, or everyone's for admins).
    Admins see every worker and what it runs; a user only the workers running their tasks."""
    if all_users and user.role != Role.ADMIN:
        raise HTTPException(status_code=403, detail="Admin role required for all=true")
    depths = await run_in_threadpool(queue_depths, list(ALL_QUEUES))
    online = await run_in_threadpool(workers)
    count_online = len(online)
    if user.role != Role.ADMIN:
        online = await run_in_threadpool(own_work, session, user, online)

    def counts() -> tuple[dict[str, int], int, int]:
        scope = [] if all_users else [Task.owner == user.username]
        by_status = dict(
            session.execute(
                select(Task.status, func.count()).where(*scope).group_by(Task.status)
            ).all()
        )
        since = utcnow() - timedelta(minutes=1)
        recent = dict(
            session.execute(
                select(Task.status, func.count())
                .where(
                    *scope,
                    Task.finished_at >= since,
                    Task.status.in_([TaskStatus.SUCCESS.value, TaskStatus.FAILED.value]),
                )
                .group_by(Task.status)
            ).all()
        )
        return (
            {s.value: int(by_status.get(s.value, 0)) for s in TaskStatus},
            int(recent.get(TaskStatus.SUCCESS.value, 0)),
            int(recent.get(TaskStatus.FAILED.value, 0)),
        )

    by_status, completed, failed = await run_in_threadpool(counts)
    return {
        "queues": depths,
        "workers": online,
        "workers_online": count_online,
        "tasks_by_status": by_status,
        "last_minute": {"completed": completed, "failed": failed},
    }


WINDOWS = {"1m": 60, "5m": 300, "15m": 900}
MAX_SAMPLES = 100_000


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None}
    ordered = sorted(values)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 4)

    return {"p50": pick(0.50), "p95": pick(0.95), "p99": pick(0.99)}


@router.get("/metrics")
async def summary(
    user: CurrentUser,
    session: SessionDep,
    all_users: Annotated[bool, Query(alias="all", description="Admins only: every owner")] = False,
) -> dict[str, Any]:
    """Headline figures without Prometheus: throughput and error rate over the last 1, 5 and
    15 minutes, submit-to-done latency percentiles, queue depths, worker utilisation and
    retries. Computed from the task records, so they agree with the database."""
    if all_users and user.role != Role.ADMIN:
        raise HTTPException(status_code=403, detail="Admin role required for all=true")
    now = utcnow()
    scope = [] if all_users else [Task.owner == user.username]

    def from_db() -> dict[str, Any]:
        since = now - timedelta(seconds=max(WINDOWS.values()))
        rows = session.execute(
            select(Task.status, Task.created_at, Task.started_at, Task.finished_at)
            .where(*scope, Task.finished_at >= since)
            .order_by(Task.finished_at.desc())
            .limit(MAX_SAMPLES)
        ).all()
        retries = (
            session.execute(
                select(TaskEvent.at)
                .join(Task, Task.id == TaskEvent.task_id)
                .where(*scope, TaskEvent.status == TaskStatus.RETRYING.value, TaskEvent.at >= since)
            )
            .scalars()
            .all()
        )
        out: dict[str, Any] = {}
        for name, seconds in WINDOWS.items():
            start = now - timedelta(seconds=seconds)
            done = [r for r in rows if r.finished_at >= start]
            ok = sum(r.status == TaskStatus.SUCCESS.value for r in done)
            failed = sum(r.status == TaskStatus.FAILED.value for r in done)
            latency = [
                (r.finished_at - r.created_at).total_seconds()
                for r in done
                if r.status == TaskStatus.SUCCESS.value
            ]
            out[name] = {
                "completed": ok,
                "failed": failed,
                "cancelled": sum(r.status == TaskStatus.CANCELLED.value for r in done),
                "throughput_per_s": round(ok / seconds, 4),
                "error_rate": round(failed / (ok + failed), 4) if ok + failed else 0.0,
                "latency_seconds": _percentiles(latency),
                "retries": sum(1 for at in retries if at >= start),
            }
        return out

    windows = await run_in_threadpool(from_db)
    depths = await run_in_threadpool(queue_depths, list(ALL_QUEUES))
    online = await run_in_threadpool(workers)
    busy = sum(w["active"] for w in online)
    slots = sum(w["slots"] for w in online)
    return {
        "windows": windows,
        "queues": depths,
        "workers": {
            "online": len(online),
            "busy_slots": busy,
            "slots": slots,
            "utilisation": round(busy / slots, 4) if slots else 0.0,
        },
    }
