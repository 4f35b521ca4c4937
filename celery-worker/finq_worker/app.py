"""The worker entry point: `celery -A finq_worker.app worker`.

Caps BLAS/OpenMP threads before NumPy loads (twelve processes on a few cores must not each
start a thread per core), and gives every forked child its own database and Redis connections.
"""

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
             "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS"):
    os.environ.setdefault(_var, "1")

from typing import Any  # noqa: E402

from celery.signals import setup_logging, worker_process_init  # noqa: E402

from finq_core import events  # noqa: E402
from finq_core.broker import celery_app  # noqa: E402
from finq_core.config import get_settings  # noqa: E402
from finq_core.db import reset_engine  # noqa: E402
from finq_core.logs import configure_logging  # noqa: E402
from finq_worker import tasks  # noqa: E402,F401  (registers the task)

app = celery_app


@setup_logging.connect
def _setup_logging(**_: Any) -> None:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)


@worker_process_init.connect
def _after_fork(**_: Any) -> None:
    reset_engine()
    events.get_redis.cache_clear()
