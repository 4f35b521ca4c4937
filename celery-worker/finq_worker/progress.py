"""The worker's RunContext: throttled progress into the record and Redis, cancel flags."""

import logging
import time
import uuid

from finq_core import flags
from finq_core.changes import publish_progress
from finq_core.db import session_scope
from finq_core.store import set_progress

log = logging.getLogger("finq.worker")


class WorkerContext:
    """Progress is written at most every `interval` seconds (none for a shorter task: the claim
    stored 0%, the outcome stores 100%). The cancel flag is read with every progress report,
    else at most every `cancel_check_seconds` (the claim read it too)."""

    cancel_check_seconds = 0.05

    def __init__(self, task_id: uuid.UUID, interval: float) -> None:
        self.task_id = task_id
        self.interval = interval
        self._last_write = self._last_cancel_check = time.monotonic()
        self._cancelled = False
        # The latest report's message, written or not: the outcome stores it beside 100%, so
        # a finished task never shows an earlier report's counts ("100% · 199,728 of 225,000").
        self.message: str | None = None

    def progress(self, fraction: float, message: str | None = None) -> None:
        now = time.monotonic()
        fraction = min(1.0, max(0.0, float(fraction)))
        self.message = message
        if fraction >= 1.0 or now - self._last_write < self.interval:
            return
        self._last_write = now
        with session_scope() as session:
            set_progress(session, self.task_id, fraction, message)
        # The cancel check rides along with the publication: one round trip, not two, per
        # report (and a round trip is also a context switch on a busy machine).
        cancelled = publish_progress(self.task_id, fraction, message)
        if cancelled is not None:
            self._cancelled = self._cancelled or cancelled
            self._last_cancel_check = now
        # DEBUG: a line per report would flood a busy stack's logs.
        log.debug(
            "task progress", extra={"task_id": str(self.task_id), "progress": round(fraction, 4)}
        )

    def cancelled(self) -> bool:
        now = time.monotonic()
        if not self._cancelled and now - self._last_cancel_check >= self.cancel_check_seconds:
            self._last_cancel_check = now
            self._cancelled = flags.cancel_requested(str(self.task_id))
        return self._cancelled
