"""Every error leaves the API as JSON `{"detail": ..., "request_id": ...}`; never a traceback."""

import logging
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from finq_core.errors import (
    AccountConflict,
    BatchNotFound,
    ChartNotFound,
    InvalidInput,
    NotAllowed,
    QueueUnavailable,
    QuotaExceeded,
    ResultNotFound,
    StorageQuotaExceeded,
    TaskNotFound,
    TaskStateConflict,
    UsernameTaken,
    UserNotFound,
)
from finq_core.logs import request_id_var

log = logging.getLogger("finq.api")
# Seconds a client should wait after a 503 for an outage (Redis, the database, the limiter).
OUTAGE_RETRY_AFTER = "5"


def error_response(
    status_code: int, detail: Any, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"detail": detail, "request_id": request_id_var.get()},
        status_code=status_code,
        headers=headers,
    )


def validation_detail(errors: Any) -> list[dict[str, Any]]:
    """Keep what tells the client which field is wrong and why; drop echoed inputs and
    pydantic's internal URLs (the input could be megabytes)."""
    out = []
    for err in errors:
        item: dict[str, Any] = {
            "loc": list(err.get("loc", ())),
            "msg": err.get("msg", ""),
            "type": err.get("type", "value_error"),
        }
        out.append(item)
    return out


def _install_stored_results(app: FastAPI) -> None:
    """The refusals about stored results: none to read (404), the owner's quota (429)."""

    @app.exception_handler(ResultNotFound)
    async def _no_result(_: Request, exc: ResultNotFound) -> JSONResponse:
        return error_response(404, exc.detail)

    @app.exception_handler(StorageQuotaExceeded)
    async def _storage_quota(_: Request, exc: StorageQuotaExceeded) -> JSONResponse:
        return error_response(429, exc.detail)


def _install_accounts(app: FastAPI) -> None:
    """The accounts' refusals: a name taken (409 naming the field), no such user (404), a
    change the account's state forbids (409)."""

    @app.exception_handler(UsernameTaken)
    async def _taken(_: Request, exc: UsernameTaken) -> JSONResponse:
        problem = {"loc": ["body", exc.field], "msg": exc.detail, "type": "username_taken"}
        return error_response(409, [problem])

    @app.exception_handler(UserNotFound)
    async def _no_user(_: Request, exc: UserNotFound) -> JSONResponse:
        return error_response(404, exc.detail)

    @app.exception_handler(AccountConflict)
    async def _account_conflict(_: Request, exc: AccountConflict) -> JSONResponse:
        return error_response(409, exc.detail)


def install_refusals(app: FastAPI) -> None:
    """The task lifecycle's refusals (finq_core.errors) as HTTP answers."""

    @app.exception_handler(InvalidInput)
    async def _invalid(_: Request, exc: InvalidInput) -> JSONResponse:
        return error_response(422, validation_detail(p._asdict() for p in exc.problems))

    @app.exception_handler(TaskNotFound)
    @app.exception_handler(BatchNotFound)
    @app.exception_handler(ChartNotFound)
    async def _not_found(
        _: Request, exc: TaskNotFound | BatchNotFound | ChartNotFound
    ) -> JSONResponse:
        return error_response(404, exc.detail)

    _install_stored_results(app)
    _install_accounts(app)

    @app.exception_handler(NotAllowed)
    async def _not_allowed(_: Request, exc: NotAllowed) -> JSONResponse:
        return error_response(403, exc.detail)

    @app.exception_handler(QuotaExceeded)
    async def _quota(_: Request, exc: QuotaExceeded) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
        return error_response(429, exc.detail, headers)

    @app.exception_handler(TaskStateConflict)
    async def _conflict(_: Request, exc: TaskStateConflict) -> JSONResponse:
        return error_response(409, exc.detail)

    @app.exception_handler(QueueUnavailable)
    async def _queue_down(_: Request, exc: QueueUnavailable) -> JSONResponse:
        return error_response(503, exc.detail, {"Retry-After": OUTAGE_RETRY_AFTER})


def install(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, exc.detail, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, validation_detail(exc.errors()))

    install_refusals(app)

    @app.exception_handler(RecursionError)
    async def _too_deep(_: Request, exc: RecursionError) -> JSONResponse:
        return error_response(400, "JSON nested too deeply")

    # A backing service that is down or saturated is the client's "try again shortly", not a
    # bug: 503 with Retry-After, naming the service, whichever endpoint ran into it.
    @app.exception_handler(redis.RedisError)
    async def _redis_down(request: Request, exc: redis.RedisError) -> JSONResponse:
        log.warning("Redis unavailable on %s %s: %s", request.method, request.url.path, exc)
        return error_response(
            503,
            "Redis (queues and live state) is unavailable; retry shortly.",
            {"Retry-After": OUTAGE_RETRY_AFTER},
        )

    @app.exception_handler(OperationalError)
    @app.exception_handler(PoolTimeoutError)
    async def _database_down(request: Request, exc: Exception) -> JSONResponse:
        log.warning(
            "database unavailable on %s %s: %s",
            request.method,
            request.url.path,
            type(exc).__name__,
        )
        return error_response(
            503,
            "The database is unavailable or busy; retry shortly.",
            {"Retry-After": OUTAGE_RETRY_AFTER},
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(500, "Internal server error")
