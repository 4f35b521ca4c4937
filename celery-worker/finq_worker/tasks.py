"""The one Celery task: run a record by id, with retries for transient failures only."""

import logging
import random
import uuid

import redis
from celery import Task as CeleryTask
from celery.exceptions import Reject, Retry, SoftTimeLimitExceeded
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from finq_core import flags, metrics
from finq_core.broker import CHART_TASK, RUN_TASK, celery_app, retry_backoff_cap
from finq_core.config import get_settings
from finq_core.logs import request_id_var
from finq_core.models import TaskStatus
from finq_worker import runner

log = logging.getLogger("finq.worker")

# A message whose record is not visible after the runner's brief looks is retried after 0.1 s
# (a commit may be waiting for SQLite's write lock), doubling up to RECORD_RETRY_SECONDS. It is
# dropped at once when the API marked it void, else after RECORD_RETRIES looks: a minute in
# all, twice SQLite's busy timeout (the longest a submission's commit can wait).
RECORD_FIRST_RETRY_SECONDS = 0.1
RECORD_RETRY_SECONDS = 2.0
RECORD_RETRIES = 34


def record_retry_delay(retries: int) -> float:
    """The countdown of the retry that follows `retries` earlier ones."""
    factor: int = 2 ** min(retries, 16)
    return min(RECORD_RETRY_SECONDS, RECORD_FIRST_RETRY_SECONDS * factor)


TRANSIENT = (
    redis.ConnectionError,
    redis.TimeoutError,
    OperationalError,
    PoolTimeoutError,
    ConnectionError,
)
BACKOFF_BASE_SECONDS = 1.0


def backoff(attempt: int) -> float:
    """Exponential backoff with full jitter (the AWS Architecture Blog's "Exponential Backoff
    and Jitter"), capped so a waiting retry never outlives the broker's visibility timeout."""
    cap = retry_backoff_cap(get_settings())
    return random.uniform(0, min(cap, BACKOFF_BASE_SECONDS * 2**attempt))


@celery_app.task(name=RUN_TASK, bind=True)
def run_task(self: CeleryTask, task_id: str, record_wait: bool = False) -> None:
    """`record_wait`: this delivery is a retry that waited for the record to appear, not one
    that continues a run (see `take_over`)."""
    tid = uuid.UUID(task_id)
    worker = self.request.hostname or "unknown"
    claim: runner.Claim | None = None
    # The request id nginx assigned travels in the message headers, so `grep <request id>`
    # finds the HTTP request and this task's start, progress and end in every log.
    headers = self.request.headers or {}
    token = request_id_var.set(self.request.get("request_id") or headers.get("request_id"))
    metrics.worker_busy.inc()
    try:
        try:
            # Continuing a run: redelivered after its worker died, or our own retry of it
            # (a retry that only waited for the record continues nothing).
            take_over = bool(
                (self.request.delivery_info or {}).get("redelivered")
                or (self.request.retries and not record_wait)
            )
            claim = runner.claim_when_visible(tid, worker, take_over)
        except runner.NoRecord:
            try:
                if not flags.is_void(task_id):
                    raise
                claim = _claim_void(tid, worker, take_over)
            except runner.NoRecord:
                if self.request.retries >= RECORD_RETRIES:
                    log.warning("task %s has no record; dropping the message", task_id)
                    return
                try:
                    raise self.retry(
                        countdown=record_retry_delay(self.request.retries),
                        kwargs={"record_wait": True},
                        max_retries=None,
                    ) from None
                except Reject as exc:  # the retry could not be sent: put this delivery back
                    raise Reject(exc.reason, requeue=True) from None
        if claim is None:
            return
        runner.execute(tid, claim)
    except SoftTimeLimitExceeded:
        limit = get_settings().default_task_timeout
        runner.finish(
            tid,
            TaskStatus.FAILED,
            claim_info=claim,
            error={"type": "TimeLimitExceeded", "message": f"timed out after {limit} s"},
        )
    except (Retry, Reject):
        raise
    except TRANSIENT as exc:
        attempts = claim.attempts if claim else 0
        max_retries = claim.max_retries if claim else get_settings().max_retry_attempts
        if attempts > max_retries:
            log.exception("task %s: transient error, retries exhausted", task_id)
            _fail_safely(tid, exc, claim)
            return
        delay = backoff(attempts)
        log.warning("task %s: transient %s, retry in %.1fs", task_id, type(exc).__name__, delay)
        _mark_retrying(tid, exc, delay, claim)
        # Continues the run (record_wait off, whatever this delivery was): if RETRYING could
        # not be recorded, the record is still RUNNING and the retry must take it over.
        raise self.retry(countdown=delay, kwargs={"record_wait": False}, max_retries=None) from exc
    except Exception as exc:  # a poisoned task fails alone; the worker loop never sees it
        log.exception("task %s failed unexpectedly", task_id)
        _fail_safely(tid, exc, claim)
    finally:
        metrics.worker_busy.dec()
        request_id_var.reset(token)


def _claim_void(tid: uuid.UUID, worker: str, take_over: bool) -> runner.Claim | None:
    """The API marked this message void: its submission's commit raised. A commit can fail on
    the way back after the database did commit, and then the record is visible by the time
    the mark is: look once more, and drop the message (None) only if there is still no record.
    A record seen but not claimed yet raises `NoRecord` again: the caller waits for it."""
    try:
        return runner.claim(tid, worker, take_over)
    except runner.NoRecord as exc:
        if exc.seen:
            raise
        log.info(
            "task %s: its submission failed after the message was sent; dropping the message", tid
        )
        return None


def _mark_retrying(
    tid: uuid.UUID, exc: BaseException, delay: float, claim: runner.Claim | None
) -> None:
    try:
        runner.finish(
            tid, TaskStatus.RETRYING, f"retry in {delay:.1f}s", claim, error=runner.error_view(exc)
        )
    except Exception:  # the store itself may be what is down; the retry still happens
        log.warning("task %s: could not record RETRYING", tid)


def _fail_safely(tid: uuid.UUID, exc: BaseException, claim: runner.Claim | None) -> None:
    try:
        runner.finish(
            tid,
            TaskStatus.FAILED,
            claim_info=claim,
            error=runner.error_view(exc, _public_message(exc)),
        )
    except Exception:  # the store itself may be what failed; the message is acked regardless
        log.exception("task %s: could not record the failure", tid)


def _public_message(exc: BaseException) -> str:
    """Internal errors keep their type but not their text: it may name hosts or paths."""
    if isinstance(exc, TRANSIENT):
        return "a service the worker needs was unreachable; retries exhausted"
    return "internal error while running the task; see the worker log"


@celery_app.task(name=CHART_TASK)
def draw_chart(task_id: str) -> None:
    """Draw a successful task's chart (queued by the API when the chart is first asked for).
    Never raises: a missing chart is a cosmetic loss, logged by the runner."""
    try:
        runner.draw_chart(uuid.UUID(task_id))
    except Exception:  # a missing chart is cosmetic: never fail or retry over it
        log.exception("chart of %s could not be stored", task_id)
