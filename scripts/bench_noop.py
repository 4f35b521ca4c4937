"""A no-op Celery task under finq's exact Celery configuration: the bare ceiling of `make bench`.

scripts/bench/stack.py starts its workers with the flags of `deploy/finq-service worker`, and
`finq_core.broker.make_celery` builds the app, so nothing can drift from production. The broker
is BENCH_BROKER_URL, another database of the stack's redis-server; the task only INCRs a
counter, so the bench can tell when a batch is done.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

import redis
from celery import Celery
from celery.signals import worker_process_init

from finq_core.broker import make_celery
from finq_core.config import Settings

NOOP_TASK = "bench.noop"
COUNTER_KEY = "bench:noop:done"
BROKER_URL = os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6380/1")


def make_app(broker_url: str) -> Celery:
    """finq's Celery configuration, pointed at `broker_url`."""
    return make_celery(Settings(redis_url=broker_url))


app = make_app(BROKER_URL)


@lru_cache
def _counter() -> redis.Redis:
    """One connection per pool process, opened after the fork."""
    return redis.Redis.from_url(BROKER_URL)


@worker_process_init.connect
def _after_fork(**_: Any) -> None:
    _counter.cache_clear()


@app.task(name=NOOP_TASK)
def noop() -> None:
    """The work of the ceiling measurement: none, besides saying it ran."""
    _counter().incr(COUNTER_KEY)
