"""Tokens for accounts (`/api/v1/auth`)."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response, status
from fastapi.security import OAuth2PasswordRequestForm

from finq_api.deps import CurrentUser, SessionDep, SettingsDep, unauthorized
from finq_api.guard import GuardedRoute
from finq_api.ratelimit import LoginLimit
from finq_api.schemas import Me, PasswordChange, Token, UserOut
from finq_api.security import create_access_token, hash_password, verify_password
from finq_core import accounts
from finq_core.errors import InvalidInput, Problem
from finq_core.models import Priority, User

router = APIRouter(prefix="/auth", tags=["auth"], route_class=GuardedRoute)


@router.post("/token", response_model=Token, responses={401: {"description": "Bad credentials"}})
def login(
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    session: SessionDep,
    settings: SettingsDep,
    response: Response,
    _: LoginLimit,
) -> Any:
    """OAuth2 password flow: username (any case) and password in a form, a bearer token back."""
    # RFC 6749 5.1: no cache, shared or private, may keep a token.
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    user = accounts.find_user(session, form.username)
    if not verify_password(form.password, user.password_hash if user else None) or user is None:
        raise unauthorized()
    token, expires_in = create_access_token(user.id, user.token_version, settings)
    return Token(access_token=token, expires_in=expires_in)


@router.get("/me", response_model=Me)
def me(user: CurrentUser, settings: SettingsDep) -> Any:
    """The caller's account, and the priorities it may submit (the page offers only those)."""
    high = user.role in settings.high_priority_roles
    allowed = [p for p in Priority if p != Priority.HIGH or high]
    return Me.model_validate({**UserOut.model_validate(user).model_dump(), "priorities": allowed})


@router.post(
    "/password",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={422: {"description": "current_password is wrong"}},
)
def change_password(body: PasswordChange, user: CurrentUser, session: SessionDep) -> Response:
    """Set a new password: every token issued before, this one included, stops working;
    log in again."""
    stored = session.get(User, user.id)
    if stored is None or not verify_password(body.current_password, stored.password_hash):
        raise InvalidInput([Problem(("body", "current_password"), "wrong password")])
    accounts.change_user(session, stored, password_hash=hash_password(body.new_password))
    return Response(status_code=status.HTTP_204_NO_CONTENT)
