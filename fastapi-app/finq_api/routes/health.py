"""Liveness and readiness, for nginx, compose healthchecks and operators."""

import socket
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text

from finq_core import broker_check, metrics
from finq_core.db import get_engine
from finq_core.redis_client import get_redis

router = APIRouter(tags=["health"])
HOSTNAME = socket.gethostname()


@router.get("/health")
def health() -> dict[str, Any]:
    """The process is alive (no dependency is checked)."""
    return {"status": "ok", "replica": HOSTNAME}


@router.get("/metrics", include_in_schema=False, response_class=PlainTextResponse)
def prometheus_metrics() -> PlainTextResponse:
    """Prometheus exposition of this replica (all its processes) and of the queue depths.
    Internal: nginx does not serve /metrics on the public port."""
    return PlainTextResponse(metrics.exposition(with_queues=True), media_type=CONTENT_TYPE_LATEST)


@router.get("/health/ready", responses={503: {"description": "A dependency is unreachable"}})
def ready() -> JSONResponse:
    """Redis and the database are reachable; 503 names each one that is not. A Redis that
    may lose queued messages (evicting policy, no AOF) is a warning, not a failure: every
    replica shares it, and taking them all out of rotation would not help."""
    checks: dict[str, str] = {}
    warnings: list[str] = []
    try:
        get_redis().ping()
        checks["redis"] = "ok"
        warnings = broker_check.check(get_redis()).problems
        checks["redis_durability"] = "ok" if not warnings else "warning: " + "; ".join(warnings)
    except Exception as exc:  # whatever fails, readiness reports it rather than a 500
        checks.setdefault("redis", f"unreachable: {type(exc).__name__}")
    try:
        with get_engine().connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # whatever fails, readiness reports it rather than a 500
        checks["database"] = f"unreachable: {type(exc).__name__}"
    failing = [name for name, state in checks.items() if state.startswith("unreachable")]
    body: dict[str, Any] = {"status": "ok" if not failing else "unavailable", "checks": checks}
    if failing:
        body["detail"] = "unreachable: " + ", ".join(failing)
    if warnings:
        body["warnings"] = warnings
    return JSONResponse(body, status_code=503 if failing else 200)
