"""The worker's main process announces itself in Redis every few seconds (finq_core.presence).

A thread rather than a timer on Celery's event loop: a Redis call that hangs must not stall
the loop that fetches and acknowledges tasks, and a frozen loop still shows in the task
figures, while the thread only has to prove that the process is alive and reachable.
"""

import logging
import os
import socket
import threading
from typing import Any

import redis

from finq_core import events, presence

log = logging.getLogger(__name__)


class Heartbeat(threading.Thread):
    def __init__(self, name: str, slots: int) -> None:
        super().__init__(name="finq-heartbeat", daemon=True)
        self.worker = name
        self.info: dict[str, Any] = {"slots": slots, "pid": os.getpid(),
                                     "host": socket.gethostname()}
        self.stopping = threading.Event()

    def run(self) -> None:
        failing = False
        while not self.stopping.is_set():
            try:
                presence.beat(events.get_redis(), self.worker, self.info)
                if failing:
                    log.info("heartbeat restored")
                failing = False
            except redis.RedisError as exc:
                if not failing:
                    log.warning("heartbeat not written: %s", exc)
                failing = True
            self.stopping.wait(presence.BEAT_SECONDS)

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=presence.BEAT_SECONDS)
        try:
            presence.withdraw(events.get_redis(), self.worker)
        except redis.RedisError as exc:
            log.warning("worker not withdrawn (it drops out after %.0f s): %s",
                        presence.STALE_SECONDS, exc)


_beating: Heartbeat | None = None


def start(name: str, slots: int) -> None:
    """Idempotent: Celery announces readiness again after a broker reconnection."""
    global _beating
    if _beating is None or not _beating.is_alive():
        _beating = Heartbeat(name, slots)
        _beating.start()


def stop() -> None:
    global _beating
    if _beating is not None:
        _beating.stop()
        _beating = None
