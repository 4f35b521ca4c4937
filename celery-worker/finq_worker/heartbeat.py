"""The worker's main process announces itself in Redis every few seconds (finq_core.presence),
with its pool size and the tasks it is running.

A thread rather than a timer on Celery's event loop: a Redis call that hangs must not stall
the loop that fetches and acknowledges tasks. Celery sends `worker_ready` once per process
(not again after a broker reconnection), so the thread must never die of an error.
"""

import atexit
import logging
import os
import socket
import threading
from typing import Any

import redis
from celery.worker import state

from finq_core import presence
from finq_core.broker import CHUNK_TASK, RUN_TASK, chunk_key
from finq_core.redis_client import get_redis

log = logging.getLogger(__name__)


def running() -> tuple[int, list[str], list[str]]:
    """Requests this worker's pool is executing, the finq task ids and the batch chunks
    (`broker.chunk_key`) among them."""
    # `active_requests` is a WeakSet the event loop changes; copying its underlying set of
    # references is a single C call under the GIL, iterating the WeakSet itself is not.
    requests = [ref() for ref in list(state.active_requests.data)]
    live = [r for r in requests if r is not None]
    tasks = [str(r.args[0]) for r in live if r.name == RUN_TASK and r.args]
    chunks = [
        chunk_key(r.args[0], r.args[1]) for r in live if r.name == CHUNK_TASK and len(r.args) > 1
    ]
    return len(live), tasks, chunks


class Heartbeat(threading.Thread):
    def __init__(self, name: str, slots: int) -> None:
        super().__init__(name="finq-heartbeat", daemon=True)
        self.worker = name
        self.slots = slots
        self.stopping = threading.Event()

    def announcement(self) -> dict[str, Any]:
        active, tasks, chunks = running()
        return {
            "slots": self.slots,
            "active": active,
            "tasks": tasks,
            "chunks": chunks,
            "pid": os.getpid(),
            "host": socket.gethostname(),
        }

    def run(self) -> None:
        failing = False
        while not self.stopping.is_set():
            try:
                presence.beat(get_redis(), self.worker, self.announcement())
                if failing:
                    log.info("heartbeat restored")
                failing = False
            except Exception as exc:  # Redis down, or anything else: beat again later
                if not failing:
                    log.warning("heartbeat not written: %r", exc)
                failing = True
            self.stopping.wait(presence.BEAT_SECONDS)
        # Withdrawn here, after the last beat, so that no beat can land after it.
        try:
            presence.withdraw(get_redis(), self.worker)
        except (redis.RedisError, OSError) as exc:
            log.warning(
                "worker not withdrawn (it drops out after %.0f s): %r", presence.STALE_SECONDS, exc
            )

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=2 * presence.BEAT_SECONDS)


_beating: Heartbeat | None = None


def start(name: str, slots: int) -> None:
    """Start beating (once per process); stop again at exit if no shutdown signal came (a
    cold shutdown sends no `worker_shutdown`)."""
    global _beating
    if _beating is None or not _beating.is_alive():
        _beating = Heartbeat(name, slots)
        _beating.start()
        atexit.register(stop)


def stop() -> None:
    global _beating
    if _beating is not None:
        _beating.stop()
        _beating = None
