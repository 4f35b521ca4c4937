"""Recurring tasks (`/api/v1/schedules`): stored in the database, fired by the beat process."""

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Response, status
from sqlalchemy import select

from finq_api.deps import CurrentUser, SessionDep, SettingsDep
from finq_api.guard import GuardedRoute, body_limit, task_body
from finq_api.schemas import ScheduleCreate, ScheduleOut
from finq_core import lifecycle
from finq_core.models import Role, Schedule

router = APIRouter(prefix="/schedules", tags=["schedules"], route_class=GuardedRoute)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ScheduleOut,
    responses={
        403: {"description": "`priority: high` without a role allowed it"},
        429: {"description": "The schedules quota (QUOTA_SCHEDULES) is full"},
    },
)
@body_limit(task_body)
def create_schedule(
    body: ScheduleCreate, user: CurrentUser, session: SessionDep, settings: SettingsDep
) -> Any:
    """Run a task template on a cron schedule (UTC), from the next matching time on, at most
    once every SCHEDULE_MIN_INTERVAL seconds."""
    request = lifecycle.ScheduleRequest(
        name=body.name,
        cron=body.cron,
        type=body.type,
        params=body.params,
        priority=body.priority.value,
        max_retries=body.max_retries,
        notify=body.notify.model_dump() if body.notify is not None else None,
    )
    return lifecycle.create_schedule(session, user, request, settings)


@router.get("", response_model=list[ScheduleOut])
def list_schedules(
    user: CurrentUser,
    session: SessionDep,
    all_users: Annotated[bool, Query(alias="all", description="Admins only: every owner")] = False,
) -> Any:
    if all_users and user.role != Role.ADMIN:
        raise HTTPException(status_code=403, detail="Admin role required for all=true")
    stmt = select(Schedule).order_by(Schedule.created_at)
    if not all_users:
        stmt = stmt.where(Schedule.owner == user.username)
    return session.scalars(stmt).all()


def _owned(session: SessionDep, user: CurrentUser, schedule_id: uuid.UUID) -> Schedule:
    schedule = session.get(Schedule, schedule_id)
    if schedule is None or (schedule.owner != user.username and user.role != Role.ADMIN):
        raise HTTPException(status_code=404, detail="Schedule not found")
    return schedule


@router.get("/{schedule_id}", response_model=ScheduleOut)
def get_schedule(schedule_id: uuid.UUID, user: CurrentUser, session: SessionDep) -> Any:
    """One schedule, with its skipped runs (skipped_count, last_skipped_at, last_skip_reason)."""
    return _owned(session, user, schedule_id)


@router.delete("/{schedule_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_schedule(schedule_id: uuid.UUID, user: CurrentUser, session: SessionDep) -> Response:
    """Stop a schedule; tasks it already created are kept."""
    schedule = _owned(session, user, schedule_id)
    session.delete(schedule)
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
