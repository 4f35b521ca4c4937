"""Reading tasks as a caller sees them: pages of the caller's tasks and a task's history."""

import base64
import binascii
import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Select, and_, or_, select
from sqlalchemy.orm import Session, load_only

from finq_core.errors import InvalidInput, NotAllowed, Problem
from finq_core.models import Role, Task, TaskEvent, User
from finq_core.store import SUMMARY_COLUMNS
from finq_core.timeutil import as_utc


@dataclass(frozen=True)
class TaskFilter:
    status: str | None = None
    type: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    all_users: bool = False  # admins only: every owner's tasks


@dataclass(frozen=True)
class Page:
    tasks: list[Task]
    next_cursor: str | None


class Keyed(Protocol):
    """A row listed newest first: a task or a batch."""

    @property
    def created_at(self) -> datetime: ...
    @property
    def id(self) -> uuid.UUID: ...


def encode_cursor(row: Keyed) -> str:
    raw = f"{row.created_at.isoformat()}|{row.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        created, tid = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        at, task_id = as_utc(datetime.fromisoformat(created)), uuid.UUID(tid)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        at = None
    if at is None:
        raise InvalidInput([Problem(("query", "cursor"), "invalid cursor")])
    return at, task_id


OUT_OF_RANGE = "out of range: in UTC it falls before the year 1 or after 9999"


def _in_utc(where: TaskFilter) -> TaskFilter:
    """The filter's dates in UTC (a naive one is read as UTC); InvalidInput naming each date
    UTC cannot represent, which the database could not be asked about."""
    after = as_utc(where.created_after) if where.created_after else None
    before = as_utc(where.created_before) if where.created_before else None
    problems = [
        Problem(("query", name), OUT_OF_RANGE)
        for name, given, utc in (
            ("created_after", where.created_after, after),
            ("created_before", where.created_before, before),
        )
        if given is not None and utc is None
    ]
    if problems:
        raise InvalidInput(problems)
    return replace(where, created_after=after, created_before=before)


def _filtered(user: User, where: TaskFilter) -> Select[Task]:
    # Only what a listing shows: reading any other column (params, result) raises.
    stmt = select(Task).options(load_only(*SUMMARY_COLUMNS, raiseload=True))
    if not where.all_users:
        stmt = stmt.where(Task.owner == user.username)
    if where.status is not None:
        stmt = stmt.where(Task.status == where.status)
    if where.type:
        stmt = stmt.where(Task.type == where.type)
    if where.created_after:
        stmt = stmt.where(Task.created_at > where.created_after)
    if where.created_before:
        stmt = stmt.where(Task.created_at < where.created_before)
    return stmt


def page_of_tasks(
    session: Session, user: User, where: TaskFilter, limit: int, cursor: str | None
) -> Page:
    """The caller's tasks (every owner's for an admin asking for all), newest first."""
    if where.all_users and user.role != Role.ADMIN:
        raise NotAllowed("Admin role required for all=true")
    stmt = _filtered(user, _in_utc(where))
    if cursor:
        c_at, c_id = decode_cursor(cursor)
        stmt = stmt.where(
            or_(Task.created_at < c_at, and_(Task.created_at == c_at, Task.id < c_id))
        )
    rows = session.scalars(
        stmt.order_by(Task.created_at.desc(), Task.id.desc()).limit(limit + 1)
    ).all()
    next_cursor = encode_cursor(rows[limit - 1]) if len(rows) > limit else None
    return Page(tasks=list(rows[:limit]), next_cursor=next_cursor)


def history(session: Session, task_id: uuid.UUID) -> list[dict[str, Any]]:
    """Every status change of a task, oldest first."""
    events = session.scalars(
        select(TaskEvent).where(TaskEvent.task_id == task_id).order_by(TaskEvent.id)
    )
    return [{"status": e.status, "at": e.at, "message": e.message} for e in events]
