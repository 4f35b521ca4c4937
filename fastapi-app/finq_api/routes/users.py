"""Account management for admins (`/api/v1/users`); the rules live in finq_core.accounts."""

from typing import Any

from fastapi import APIRouter, Response, status
from sqlalchemy import select

from finq_api.deps import AdminUser, SessionDep
from finq_api.guard import GuardedRoute
from finq_api.schemas import UserCreate, UserOut, UserUpdate
from finq_api.security import hash_password
from finq_core import accounts
from finq_core.errors import UserNotFound
from finq_core.models import User

router = APIRouter(prefix="/users", tags=["users"], route_class=GuardedRoute)
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such user (or deleted)"}}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=UserOut,
    responses={
        409: {"description": "Username taken, ignoring case, or once used by a deleted account"}
    },
)
def create_user(body: UserCreate, admin: AdminUser, session: SessionDep) -> Any:
    return accounts.create_user(
        session, body.username, hash_password(body.password), body.role.value
    )


@router.get("", response_model=list[UserOut])
def list_users(admin: AdminUser, session: SessionDep) -> Any:
    """Live accounts (deleted ones are not listed)."""
    return session.scalars(
        select(User).where(User.deleted_at.is_(None)).order_by(User.username)
    ).all()


def _user(session: SessionDep, username: str) -> User:
    user = accounts.find_user(session, username)
    if user is None:
        raise UserNotFound("User not found")
    return user


@router.patch("/{username}", response_model=UserOut, responses=NOT_FOUND)
def change_user(username: str, body: UserUpdate, admin: AdminUser, session: SessionDep) -> Any:
    """Set a new password and/or role: the account's tokens issued before stop working."""
    return accounts.change_user(
        session,
        _user(session, username),
        password_hash=hash_password(body.password) if body.password is not None else None,
        role=body.role.value if body.role is not None else None,
    )


@router.delete(
    "/{username}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**NOT_FOUND, 409: {"description": "An admin deleting themselves"}},
)
def delete_user(username: str, admin: AdminUser, session: SessionDep) -> Response:
    """Delete the account: its tokens stop working, its schedules and uploads are deleted,
    its waiting tasks cancelled and its running ones stopped; finished tasks are kept until
    RESULT_TTL_DAYS. The name is not given to another account."""
    accounts.delete_user(session, _user(session, username), actor=admin)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
