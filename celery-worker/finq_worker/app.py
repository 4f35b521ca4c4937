"""The worker entry point: `celery -A finq_worker.app worker`.

Gives every forked child its own database and Redis connections. BLAS/OpenMP threads are capped
by deploy/finq-service, which starts every worker.
"""

import logging
import os
from typing import Any

from celery.signals import (
    setup_logging,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)

from finq_core import heap, metrics
from finq_core.broker import celery_app
from finq_core.config import get_settings, get_worker_metrics_settings
from finq_core.db import is_sqlite, reset_engine
from finq_core.logs import configure_logging
from finq_core.redis_client import get_redis
from finq_engine import TASK_TYPES
from finq_worker import (  # noqa: F401  (registers tasks)
    batch_tasks,
    charts,
    deliveries,
    heartbeat,
    priority,
    tasks,
)

app = celery_app
log = logging.getLogger("finq.worker")

# Decided by the main process before the pool forks: the pool's transactions leave SCHED_IDLE
# (finq_worker.priority).
_ceiling = False


@setup_logging.connect
def _setup_logging(**_: Any) -> None:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)


@worker_process_init.connect
def _after_fork(**_: Any) -> None:
    if get_settings().worker_sched_idle:
        priority.yield_to_everything()
        if _ceiling:
            priority.hold_transactions_at_normal_policy()
    reset_engine()
    get_redis.cache_clear()
    metrics.worker_slots.set(1)
    metrics.zero_task_counters(TASK_TYPES, api=False)
    heap.freeze_startup()  # a collection inside a transaction would hold the database's lock


@worker_process_shutdown.connect
def _process_gone(**_: Any) -> None:
    metrics.mark_process_dead(os.getpid())


@worker_init.connect
def _yield_the_cpu(**_: Any) -> None:
    """Lower this worker's CPU priority before its pool forks (the pool inherits it). With
    SQLite, whose one write lock the API waits on, the pool's transactions leave SCHED_IDLE
    when this process may (CAP_SYS_NICE, or RLIMIT_NICE)."""
    global _ceiling
    settings = get_settings()
    if os.getpriority(os.PRIO_PROCESS, 0) < settings.worker_nice:
        os.setpriority(os.PRIO_PROCESS, 0, settings.worker_nice)
    if settings.worker_sched_idle and is_sqlite(settings.database_url):
        _ceiling = priority.this_process_may_leave_idle()
        if not _ceiling:
            log.warning(
                "the pool's SQLite transactions stay under SCHED_IDLE (leaving it needs "
                "CAP_SYS_NICE or RLIMIT_NICE >= %d): API writes may wait behind busy pool "
                "processes",
                20 - settings.worker_nice,
            )


@worker_init.connect
def _warm_up_charts(**_: Any) -> None:
    charts.warm_up()


@worker_init.connect
def _serve_metrics(**_: Any) -> None:
    """The worker's main process serves the pool's summed metrics on an internal port."""
    endpoint = get_worker_metrics_settings()
    metrics.serve(endpoint.worker_metrics_port, endpoint.worker_metrics_address)


@worker_init.connect
def _freeze_startup_heap(**_: Any) -> None:
    """Connected last: the main process's imports and chart warm-up, frozen before the pool
    forks (the pool processes inherit them frozen, and share their pages)."""
    heap.freeze_startup()


@worker_ready.connect
def _announce(sender: Any, **_: Any) -> None:
    """Online once the consumer fetches tasks; the count the API shows comes from this."""
    worker = sender.controller
    heartbeat.start(worker.hostname, int(worker.concurrency))


@worker_shutdown.connect
def _withdraw(**_: Any) -> None:
    heartbeat.stop()
