"""Accounts: create, change and delete users, and find the user a token speaks for.

- A username is unique ignoring case (`users.username_key`); a deleted account keeps its row,
  so neither its name nor its id is ever given to another account (UsernameTaken);
- a token carries the user's id and `token_version`; a password change, a role change and
  deletion bump the version, so every token issued before is refused from then on;
- deleting a user marks the row deleted and, in the same transaction, deletes their schedules
  and uploads and cancels their waiting (PENDING, RETRYING) tasks; their RUNNING tasks are
  asked to stop (the cancel flag; they stop within a chunk and end CANCELLED). Finished tasks
  are kept, readable by admins, until RESULT_TTL_DAYS purges them like any other.

Passwords arrive hashed (the API's finq_api.security hashes them); nothing here knows HTTP.
"""

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import redis
from sqlalchemy import Table, bindparam, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from finq_core import flags
from finq_core.changes import publish_change
from finq_core.errors import AccountConflict, UsernameTaken, UserNotFound
from finq_core.models import Schedule, Task, TaskStatus, Upload, User, username_key
from finq_core.store import commit_and_queue_deliveries, transition
from finq_core.timeutil import utcnow

log = logging.getLogger("finq.accounts")

USERS: Table = User.__table__  # type: ignore[assignment]
# Built once: building a statement per request costs more than running it (finq_core.store).
# One primary-key lookup per authenticated request.
_USER_BY_ID = select(*USERS.c).where(USERS.c.id == bindparam("id"))
WAITING = (TaskStatus.PENDING, TaskStatus.RETRYING)


def token_user(session: Session, user_id: int, version: int) -> User | None:
    """The account a token (or stream ticket) speaks for, detached; None when it is gone,
    deleted, or its tokens were revoked since (another version). Ends the read transaction:
    a connection held while the request waits for a thread deadlocks the pool."""
    row = session.execute(_USER_BY_ID, {"id": user_id}).first()
    session.commit()
    if row is None or row.deleted_at is not None or row.token_version != version:
        return None
    return User(**row._mapping)


def find_user(session: Session, username: str) -> User | None:
    """The live account of that name (ignoring case), or None."""
    return session.scalars(
        select(User).where(User.username_key == username_key(username), User.deleted_at.is_(None))
    ).first()


def _taken(session: Session, username: str) -> UsernameTaken | None:
    key = username_key(username)
    holder = session.scalars(select(User).where(User.username_key == key)).first()
    if holder is None:
        return None
    if holder.deleted_at is not None:
        return UsernameTaken(
            f"username {username!r} belonged to a deleted account and is not reused; "
            "choose another name"
        )
    same = "" if holder.username == username else f" (as {holder.username!r})"
    return UsernameTaken(
        f"username {username!r} is taken{same}: usernames are unique ignoring case"
    )


def create_user(session: Session, username: str, password_hash: str, role: str) -> User:
    """A new account; commits. UsernameTaken when the name (ignoring case) is or was used."""
    if refusal := _taken(session, username):
        raise refusal
    user = User(username=username, password_hash=password_hash, role=role)
    session.add(user)
    try:
        session.commit()
    except IntegrityError:  # created concurrently
        session.rollback()
        refusal = _taken(session, username) or UsernameTaken(f"username {username!r} is taken")
        raise refusal from None
    return user


def change_user(
    session: Session, user: User, *, password_hash: str | None = None, role: str | None = None
) -> User:
    """Set a new password and/or role; either revokes every token issued before (a new
    version). Commits."""
    changed = False
    if password_hash is not None:
        user.password_hash = password_hash
        changed = True
    if role is not None and role != user.role:
        user.role = role
        changed = True
    if changed:
        user.token_version = User.token_version + 1  # in SQL: concurrent bumps both count
    session.commit()
    session.refresh(user)
    return user


@dataclass(frozen=True)
class Deleted:
    """What deleting an account did."""

    schedules: int
    uploads: int
    cancelled: int  # waiting tasks cancelled at once
    stopping: int  # running tasks asked to stop


def delete_user(session: Session, user: User, actor: User | None = None) -> Deleted:
    """Delete the account (see the module's doc); commits. AccountConflict when `actor`
    deletes themselves, UserNotFound when it is already deleted."""
    if actor is not None and actor.id == user.id:
        raise AccountConflict("Admins cannot delete themselves")
    now = utcnow()
    marked = session.execute(
        update(User)
        .where(User.id == user.id, User.deleted_at.is_(None))
        .values(deleted_at=now, token_version=User.token_version + 1, password_hash="")
    ).rowcount  # type: ignore[attr-defined]
    if marked != 1:
        session.rollback()
        raise UserNotFound("User not found")
    owner = user.username
    # Schedules first: a run the beat is creating right now commits before this delete
    # proceeds (row lock), so the task sweep below sees its task.
    schedules = session.execute(delete(Schedule).where(Schedule.owner == owner)).rowcount  # type: ignore[attr-defined]
    uploads = session.execute(delete(Upload).where(Upload.owner == owner)).rowcount  # type: ignore[attr-defined]
    waiting = session.scalars(
        select(Task.id).where(Task.owner == owner, Task.status.in_([s.value for s in WAITING]))
    ).all()
    cancelled = [
        task_id
        for task_id in waiting
        if transition(session, task_id, WAITING, TaskStatus.CANCELLED, "owner deleted")
    ]
    running = session.scalars(
        select(Task.id).where(Task.owner == owner, Task.status == TaskStatus.RUNNING.value)
    ).all()
    commit_and_queue_deliveries(session)
    for task_id in cancelled:
        publish_change(task_id, TaskStatus.CANCELLED.value)
    stopping = _stop(running)
    log.info(
        "user %s deleted: %d schedules, %d uploads, %d tasks cancelled, %d asked to stop",
        owner,
        schedules,
        uploads,
        len(cancelled),
        stopping,
        extra={"owner": owner, "by": actor.username if actor else None},
    )
    return Deleted(schedules, uploads, len(cancelled), stopping)


def _stop(task_ids: Sequence[uuid.UUID]) -> int:
    """Ask running tasks to stop; with Redis down they run to the end (and are kept as any
    finished task of the deleted account)."""
    try:
        for task_id in task_ids:
            flags.request_cancel(str(task_id))
    except redis.RedisError as exc:
        log.warning("could not ask the deleted account's running tasks to stop: %s", exc)
        return 0
    return len(task_ids)
