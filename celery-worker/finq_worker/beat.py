"""The beat process's scheduler: `celery beat -S finq_worker.beat:FinqScheduler`.

Schedules live in the database (created over the API), so new ones are picked up on the next
tick without a restart. A Redis lock keeps a second beat, started by mistake, idle. Each tick
also repairs what Redis lost (finq_core.repair); the beat serves its metrics on
WORKER_METRICS_PORT like a worker's main process.
"""

import logging
import os
import socket
from typing import Any

import redis
from celery.beat import Scheduler

from finq_core import dispatch, metrics, repair
from finq_core.config import get_worker_metrics_settings
from finq_core.redis_client import get_redis
from finq_core.timeutil import utcnow

log = logging.getLogger("finq.beat")

TICK_SECONDS = 1.0
MAINTENANCE_EVERY = 60.0
# The stored-results counters recounted from the tasks (finq_core.dispatch.recount_usage).
RECOUNT_EVERY = 3600.0
LOCK_KEY = "finq:beat:lock"
LOCK_TTL = 15


class FinqScheduler(Scheduler):  # type: ignore[misc]  # Celery ships no types: Any base
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._identity = f"{socket.gethostname()}:{os.getpid()}"
        self._last_maintenance = 0.0
        self._last_recount = 0.0
        self._warned = False
        self._repairer = repair.Repairer()

    def setup_schedule(self) -> None:
        """Runs once in the scheduler that ticks (celery also builds a lazy one for its banner)."""
        super().setup_schedule()
        metrics.zero_repair_counters()
        endpoint = get_worker_metrics_settings()
        metrics.serve(endpoint.worker_metrics_port, endpoint.worker_metrics_address)

    def _hold_lock(self) -> bool:
        r = get_redis()
        if r.set(LOCK_KEY, self._identity, nx=True, ex=LOCK_TTL):
            return True
        if r.get(LOCK_KEY) == self._identity:
            r.expire(LOCK_KEY, LOCK_TTL)
            return True
        return False

    def close(self) -> None:
        """Release the lock on a clean stop so a restarted beat resumes at once."""
        try:
            r = get_redis()
            if r.get(LOCK_KEY) == self._identity:
                r.delete(LOCK_KEY)
        except redis.RedisError:
            pass
        super().close()

    def tick(self, *args: Any, **kwargs: Any) -> float:
        super().tick(*args, **kwargs)
        try:
            if not self._hold_lock():
                if not self._warned:
                    log.warning("another beat holds %s; staying idle", LOCK_KEY)
                    self._warned = True
                return TICK_SECONDS
            self._warned = False
            now = utcnow()
            fired = dispatch.fire_schedules(now)
            sent = dispatch.dispatch_due(now)
            if fired or sent:
                log.info("beat: %d scheduled runs created, %d tasks queued", fired, sent)
            self._repairer.run_pass(now)
            mono = now.timestamp()
            if mono - self._last_maintenance >= MAINTENANCE_EVERY:
                self._last_maintenance = mono
                stuck = dispatch.mark_stuck(now)
                purged = dispatch.purge_finished(now) + dispatch.purge_batches(now)
                if stuck or purged:
                    log.info(
                        "beat: %d stuck tasks failed, %d old tasks and batches purged",
                        stuck,
                        purged,
                    )
            if mono - self._last_recount >= RECOUNT_EVERY:
                self._last_recount = mono
                dispatch.recount_usage()
        except (redis.RedisError, OSError) as exc:
            log.warning("beat tick skipped: %s", exc)
        except Exception:  # a bug in one pass must not stop the beat: log it, tick again
            log.exception("beat tick failed")
        return TICK_SECONDS
