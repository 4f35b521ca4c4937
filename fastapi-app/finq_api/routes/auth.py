"""Tokens for accounts (`/api/v1/auth`)."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.security import OAuth2PasswordRequestForm
from sqlalchemy import select

from finq_api.deps import CurrentUser, SessionDep, SettingsDep, unauthorized
from finq_api.ratelimit import LoginLimit
from finq_api.schemas import Token, UserOut
from finq_api.security import create_access_token, verify_password
from finq_core.models import User

router = APIRouter(prefix="/auth", tags=["auth"])


@router.post("/token", response_model=Token, responses={401: {"description": "Bad credentials"}})
def login(
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    session: SessionDep,
    settings: SettingsDep,
    _: LoginLimit,
) -> Any:
    """OAuth2 password flow: username and password in a form, a bearer token back."""
    user = session.scalars(select(User).where(User.username == form.username)).first()
    if not verify_password(form.password, user.password_hash if user else None) or user is None:
        raise unauthorized()
    token, expires_in = create_access_token(user.username, settings)
    return Token(access_token=token, expires_in=expires_in)


@router.get("/me", response_model=UserOut)
def me(user: CurrentUser) -> Any:
    return user
