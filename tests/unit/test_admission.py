"""EdgeMiddleware's bound on requests in progress (API_MAX_IN_FLIGHT), driven as ASGI calls:
past the bound a request is answered 503 at once, with Retry-After and the request id; health
probes always pass; a slot is freed when a response starts (a stream does not hold one) or the
request fails."""

import asyncio
import json
from pathlib import Path
from typing import Any

import yaml
from _localstack_settings import SERVICE_ENV

from finq_api.middleware import EdgeMiddleware, Message, Receive, Scope, Send


class Held:
    """An app whose requests wait until released; /stream starts its response first."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.entered = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.entered += 1
        if scope["path"] == "/boom":
            raise RuntimeError("poisoned")
        if scope["path"] == "/stream":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await self.release.wait()
            await send({"type": "http.response.body", "body": b"done"})
            return
        await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


async def call(edge: EdgeMiddleware, path: str) -> list[Message]:
    scope: Scope = {"type": "http", "method": "GET", "path": path, "headers": []}
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await edge(scope, receive, send)
    return sent


def status(sent: list[Message]) -> int:
    return int(next(m for m in sent if m["type"] == "http.response.start")["status"])


async def until(condition: Any) -> None:
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition not reached")


def test_past_the_bound_a_request_is_refused_at_once_and_probes_still_pass() -> None:
    async def scenario() -> None:
        app = Held()
        edge = EdgeMiddleware(app, max_body=1024, max_in_flight=2)
        held = [asyncio.create_task(call(edge, "/api/v1/tasks")) for _ in range(2)]
        await until(lambda: app.entered == 2)

        refused = await asyncio.wait_for(call(edge, "/api/v1/tasks"), 1)
        assert status(refused) == 503
        headers = dict(refused[0]["headers"])
        assert headers[b"retry-after"] == b"1"
        body = json.loads(refused[1]["body"])
        assert body["detail"] == EdgeMiddleware.BUSY
        assert headers[b"x-request-id"].decode() == body["request_id"]
        assert app.entered == 2  # the app never saw it

        probe = asyncio.create_task(call(edge, "/health/ready"))
        await until(lambda: app.entered == 3)
        app.release.set()
        assert [status(s) for s in await asyncio.gather(*held, probe)] == [200, 200, 200]
        assert edge.in_flight == 0
        assert status(await call(edge, "/api/v1/tasks")) == 200

    asyncio.run(scenario())


def test_a_started_stream_and_a_failed_request_free_their_slot() -> None:
    async def scenario() -> None:
        app = Held()
        edge = EdgeMiddleware(app, max_body=1024, max_in_flight=1)
        stream = asyncio.create_task(call(edge, "/stream"))
        await until(lambda: app.entered == 1 and edge.in_flight == 0)

        assert status(await call(edge, "/boom")) == 500
        assert edge.in_flight == 0
        waiting = asyncio.create_task(call(edge, "/api/v1/tasks"))
        await until(lambda: edge.in_flight == 1)
        assert status(await call(edge, "/api/v1/tasks")) == 503
        app.release.set()
        assert [status(s) for s in await asyncio.gather(stream, waiting)] == [200, 200]
        assert edge.in_flight == 0

    asyncio.run(scenario())


def test_no_bound_by_zero() -> None:
    async def scenario() -> None:
        app = Held()
        edge = EdgeMiddleware(app, max_body=1024, max_in_flight=0)
        held = [asyncio.create_task(call(edge, "/api/v1/tasks")) for _ in range(50)]
        await until(lambda: app.entered == 50)
        app.release.set()
        assert {status(s) for s in await asyncio.gather(*held)} == {200}

    asyncio.run(scenario())


def test_every_launcher_of_the_api_passes_the_bound_on() -> None:
    """compose, the Swarm stack and `make run` hand API_MAX_IN_FLIGHT to the API processes
    (the chart: tests/deploy/test_helm_chart.py); else a value set in `.env` does nothing."""
    root = Path(__file__).resolve().parents[2]
    for file in ("docker-compose.yml", "deploy/swarm/stack.yml"):
        api = yaml.safe_load((root / file).read_text())["services"]["fastapi-app"]
        assert api["environment"]["API_MAX_IN_FLIGHT"] == "${API_MAX_IN_FLIGHT:-64}", file
    assert "API_MAX_IN_FLIGHT" in SERVICE_ENV
