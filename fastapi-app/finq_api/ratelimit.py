"""Rate limits counted in Redis with the `limits` library, so every replica shares one count.

Three limits: per account (or per address without a valid token) on everything under /api
(RATE_LIMIT_GLOBAL), per address on the token route (RATE_LIMIT_LOGIN) and per user on task
submission (RATE_LIMIT_SUBMIT), which the beat's schedule runs count against too (the counters
are finq_core.ratelimit's). Without Redis the login limit fails closed (no guessing while
we cannot count) and the others fail open (the service stays usable); both are logged.
"""

import logging
import math
import time
from typing import Annotated

import redis
from fastapi import Depends, HTTPException, Request
from limits import RateLimitItem
from starlette.concurrency import run_in_threadpool

from finq_api.clientip import client_ip
from finq_api.deps import CurrentUser
from finq_api.errors import OUTAGE_RETRY_AFTER
from finq_api.security import InvalidToken, decode_access_token
from finq_core import metrics
from finq_core.config import get_settings
from finq_core.models import User
from finq_core.ratelimit import SUBMIT_SCOPE, item, limiter

log = logging.getLogger("finq.ratelimit")


def _headers(limit: RateLimitItem, remaining: int, reset: float) -> dict[str, str]:
    return {
        "X-RateLimit-Limit": str(limit.amount),
        "X-RateLimit-Remaining": str(max(0, remaining)),
        "X-RateLimit-Reset": str(math.ceil(reset)),
    }


def check(request: Request, spec: str, scope: str, key: str, fail_closed: bool) -> None:
    """Count one hit against `spec` for `key`; 429 with Retry-After when over the limit.

    The X-RateLimit-* headers go into the request state, from where the edge middleware adds
    them to whatever response follows, success or error (the most specific limit wins)."""
    settings = get_settings()
    if not settings.rate_limit_enabled:
        return
    limit = item(spec)
    try:
        allowed = limiter().hit(limit, scope, key)
        stats = limiter().get_window_stats(limit, scope, key)
    except (redis.RedisError, OSError) as exc:
        if fail_closed:
            log.error("rate limiter unavailable (%s); refusing %s", type(exc).__name__, scope)
            raise HTTPException(
                status_code=503,
                detail="Temporarily unavailable; retry shortly",
                headers={"Retry-After": OUTAGE_RETRY_AFTER},
            ) from None
        log.warning("rate limiter unavailable (%s); allowing %s", type(exc).__name__, scope)
        return
    headers = _headers(limit, stats.remaining, stats.reset_time)
    request.state.ratelimit_headers = headers
    if not allowed:
        metrics.rate_limited.labels(scope).inc()
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        raise HTTPException(
            status_code=429,
            detail=f"Rate limit exceeded: {spec}",
            headers={**headers, "Retry-After": str(retry_after)},
        )


def global_key(request: Request) -> str:
    """Whom the global limit counts: the account of a request with a valid token, else its
    address. Per account, people behind one NAT or proxy do not share a budget, and one
    account cannot escape its budget by changing address; per address, unauthenticated
    traffic (bad tokens included) is still counted. The signature is checked here (no
    database): a forged token counts against its address, and so does a stream opened with a
    ticket (its ticket was counted against the account)."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token:
        try:
            return f"user:{decode_access_token(token.strip(), get_settings()).user_id}"
        except InvalidToken:
            pass
    return f"ip:{client_ip(request)}"


# Async dependencies that hop to the thread pool only when there is blocking work (Redis):
# a plain `def` dependency costs a thread hop on every request, limits on or off.
async def global_limit(request: Request) -> None:
    settings = get_settings()
    if settings.rate_limit_enabled:
        await run_in_threadpool(
            check, request, settings.rate_limit_global, "global", global_key(request), False
        )


async def login_limit(request: Request) -> None:
    settings = get_settings()
    if settings.rate_limit_enabled:
        await run_in_threadpool(
            check, request, settings.rate_limit_login, "login", client_ip(request), True
        )


async def submit_limit(request: Request, user: CurrentUser) -> None:
    if get_settings().rate_limit_enabled:
        await run_in_threadpool(count_submit, request, user)


def count_submit(request: Request, user: User) -> None:
    """The submit limit (RATE_LIMIT_SUBMIT) for `user`, counted in the calling thread: for a
    plain `def` endpoint that reads its caller itself."""
    check(request, get_settings().rate_limit_submit, SUBMIT_SCOPE, user.username, False)


LoginLimit = Annotated[None, Depends(login_limit)]
SubmitLimit = Annotated[None, Depends(submit_limit)]
