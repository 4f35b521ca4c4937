"""Pure-ASGI middleware (cheaper than BaseHTTPMiddleware on every request): request ids,
security headers, and a hard bound on request bodies."""

import json
import logging
import re
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from finq_core import metrics
from finq_core.config import get_api_server_settings
from finq_core.logs import request_id_var

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("finq.api")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
SERVED_BY = get_api_server_settings().api_name or socket.gethostname()

CSP = (
    b"default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
    b"script-src 'self'; connect-src 'self'; frame-ancestors 'none'"
)
# Swagger UI starts itself with an inline script: allowed on /docs alone.
DOCS_CSP = CSP.replace(b"script-src 'self'", b"script-src 'self' 'unsafe-inline'")
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-served-by", SERVED_BY.encode()),
]


_LIMIT_HEADER_NAMES = {b"x-ratelimit-limit", b"x-ratelimit-remaining", b"x-ratelimit-reset"}


class TooLarge(Exception):  # noqa: N818 - control flow, not an error
    pass


class EdgeMiddleware:
    """Sets the request id (nginx's X-Request-ID, or a new one), adds security headers and
    the request id to every response, and answers 413 past `max_body` bytes."""

    def __init__(self, app: ASGIApp, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        rid = headers.get(b"x-request-id", b"").decode("latin-1")
        if not _REQUEST_ID.match(rid):
            rid = uuid.uuid4().hex
        token = request_id_var.set(rid)
        rid_header = (b"x-request-id", rid.encode())
        csp = (b"content-security-policy", DOCS_CSP if scope.get("path") == "/docs" else CSP)

        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            await self._too_large(send, rid)
            request_id_var.reset(token)
            return

        received = 0
        started = rejected = False

        async def limited_receive() -> Message:
            nonlocal received, rejected
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body and not started:
                    # Answer now: the framework would turn any error raised here into a 400.
                    rejected = True
                    await self._too_large(send, rid)
                    raise TooLarge()
            return message

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if rejected:
                return  # the 413 went out already; drop the framework's own answer
            if message["type"] == "http.response.start":
                started = True
                limits = (scope.get("state") or {}).get("ratelimit_headers") or {}
                message["headers"] = [
                    *(
                        h
                        for h in message.get("headers", [])
                        if h[0].lower() not in _LIMIT_HEADER_NAMES or not limits
                    ),
                    *((k.lower().encode(), v.encode()) for k, v in limits.items()),
                    rid_header,
                    csp,
                    *SECURITY_HEADERS,
                ]
            await send(message)

        status = 500
        started_at = time.perf_counter()

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send_with_headers(message)

        try:
            await self.app(scope, limited_receive, send_observed)
        except TooLarge:
            status = 413
        except Exception as exc:
            # Answered here rather than by Starlette's outermost error middleware, which runs
            # outside this one: the client still gets the request id and the headers.
            if started:
                raise
            log.error(
                "unhandled error on %s %s", scope.get("method"), scope.get("path"), exc_info=exc
            )
            status = 500
            await self._error(send, 500, "Internal server error", rid)
        finally:
            request_id_var.reset(token)
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            metrics.http_requests.labels(method, template, str(status)).inc()
            metrics.http_latency.labels(method, template).observe(time.perf_counter() - started_at)

    async def _too_large(self, send: Send, rid: str) -> None:
        await self._error(send, 413, f"Request body larger than {self.max_body} bytes", rid)

    async def _error(self, send: Send, status: int, detail: str, rid: str) -> None:
        body = json.dumps({"detail": detail, "request_id": rid}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"x-request-id", rid.encode()),
                    (b"content-security-policy", CSP),
                    *SECURITY_HEADERS,
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
