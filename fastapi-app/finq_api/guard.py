"""Who may send a body, and how big: checked after routing, before a byte of the body is read.

FastAPI reads and parses a route's body before it resolves the dependencies that authenticate,
so without this an anonymous client could make a replica parse megabytes of JSON only to be
told 401. `GuardedRoute` (every router's route class) refuses a protected route's request
without a valid token first, then bounds the body by the route's own limit: MAX_BODY_BYTES
unless the endpoint is marked with `body_limit` (task submissions, uploads).
"""

from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

from fastapi import HTTPException, Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security.utils import get_authorization_scheme_param

from finq_api import stream_access
from finq_api.deps import get_stream_user, get_token_claims, unauthorized
from finq_api.security import InvalidToken, decode_access_token
from finq_core.config import Settings, get_settings

BodyLimit = Callable[[Settings], int]
Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])
# What a multipart form adds around an uploaded file (boundaries, part headers).
MULTIPART_SLACK = 64 * 1024
# Where the edge middleware finds the matched route's limit (request.state).
STATE_KEY = "finq_body_limit"


def body_limit(limit: BodyLimit) -> Callable[[Endpoint], Endpoint]:
    """Give an endpoint its own body limit, read from the settings at each request."""

    def mark(endpoint: Endpoint) -> Endpoint:
        endpoint.finq_body_limit = limit  # type: ignore[attr-defined]
        return endpoint

    return mark


def task_body(settings: Settings) -> int:
    """Task and schedule submissions: parameters may hold long lists (TASK_BODY_MAX_BYTES)."""
    return settings.task_body_max_bytes


def batch_body(settings: Settings) -> int:
    """A batch submission: up to BATCH_MAX_ITEMS items (BATCH_BODY_MAX_BYTES)."""
    return settings.batch_body_max_bytes


def upload_body(settings: Settings) -> int:
    """An upload: the file (UPLOAD_MAX_BYTES) and its multipart wrapping."""
    return settings.upload_max_bytes + MULTIPART_SLACK


def largest_body(settings: Settings) -> int:
    """The largest body any route accepts: the edge's ceiling (and nginx's)."""
    return max(
        settings.max_body_bytes,
        task_body(settings),
        upload_body(settings),
        batch_body(settings),
    )


def _dependencies(dependant: Dependant) -> Iterator[Any]:
    for sub in dependant.dependencies:
        yield sub.call
        yield from _dependencies(sub)


def _token(request: Request) -> str:
    scheme, token = get_authorization_scheme_param(request.headers.get("authorization"))
    return token if scheme.lower() == "bearer" else ""


def _authenticated(request: Request, settings: Settings, ticket_allowed: bool) -> bool:
    """A valid token in the header; on the stream route, a well-formed ticket instead (its
    dependency redeems it: a ticket is spent only once)."""
    token = _token(request)
    if not token and ticket_allowed:
        return stream_access.well_formed(request.query_params.get("ticket", ""))
    try:
        decode_access_token(token or "-", settings)
    except InvalidToken:
        return False
    return True


def _declared_length(request: Request) -> int:
    length = request.headers.get("content-length", "")
    return int(length) if length.isdigit() else 0


class GuardedRoute(APIRoute):
    """An APIRoute that authenticates (token signature and expiry, no database) and bounds the
    body before its handler reads it. The caller's account is read afterwards (`caller`): it
    also checks that the account exists."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        calls = set(_dependencies(self.dependant))
        ticket_allowed = get_stream_user in calls
        protected = ticket_allowed or get_token_claims in calls
        limit_of: BodyLimit | None = getattr(self.endpoint, "finq_body_limit", None)

        async def guarded(request: Request) -> Response:
            settings = get_settings()
            if protected and not _authenticated(request, settings, ticket_allowed):
                raise unauthorized()
            limit = limit_of(settings) if limit_of else settings.max_body_bytes
            if _declared_length(request) > limit:
                raise HTTPException(413, f"Request body larger than {limit} bytes")
            setattr(request.state, STATE_KEY, limit)
            return await handler(request)

        return guarded
