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

from finq_api import API_PREFIX
from finq_api.guard import STATE_KEY as BODY_LIMIT_KEY
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
_VERSIONED = API_PREFIX + "/"
_ALWAYS_SERVED = ("/health", "/metrics")  # probes and scrapes answer even at capacity
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


def _request_id(headers: dict[bytes, bytes]) -> str:
    """nginx's X-Request-ID when it looks like one, else a new id."""
    rid = headers.get(b"x-request-id", b"").decode("latin-1")
    return rid if _REQUEST_ID.match(rid) else uuid.uuid4().hex


def _declares_more_than(headers: dict[bytes, bytes], limit: int) -> bool:
    length = headers.get(b"content-length")
    return length is not None and length.isdigit() and int(length) > limit


def _route_template(scope: Scope) -> str:
    """The matched route's full path template, API_PREFIX included: what dashboards select on."""
    template: str | None = getattr(scope.get("route"), "path", None)
    if not template:
        return "unmatched"
    # A route included under API_PREFIX knows only its path within its own router.
    if scope.get("path", "").startswith(_VERSIONED) and not template.startswith(_VERSIONED):
        return API_PREFIX + template
    return template


def _observe(scope: Scope, status: int, started_at: float) -> None:
    """Count the request and its latency under its route template."""
    template = _route_template(scope)
    method = scope.get("method", "")
    metrics.http_requests.labels(method, template, str(status)).inc()
    metrics.http_latency.labels(method, template).observe(time.perf_counter() - started_at)


class _Exchange:
    """One HTTP request through EdgeMiddleware: bounds its body as it is read, adds the edge
    headers to its response and remembers the status it was answered with."""

    __slots__ = (
        "csp",
        "edge",
        "raw_send",
        "receive_from",
        "received",
        "rejected",
        "rid",
        "rid_header",
        "scope",
        "started",
        "status",
        "taken",
    )

    def __init__(
        self, edge: "EdgeMiddleware", scope: Scope, receive: Receive, send: Send, rid: str
    ) -> None:
        self.edge = edge
        self.scope = scope
        self.receive_from = receive
        self.raw_send = send
        self.rid = rid
        self.rid_header = (b"x-request-id", rid.encode())
        self.csp = (b"content-security-policy", DOCS_CSP if scope.get("path") == "/docs" else CSP)
        self.received = 0
        self.started = self.rejected = False
        self.status = 500
        self.taken = True  # counted in the edge's in_flight until answered

    def answered(self) -> None:
        """The request no longer waits for a thread nor computes: its response has started
        (a stream may go on for long), or it ended."""
        if self.taken:
            self.taken = False
            self.edge.in_flight -= 1

    async def receive(self) -> Message:
        message = await self.receive_from()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            # The matched route's own limit (finq_api.guard), else the default one.
            limit = (self.scope.get("state") or {}).get(BODY_LIMIT_KEY, self.edge.max_body)
            if self.received > limit and not self.started:
                # Answer now: the framework would turn any error raised here into a 400.
                self.rejected = True
                await self.edge._too_large(self.raw_send, self.rid, limit)
                raise TooLarge()
        return message

    async def send(self, message: Message) -> None:
        is_start = message["type"] == "http.response.start"
        if is_start:
            self.status = message["status"]
        if self.rejected:
            return  # the 413 went out already; drop the framework's own answer
        if is_start:
            self.started = True
            self.answered()
            message["headers"] = self._response_headers(message)
        await self.raw_send(message)

    def _response_headers(self, message: Message) -> list[tuple[bytes, bytes]]:
        """The app's headers, its rate-limit headers replaced by the limiter's when it set
        any, then the request id and the security headers."""
        limits = (self.scope.get("state") or {}).get("ratelimit_headers") or {}
        return [
            *(
                h
                for h in message.get("headers", [])
                if h[0].lower() not in _LIMIT_HEADER_NAMES or not limits
            ),
            *((k.lower().encode(), v.encode()) for k, v in limits.items()),
            self.rid_header,
            self.csp,
            *SECURITY_HEADERS,
        ]


class EdgeMiddleware:
    """Sets the request id (nginx's X-Request-ID, or a new one), adds security headers and
    the request id to every response, and answers 413 past the body limit: the matched
    route's (set by finq_api.guard before the body is read), else `max_body`. A declared
    length above `ceiling`, the largest any route accepts, is refused before routing.
    With `max_in_flight` requests taken and not yet answered, another is answered 503 at
    once (API_MAX_IN_FLIGHT; health and metrics are always served)."""

    BUSY = "The API is at capacity; retry in a second"

    def __init__(
        self, app: ASGIApp, max_body: int, ceiling: int = 0, max_in_flight: int = 0
    ) -> None:
        self.app = app
        self.max_body = max_body
        self.ceiling = max(ceiling, max_body)
        self.max_in_flight = max_in_flight
        self.in_flight = 0  # requests of this process whose response has not started

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        rid = _request_id(headers)
        token = request_id_var.set(rid)
        if _declares_more_than(headers, self.ceiling):
            await self._too_large(send, rid, self.ceiling)
            request_id_var.reset(token)
            return

        started_at = time.perf_counter()
        if self._full(scope):
            await self._error(send, 503, self.BUSY, rid, [(b"retry-after", b"1")])
            request_id_var.reset(token)
            _observe(scope, 503, started_at)
            return
        exchange = _Exchange(self, scope, receive, send, rid)
        self.in_flight += 1
        try:
            await self.app(scope, exchange.receive, exchange.send)
        except TooLarge:
            exchange.status = 413
        except Exception as exc:
            # Answered here rather than by Starlette's outermost error middleware, which runs
            # outside this one: the client still gets the request id and the headers.
            if exchange.started:
                raise
            log.error(
                "unhandled error on %s %s", scope.get("method"), scope.get("path"), exc_info=exc
            )
            exchange.status = 500
            await self._error(send, 500, "Internal server error", rid)
        finally:
            exchange.answered()
            request_id_var.reset(token)
            _observe(scope, exchange.status, started_at)

    def _full(self, scope: Scope) -> bool:
        if not self.max_in_flight or self.in_flight < self.max_in_flight:
            return False
        return not scope.get("path", "").startswith(_ALWAYS_SERVED)

    async def _too_large(self, send: Send, rid: str, limit: int) -> None:
        await self._error(send, 413, f"Request body larger than {limit} bytes", rid)

    async def _error(
        self,
        send: Send,
        status: int,
        detail: str,
        rid: str,
        extra: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        body = json.dumps({"detail": detail, "request_id": rid}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    *(extra or []),
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"x-request-id", rid.encode()),
                    (b"content-security-policy", CSP),
                    *SECURITY_HEADERS,
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
