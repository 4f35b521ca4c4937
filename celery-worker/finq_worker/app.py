"""The worker entry point: `celery -A finq_worker.app worker`.

Caps BLAS/OpenMP threads before NumPy loads (twelve processes on a few cores must not each
start a thread per core), and gives every forked child its own database and Redis connections.
"""

import os

for _var in (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
):
    os.environ.setdefault(_var, "1")

from typing import Any  # noqa: E402

from celery.signals import (  # noqa: E402
    setup_logging,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)
from prometheus_client import CollectorRegistry, multiprocess, start_http_server  # noqa: E402

from finq_core import metrics  # noqa: E402
from finq_core.broker import celery_app  # noqa: E402
from finq_core.config import get_settings  # noqa: E402
from finq_core.db import reset_engine  # noqa: E402
from finq_core.logs import configure_logging  # noqa: E402
from finq_core.redis_client import get_redis  # noqa: E402
from finq_engine import TASK_TYPES  # noqa: E402
from finq_worker import charts, deliveries, heartbeat, tasks  # noqa: E402,F401  (registers tasks)

app = celery_app


@setup_logging.connect
def _setup_logging(**_: Any) -> None:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)


@worker_process_init.connect
def _after_fork(**_: Any) -> None:
    reset_engine()
    get_redis.cache_clear()
    metrics.worker_slots.set(1)
    metrics.zero_task_counters(TASK_TYPES, api=False)


@worker_process_shutdown.connect
def _process_gone(**_: Any) -> None:
    metrics.mark_process_dead(os.getpid())


@worker_init.connect
def _warm_up_charts(**_: Any) -> None:
    charts.warm_up()


@worker_init.connect
def _serve_metrics(**_: Any) -> None:
    """The worker's main process serves the pool's summed metrics on an internal port."""
    port = int(os.environ.get("WORKER_METRICS_PORT", "9808"))
    if port <= 0:
        return
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    start_http_server(
        port, addr=os.environ.get("WORKER_METRICS_ADDRESS", "0.0.0.0"), registry=registry
    )


@worker_ready.connect
def _announce(sender: Any, **_: Any) -> None:
    """Online once the consumer fetches tasks; the count the API shows comes from this."""
    worker = sender.controller
    heartbeat.start(worker.hostname, int(worker.concurrency))


@worker_shutdown.connect
def _withdraw(**_: Any) -> None:
    heartbeat.stop()
