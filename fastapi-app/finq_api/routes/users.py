"""Account management for admins (`/api/v1/users`)."""

from typing import Any

from fastapi import APIRouter, HTTPException, Response, status
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from finq_api.deps import AdminUser, SessionDep
from finq_api.guard import GuardedRoute
from finq_api.schemas import UserCreate, UserOut
from finq_api.security import hash_password
from finq_core.models import User

router = APIRouter(prefix="/users", tags=["users"], route_class=GuardedRoute)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=UserOut,
    responses={409: {"description": "Username taken"}},
)
def create_user(body: UserCreate, admin: AdminUser, session: SessionDep) -> Any:
    user = User(
        username=body.username, password_hash=hash_password(body.password), role=body.role.value
    )
    session.add(user)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise HTTPException(status_code=409, detail="Username already exists") from None
    return user


@router.get("", response_model=list[UserOut])
def list_users(admin: AdminUser, session: SessionDep) -> Any:
    return session.scalars(select(User).order_by(User.username)).all()


@router.delete(
    "/{username}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={404: {"description": "No such user"}},
)
def delete_user(username: str, admin: AdminUser, session: SessionDep) -> Response:
    if username == admin.username:
        raise HTTPException(status_code=409, detail="Admins cannot delete themselves")
    user = session.scalars(select(User).where(User.username == username)).first()
    if user is None:
        raise HTTPException(status_code=404, detail="User not found")
    session.delete(user)
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
