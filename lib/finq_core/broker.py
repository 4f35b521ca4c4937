"""The Celery application shared by the API (which only sends) and the workers (which run).

Every setting below serves CPU-heavy work with at-least-once delivery; the README explains
each one. Tasks carry only the record id: the parameters live in the database, so a message is
tiny and a redelivered message can never run stale parameters.
"""

import uuid
from datetime import datetime
from typing import Any

import redis
from celery import Celery
from kombu.entity import Queue
from kombu.exceptions import OperationalError as KombuOperationalError

from finq_core.config import Settings, get_settings
from finq_core.models import Priority
from finq_core.notifications import TARGET_FIELDS
from finq_core.redis_client import get_redis

RUN_TASK = "finq.run"
QUEUES = [p.value for p in (Priority.HIGH, Priority.NORMAL, Priority.LOW)]
# Deliveries have their own queue, polled first: brief I/O should not wait behind queued
# calculations. The wire names keep "notify" so messages in flight and WORKER_QUEUES survive.
DELIVERY_TASK = "finq.notify"
DELIVERY_QUEUE = "notify"
# Charts are drawn on first request (GET .../chart.png) by a task of their own: a chart costs
# more than its calculation and most results are never looked at. Someone is waiting for it, so
# its queue is polled right after `notify`.
CHART_TASK = "finq.chart"
# A chunk of a batch's items (finq_core.batch_runs) goes to the batch's priority queue, beside
# single tasks; a batch's ending is announced by one `finq.batch_notify` on the notify queue.
CHUNK_TASK = "finq.batch_chunk"
BATCH_NOTIFY_TASK = "finq.batch_notify"
CHART_QUEUE = "charts"
# One quick retry rides over a pooled connection that Redis closed when it restarted; with
# Redis down a send still fails within a second.
SEND_RETRY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}
# What a send raises when Redis is unreachable: kombu wraps the connection errors it retried in
# its OperationalError; other Redis errors (e.g. OOM) and socket errors come through as they are.
UNAVAILABLE = (KombuOperationalError, redis.RedisError, OSError)


def retry_backoff_cap(settings: Settings) -> float:
    """The longest retry countdown: a retried message waits unacked in its worker that long."""
    return float(min(60, settings.default_task_timeout))


def visibility_timeout(settings: Settings) -> int:
    """Redis re-delivers an unacked message after this long: above the longest task (hard
    limit) plus the longest retry countdown, so a live task is never delivered twice, yet a
    message whose worker died wholesale comes back without waiting hours."""
    return int(settings.default_task_timeout + retry_backoff_cap(settings) + 10)


# How often every live worker looks for unacknowledged messages past the visibility timeout
# (kombu's restore scan). kombu's own default scans every 10th 10 s call, every 100 s.
RESTORE_SCAN_SECONDS = 10


def redelivery_bound(settings: Settings) -> int:
    """Seconds after its delivery by which the message of a task whose whole worker died is
    back at the front of its queue, provided another worker is running (or one starts: its
    first scan is at once): the visibility timeout plus one restore scan."""
    return visibility_timeout(settings) + RESTORE_SCAN_SECONDS


def make_celery(settings: Settings) -> Celery:
    app = Celery("finq", broker=settings.redis_url)
    app.conf.update(
        task_queues=[Queue(name) for name in (DELIVERY_QUEUE, CHART_QUEUE, *QUEUES)],
        task_default_queue=Priority.NORMAL.value,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,  # outcomes live in the database, not a result backend
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        task_time_limit=settings.default_task_timeout,
        task_soft_time_limit=settings.soft_time_limit,
        worker_soft_shutdown_timeout=min(60.0, float(settings.default_task_timeout)),
        worker_enable_soft_shutdown_on_idle=True,
        worker_max_memory_per_child=1_500_000,  # KiB: recycle a child that grew past 1.5 GB
        worker_send_task_events=settings.task_events,
        task_send_sent_event=False,  # CPU on every submit; Flower learns of tasks when received
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            "visibility_timeout": visibility_timeout(settings),
            # Every worker scans for a dead worker's messages each RESTORE_SCAN_SECONDS.
            "unacked_restore_interval": RESTORE_SCAN_SECONDS,
            "unacked_restore_throttle": 1,
            # Consume high, then normal, then low: strict order rather than round robin.
            "queue_order_strategy": "priority",
            "socket_timeout": 10,
            "socket_connect_timeout": 5,
            "retry_on_timeout": True,
            "health_check_interval": 25,
        },
        broker_pool_limit=10,
    )
    return app


