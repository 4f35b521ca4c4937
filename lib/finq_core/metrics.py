"""Prometheus metrics shared by the API and the workers.

Both run several processes (gunicorn workers, Celery's prefork pool), so prometheus-client's
multiprocess mode is used: each process writes its samples to files in
PROMETHEUS_MULTIPROC_DIR (set per replica by deploy/finq-service, wiped at start), and the
exposition endpoint of the replica sums them. Counters therefore neither reset when a process is
replaced nor double count across processes; Prometheus sums across replicas.
"""

import os
from collections.abc import Iterable, Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

HTTP_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
TASK_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)

http_requests = Counter(
    "finq_http_requests_total", "HTTP requests answered", ["method", "route", "status"]
)
http_latency = Histogram(
    "finq_http_request_duration_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=HTTP_BUCKETS,
)
rate_limited = Counter("finq_rate_limit_rejections_total", "Requests refused with 429", ["scope"])
quota_refusals = Counter(
    "finq_quota_refusals_total",
    "Submissions, schedules and schedule runs refused by a per-user quota",
    ["quota"],
)
# Served by the beat (finq_core.dispatch): runs a schedule did not create, and why.
schedule_runs_skipped = Counter(
    "finq_schedule_runs_skipped_total",
    "Schedule runs skipped: over a quota or the submit limit, or too soon after the last run",
    ["reason"],
)
tasks_submitted = Counter(
    "finq_tasks_submitted_total", "Tasks accepted by the API", ["type", "priority"]
)
tasks_started = Counter(
    "finq_tasks_started_total", "Task runs started by workers", ["type", "priority"]
)
tasks_finished = Counter(
    "finq_tasks_finished_total", "Task runs ended, by outcome", ["type", "priority", "status"]
)
batch_items_finished = Counter(
    "finq_batch_items_finished_total",
    "Batch items ended by workers, by outcome",
    ["type", "status"],
)
batches_submitted = Counter(
    "finq_batches_submitted_total", "Batches accepted by the API", ["type", "priority"]
)
batch_items_submitted = Counter(
    "finq_batch_items_submitted_total", "Items of the batches accepted by the API", ["type"]
)
batches_finished = Counter(
    "finq_batches_finished_total", "Batches ended, by outcome", ["type", "status"]
)
tasks_retried = Counter(
    "finq_tasks_retried_total", "Transient failures sent back to retry", ["type", "priority"]
)
task_runtime = Histogram(
    "finq_task_runtime_seconds", "Run time of a task", ["type"], buckets=TASK_BUCKETS
)
task_queue_wait = Histogram(
    "finq_task_queue_wait_seconds",
    "Submit (or due time) to start",
    ["type", "priority"],
    buckets=TASK_BUCKETS,
)
worker_busy = Gauge(
    "finq_worker_busy_slots", "Pool processes running a task", multiprocess_mode="livesum"
)
worker_slots = Gauge("finq_worker_pool_slots", "Pool processes alive", multiprocess_mode="livesum")
# The beat's repair of lost broker messages (finq_core.repair); its main process serves them.
REPAIR_REASONS = ("broker_emptied", "message_missing", "worker_lost")
messages_repaired = Counter(
    "finq_messages_repaired_total",
    "Tasks and batch chunks queued again because the broker lost their message",
    ["reason"],
)
repair_sweeps = Counter(
    "finq_repair_sweeps_total",
    "Passes of the repair over the broker: idle (no record old enough to doubt), clean (every "
    "message found), repaired (some re-sent)",
    ["result"],
)


def zero_repair_counters() -> None:
    """Every repair series at 0 from the start, so that the first repair has a rate()."""
    for reason in REPAIR_REASONS:
        messages_repaired.labels(reason)
    for result in ("idle", "clean", "repaired"):
        repair_sweeps.labels(result)


def zero_task_counters(types: Iterable[str], api: bool) -> None:
    """Create every (type, priority[, outcome]) series at 0 when a process starts.

    A series that first appears with value 3 has no rate() in Prometheus: the first failures of
    a type would be invisible to the dashboard and to the error-rate alert. The API process
    owns the submission counter, workers the run counters."""
    priorities = ("high", "normal", "low")
    for type_ in types:
        for priority in priorities:
            if api:
                tasks_submitted.labels(type_, priority)
                continue
            tasks_started.labels(type_, priority)
            tasks_retried.labels(type_, priority)
            for outcome in ("success", "failed", "cancelled"):
                tasks_finished.labels(type_, priority, outcome)


class QueueCollector(Collector):
    """Queue depths read from Redis at scrape time (a gauge nobody has to keep updated)."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from finq_core.broker import ALL_QUEUES, UNAVAILABLE, queue_depths

        family = GaugeMetricFamily(
            "finq_queue_depth", "Messages waiting per queue", labels=["queue"]
        )
        try:
            depths = queue_depths(list(ALL_QUEUES))
        except UNAVAILABLE:  # Redis down: no sample rather than a failed scrape
            depths = {}
        for name, depth in depths.items():
            family.add_metric([name], depth)
        yield family


def summed_registry() -> CollectorRegistry:
    """Every process's samples summed (multiprocess mode), or this process's alone."""
    registry = CollectorRegistry()
    # Not a finq setting: prometheus_client reads it itself (finq-service sets it per replica).
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)
    else:  # a single process (tests, scripts)
        from prometheus_client import REGISTRY

        registry = REGISTRY
    return registry


def exposition(with_queues: bool = False) -> bytes:
    """The replica's metrics: every process's samples summed (multiprocess mode)."""
    text = generate_latest(summed_registry())
    if with_queues:
        # A registry of its own: in a single process the summed one is the global REGISTRY,
        # where a second scrape would register the collector twice.
        queues = CollectorRegistry()
        queues.register(QueueCollector())
        text += generate_latest(queues)
    return text


def serve(port: int, address: str) -> None:
    """Serve the process's metrics on a port of its own (0: none): the worker's main process
    (its pool's, summed) and the beat, which answer no HTTP otherwise."""
    if port:
        start_http_server(port, addr=address, registry=summed_registry())


def mark_process_dead(pid: int) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(pid)
