"""Recurring tasks (`/api/v1/schedules`): stored in the database, fired by the beat process."""

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Response, status
from fastapi.exceptions import RequestValidationError
from sqlalchemy import func, select

from finq_api.deps import CurrentUser, SessionDep, SettingsDep
from finq_api.guard import GuardedRoute, body_limit, task_body
from finq_api.schemas import ScheduleCreate, ScheduleOut
from finq_core import lifecycle
from finq_core.models import Role, Schedule
from finq_core.scheduling import next_fire, validate_cron
from finq_core.timeutil import utcnow

router = APIRouter(prefix="/schedules", tags=["schedules"], route_class=GuardedRoute)
MAX_SCHEDULES_PER_USER = 100


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ScheduleOut)
@body_limit(task_body)
def create_schedule(
    body: ScheduleCreate, user: CurrentUser, session: SessionDep, settings: SettingsDep
) -> Any:
    """Run a task template on a cron schedule (UTC), from the next matching time on."""
    try:
        cron = validate_cron(body.cron)
    except ValueError as exc:
        raise RequestValidationError(
            [{"loc": ("body", "cron"), "msg": str(exc), "type": "value_error"}]
        ) from None
    params, targets = lifecycle.check_template(
        session,
        user,
        body.type,
        body.params,
        body.notify.model_dump() if body.notify is not None else None,
        settings,
    )
    count = (
        session.scalar(
            select(func.count()).select_from(Schedule).where(Schedule.owner == user.username)
        )
        or 0
    )
    if count >= MAX_SCHEDULES_PER_USER:
        raise HTTPException(
            status_code=409,
            detail=f"At most {MAX_SCHEDULES_PER_USER} schedules per user; delete one first",
        )
    now = utcnow()
    schedule = Schedule(
        id=uuid.uuid4(),
        owner=user.username,
        name=body.name,
        cron=cron,
        type=body.type,
        params=params,
        priority=body.priority.value,
        created_at=now,
        max_retries=(
            body.max_retries if body.max_retries is not None else settings.max_retry_attempts
        ),
        next_run_at=next_fire(cron, now),
        notify=targets,
    )
    session.add(schedule)
    session.commit()
    return schedule


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


@router.delete("/{schedule_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_schedule(schedule_id: uuid.UUID, user: CurrentUser, session: SessionDep) -> Response:
    """Stop a schedule; tasks it already created are kept."""
    schedule = session.get(Schedule, schedule_id)
    if schedule is None or (schedule.owner != user.username and user.role != Role.ADMIN):
        raise HTTPException(status_code=404, detail="Schedule not found")
    session.delete(schedule)
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