celery_app = make_celery(get_settings())


def warm_up() -> None:
    """Load now what a process's first send would load: Celery's router, result backend and
    event dispatcher and kombu's Redis transport. A fresh API process spent ~100 ms of CPU on
    it, holding the GIL, inside its first submit, and every request beside that one waited
    (issue 20). Opens no connection: Redis may still be down while the API starts."""
    import encodings.idna  # noqa: F401  (the codec a first connect encodes host names with)

    app = celery_app
    _ = (app.backend, app.amqp.router, app.events.Dispatcher)
    with app.connection_for_write() as connection:
        _ = connection.transport


def enqueue(
    task_id: str, priority: str, request_id: str | None = None, eta: datetime | None = None
) -> None:
    """Put one task on its priority queue; raises kombu/redis errors when Redis is down."""
    celery_app.send_task(
        RUN_TASK,
        args=[task_id],
        queue=priority,
        eta=eta,
        headers={"request_id": request_id} if request_id else None,
        retry=True,
        retry_policy=SEND_RETRY,
    )


def enqueue_deliveries(task_id: str, status: str, targets: dict[str, Any]) -> None:
    """Queue one delivery per channel named in `targets` (a task's `notify`); raises
    kombu/redis errors when Redis is down. The delivery id is the same on every attempt."""
    for channel, field in TARGET_FIELDS.items():
        if targets.get(field):
            celery_app.send_task(
                DELIVERY_TASK,
                args=[task_id, channel, status, uuid.uuid4().hex],
                queue=DELIVERY_QUEUE,
                retry=True,
                retry_policy=SEND_RETRY,
            )


def enqueue_chunk(batch_id: str, chunk: int, priority: str) -> None:
    """Put one chunk of a batch on its priority queue; raises when Redis is down."""
    celery_app.send_task(
        CHUNK_TASK, args=[batch_id, chunk], queue=priority, retry=True, retry_policy=SEND_RETRY
    )


def chunk_key(batch_id: object, chunk: object) -> str:
    """How the repair and the workers' heartbeats name one chunk's message."""
    return f"{batch_id}:{chunk}"


def enqueue_batch_notification(batch_id: str, status: str) -> None:
    """Queue the one notification of a batch's end; raises when Redis is down."""
    celery_app.send_task(
        BATCH_NOTIFY_TASK,
        args=[batch_id, status],
        queue=DELIVERY_QUEUE,
        retry=True,
        retry_policy=SEND_RETRY,
    )


def enqueue_chart(task_id: str) -> None:
    """Queue the drawing of a successful task's chart; raises when Redis is down."""
    celery_app.send_task(
        CHART_TASK, args=[task_id], queue=CHART_QUEUE, retry=True, retry_policy=SEND_RETRY
    )


# Kombu's Redis transport (kombu/transport/redis.py): a queue is a list (LPUSH to publish,
# BRPOP to consume) plus one sub-list per priority step, named queue + "\x06\x16" + step; a
# delivered message waits in the `unacked` hash (and its time in `unacked_index`) until acked.
PRIORITY_STEPS = (3, 6, 9)
UNACKED_KEY = "unacked"
UNACKED_INDEX_KEY = "unacked_index"
ALL_QUEUES = (DELIVERY_QUEUE, CHART_QUEUE, *QUEUES)


def queue_keys(name: str) -> list[str]:
    """The Redis lists holding one queue's messages."""
    return [name, *(f"{name}\x06\x16{step}" for step in PRIORITY_STEPS)]


def queue_depths(queues: list[str]) -> dict[str, int]:
    """Messages waiting per Celery queue (kombu keeps priority sub-lists beside each list)."""
    pipe = get_redis().pipeline()
    for name in queues:
        for key in queue_keys(name):
            pipe.llen(key)
    counts = pipe.execute()
    return {name: int(sum(counts[i * 4 : (i + 1) * 4])) for i, name in enumerate(queues)}
