"""One Redis pub/sub connection per API process, fanned out to its live streams.

Every stream of a process shares the hub's connection: the hub subscribes a task's channel
when its first stream opens, unsubscribes it when the last one closes, and hands each change
to the streams' own queues. A lost connection is made again (with back-off) and subscribed
again, and every stream is told to re-read its record: changes published meanwhile are lost.
Short commands (tickets, stream counts) use `commands()`, a small pool bounded per process.
"""

import asyncio
import contextlib
import json
import logging
import uuid
import weakref
from collections import deque
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub

from finq_core.config import get_settings

log = logging.getLogger("finq.api.hub")

# What a stream's queue holds: a change, or RESYNC (read the record again).
RESYNC: dict[str, Any] = {}
Change = dict[str, Any]
# Changes a slow stream may have waiting; beyond, they are dropped for one RESYNC.
QUEUE_SIZE = 256
# How long opening a stream waits for the hub's connection, then for Redis to confirm a
# subscription, before it answers 503.
CONNECT_WAIT_SECONDS = 3.0
RETRY_FIRST_SECONDS, RETRY_MAX_SECONDS = 0.2, 5.0
# Connections for short commands per process: opening many streams at once waits for one.
COMMAND_CONNECTIONS = 2


class HubUnavailableError(Exception):
    """Redis cannot be reached: no live updates for now."""


