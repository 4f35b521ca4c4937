"""Dependencies injected into routes: settings, a database session, the current user."""

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, HTTPException, Query, Request, status
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from finq_api import API_PREFIX, stream_access
from finq_api.security import InvalidToken, TokenClaims, decode_access_token
from finq_core.accounts import token_user
from finq_core.config import Settings, get_settings
from finq_core.db import get_sessionmaker
from finq_core.models import Role, User

oauth2_scheme = OAuth2PasswordBearer(tokenUrl=f"{API_PREFIX}/auth/token", auto_error=False)

CREDENTIALS_ERROR = "Could not validate credentials"


# `async def` on purpose: a plain `def` dependency costs a thread-pool hop, more than this work.
# Neither blocks: a session connects lazily in the endpoint's thread, which has committed (or
# opened nothing) by the time the session closes, so closing is free.
async def get_db() -> AsyncIterator[Session]:
    session = get_sessionmaker()()
    try:
        yield session
    finally:
        session.close()


async def settings_dep() -> Settings:
    return get_settings()


SettingsDep = Annotated[Settings, Depends(settings_dep)]
SessionDep = Annotated[Session, Depends(get_db)]


def unauthorized() -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail=CREDENTIALS_ERROR,
        headers={"WWW-Authenticate": "Bearer"},
    )


async def get_token_claims(
    settings: SettingsDep, token: Annotated[str | None, Depends(oauth2_scheme)]
) -> TokenClaims:
    """The bearer token's claims; 401 without a valid one. On the event loop: a verified
    token is remembered (finq_api.security), so this is no blocking work."""
    if not token:
        raise unauthorized()
    try:
        return decode_access_token(token, settings)
    except InvalidToken:
        raise unauthorized() from None


Claims = Annotated[TokenClaims, Depends(get_token_claims)]


def caller(session: Session, claims: TokenClaims) -> User:
    """The live account the claims speak for, as a detached User (one primary-key read: no
    route changes the caller's own row through it); 401 when deleted, or its tokens revoked
    (password or role changed) since."""
    user = token_user(session, claims.user_id, claims.version)
    if user is None:
        raise unauthorized()
    return user


def get_current_user(session: SessionDep, claims: Claims) -> User:
    return caller(session, claims)


CurrentUser = Annotated[User, Depends(get_current_user)]


async def get_stream_user(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    token: Annotated[str | None, Depends(oauth2_scheme)],
    ticket: Annotated[
        str | None,
        Query(description="A stream ticket (POST .../events/ticket), for EventSource"),
    ] = None,
) -> User:
    """The Authorization header, or a single-use stream ticket for this task (EventSource
    cannot send headers); a token in the query string is not accepted."""
    if token or not ticket:
        claims = await get_token_claims(settings, token)
        return await run_in_threadpool(caller, session, claims)
    # Redis down: 503 (finq_api.errors).
    redeemed = await stream_access.redeem_ticket(ticket, str(request.path_params["task_id"]))
    if redeemed is None:
        raise unauthorized()
    user = await run_in_threadpool(token_user, session, *redeemed)
    if user is None:  # deleted, or its tokens revoked, since the ticket was issued
        raise unauthorized()
    return user


StreamUser = Annotated[User, Depends(get_stream_user)]


def require_admin(user: CurrentUser) -> User:
    if user.role != Role.ADMIN:
        raise HTTPException(status_code=status.HTTP_403_FORBIDDEN, detail="Admin role required")
    return user


AdminUser = Annotated[User, Depends(require_admin)]
