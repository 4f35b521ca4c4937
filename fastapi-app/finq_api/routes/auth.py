"""Tokens for accounts (`/api/v1/auth`)."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response
from fastapi.security import OAuth2PasswordRequestForm
from sqlalchemy import select

from finq_api.deps import CurrentUser, SessionDep, SettingsDep, unauthorized
from finq_api.guard import GuardedRoute
from finq_api.ratelimit import LoginLimit
from finq_api.schemas import Token, UserOut
from finq_api.security import create_access_token, verify_password
from finq_core.models import User

router = APIRouter(prefix="/auth", tags=["auth"], route_class=GuardedRoute)


@router.post("/token", response_model=Token, responses={401: {"description": "Bad credentials"}})
def login(
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    session: SessionDep,
    settings: SettingsDep,
    response: Response,
    _: LoginLimit,
) -> Any:
    """OAuth2 password flow: username and password in a form, a bearer token back."""
    # RFC 6749 5.1: no cache, shared or private, may keep a token.
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    user = session.scalars(select(User).where(User.username == form.username)).first()
    if not verify_password(form.password, user.password_hash if user else None) or user is None:
        raise unauthorized()
    token, expires_in = create_access_token(user.username, settings)
    return Token(access_token=token, expires_in=expires_in)


@router.get("/me", response_model=UserOut)
def me(user: CurrentUser) -> Any:
    return user