class ChangeHub:
    """The process's subscriptions. Call `subscribe` and `unsubscribe` from its event loop."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._client = client
        self._queues: dict[str, set[asyncio.Queue[Change]]] = {}
        # Subscriptions sent and not yet confirmed, per channel (Redis confirms in order).
        self._pending: dict[str, deque[asyncio.Future[None]]] = {}
        # Channels subscribed again after a reconnection: their streams resync once confirmed.
        self._stale: set[str] = set()
        self._pubsub: PubSub | None = None
        self._ready = asyncio.Event()
        self._write = asyncio.Lock()
        # The hub's own channel keeps the connection subscribed (and open) with no stream.
        self._own = f"finq:hub:{uuid.uuid4().hex}"
        self._reader: asyncio.Task[None] | None = None

    async def subscribe(self, channel: str) -> asyncio.Queue[Change]:
        """A queue of the channel's changes, once Redis confirms the subscription: nothing
        published after this returns is missed."""
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._run(), name="finq-change-hub")
        queue: asyncio.Queue[Change] = asyncio.Queue(maxsize=QUEUE_SIZE)
        queues = self._queues.setdefault(channel, set())
        queues.add(queue)
        try:
            pending = self._pending.get(channel)
            if len(queues) == 1:
                waiter = await self._send(channel, subscribe=True)
            else:
                waiter = pending[-1] if pending else None
            if waiter is not None:
                await asyncio.wait_for(asyncio.shield(waiter), CONNECT_WAIT_SECONDS)
        except (TimeoutError, HubUnavailableError, aioredis.RedisError, OSError):
            await self.unsubscribe(channel, queue)
            raise HubUnavailableError() from None
        return queue

    async def unsubscribe(self, channel: str, queue: asyncio.Queue[Change]) -> None:
        queues = self._queues.get(channel)
        if queues is None:
            return
        queues.discard(queue)
        if not queues:
            del self._queues[channel]
            with contextlib.suppress(HubUnavailableError, aioredis.RedisError, OSError):
                await self._send(channel, subscribe=False)

    def streams(self) -> int:
        return sum(len(q) for q in self._queues.values())

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self._client.aclose()

    async def _send(self, channel: str, subscribe: bool) -> asyncio.Future[None] | None:
        try:
            await asyncio.wait_for(self._ready.wait(), CONNECT_WAIT_SECONDS)
        except TimeoutError:
            raise HubUnavailableError() from None
        pubsub = self._pubsub
        if pubsub is None:
            raise HubUnavailableError()
        waiter: asyncio.Future[None] | None = None
        async with self._write:
            if subscribe:
                waiter = asyncio.get_running_loop().create_future()
                self._pending.setdefault(channel, deque()).append(waiter)
                await pubsub.subscribe(channel)
            else:
                await pubsub.unsubscribe(channel)
        return waiter

    async def _run(self) -> None:
        delay = RETRY_FIRST_SECONDS
        while True:
            pubsub = self._client.pubsub()
            try:
                await self._connect(pubsub)
                delay = RETRY_FIRST_SECONDS
                while True:
                    self._dispatch(await pubsub.get_message(timeout=None))
            except (aioredis.RedisError, OSError) as exc:
                log.warning("live changes: Redis connection lost (%s); reconnecting", exc)
            finally:
                self._lost()
                with contextlib.suppress(Exception):  # closing a broken connection may fail
                    await asyncio.shield(pubsub.aclose())
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_SECONDS)

    async def _connect(self, pubsub: PubSub) -> None:
        channels = list(self._queues)
        async with self._write:
            await pubsub.subscribe(self._own, *channels)
        self._stale.update(channels)
        self._pubsub = pubsub
        self._ready.set()
        if channels:
            log.info("live changes: reconnected, %d channels subscribed again", len(channels))

    def _lost(self) -> None:
        """The connection is gone: waiting subscriptions fail (503), open streams poll."""
        self._ready.clear()
        self._pubsub = None
        for waiters in self._pending.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(HubUnavailableError())
        self._pending.clear()
        self._stale.clear()

    def _dispatch(self, msg: dict[str, Any] | None) -> None:
        if msg is None:
            return
        channel = msg["channel"]
        if msg["type"] == "subscribe":
            self._confirmed(channel)
        elif msg["type"] == "message":
            with contextlib.suppress(ValueError, TypeError):
                change = json.loads(msg["data"])
                for queue in self._queues.get(channel, ()):
                    _offer(queue, change if isinstance(change, dict) else RESYNC)

    def _confirmed(self, channel: str) -> None:
        if channel in self._stale:
            self._stale.discard(channel)
            for queue in self._queues.get(channel, ()):
                _offer(queue, RESYNC)
            return
        waiters = self._pending.get(channel)
        if waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
            if not waiters:
                del self._pending[channel]


def _offer(queue: asyncio.Queue[Change], change: Change) -> None:
    """A full queue (a stream that cannot keep up) is emptied for one RESYNC."""
    try:
        queue.put_nowait(change)
    except asyncio.QueueFull:
        while not queue.empty():
            queue.get_nowait()
        queue.put_nowait(RESYNC)


# One hub and one command pool per event loop (one per process in gunicorn's workers; tests
# may run several loops one after another).
_hubs: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ChangeHub]" = (
    weakref.WeakKeyDictionary()
)
_pools: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis]" = (
    weakref.WeakKeyDictionary()
)


def hub() -> ChangeHub:
    loop = asyncio.get_running_loop()
    if loop not in _hubs:
        client = aioredis.from_url(
            get_settings().redis_url,
            decode_responses=True,
            socket_connect_timeout=CONNECT_WAIT_SECONDS,
            socket_keepalive=True,
        )
        _hubs[loop] = ChangeHub(client)
    return _hubs[loop]


def commands() -> aioredis.Redis:
    """The process's client for short commands: at most COMMAND_CONNECTIONS connections."""
    loop = asyncio.get_running_loop()
    if loop not in _pools:
        pool = aioredis.BlockingConnectionPool.from_url(
            get_settings().redis_url,
            max_connections=COMMAND_CONNECTIONS,
            timeout=CONNECT_WAIT_SECONDS,
            decode_responses=True,
            socket_timeout=CONNECT_WAIT_SECONDS,
            socket_connect_timeout=CONNECT_WAIT_SECONDS,
        )
        _pools[loop] = aioredis.Redis(connection_pool=pool)
    return _pools[loop]


async def close() -> None:
    """At the process's shutdown: stop the hub, close the connections."""
    loop = asyncio.get_running_loop()
    if (h := _hubs.pop(loop, None)) is not None:
        await h.close()
    if (c := _pools.pop(loop, None)) is not None:
        await c.aclose()
