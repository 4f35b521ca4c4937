"""The batch tasks: `finq.batch_chunk` runs one chunk of a batch's items, `finq.batch_notify`
announces a batch's end (finq_core.batch_runs holds the statements and their rules).

A chunk's items run one after the other in this process; one that fails (an IRR with no
root, a value the model refuses) fails alone. The cancel flag is read between items at most
every CANCEL_CHECK_SECONDS, so a cancel stops a running chunk well within 2 s; the items it
did not reach are CANCELLED. Outcomes are written together when the chunk ends: a worker
killed mid-chunk leaves the items RUNNING, and the redelivered message runs them again.
"""

import json
import logging
import time
import uuid
from typing import Any

from celery import Task as CeleryTask
from celery.exceptions import Retry, SoftTimeLimitExceeded
from pydantic import ValidationError

from finq_core import batch_runs, broker, flags, metrics
from finq_core.broker import BATCH_NOTIFY_TASK, CHUNK_TASK, celery_app
from finq_core.changes import publish_batch_change
from finq_core.config import Settings, get_settings
from finq_core.db import encode_json, session_scope
from finq_core.models import Batch, TaskStatus
from finq_core.notifications import (
    DeliveryFailed,
    TargetRefused,
    check_webhook_url,
    post_webhook,
    send_email,
    sign,
)
from finq_core.timeutil import utcnow
from finq_engine import CalculationError, get_task_type
from finq_engine.context import NullContext
from finq_worker.runner import error_view, validation_message
from finq_worker.tasks import TRANSIENT, backoff

log = logging.getLogger("finq.worker")

CANCEL_CHECK_SECONDS = 0.05


def chunk_budget(settings: Settings) -> float:
    """The longest a chunk runs (when items cost more than the type's table says): 20 times
    BATCH_CHUNK_SECONDS, at least 1 s, within half the soft time limit. The items it did not
    reach go back to PENDING as two chunks, sent again behind what is queued."""
    return min(max(1.0, 20 * settings.batch_chunk_seconds), settings.soft_time_limit / 2)


def run_items(
    claim: batch_runs.ChunkClaim, batch_id: str, limit: int, deadline: float
) -> tuple[list[batch_runs.Outcome], list[int]]:
    """Every claimed item's outcome in order, the ones after a cancel CANCELLED; and the items
    not reached by `deadline` (perf_counter) or the soft time limit, to be run again."""
    task_type = get_task_type(claim.type)
    outcomes: list[batch_runs.Outcome] = []
    last_check = time.perf_counter()
    cancelled = flags.batch_cancel_requested(batch_id)
    for n, row in enumerate(claim.items):
        now = time.perf_counter()
        if now > deadline:
            return outcomes, [r.idx for r in claim.items[n:]]
        if not cancelled and now - last_check > CANCEL_CHECK_SECONDS:
            cancelled, last_check = flags.batch_cancel_requested(batch_id), now
        if cancelled or task_type is None:
            error = None if cancelled else {"type": "UnknownTaskType", "message": claim.type}
            status = TaskStatus.CANCELLED if cancelled else TaskStatus.FAILED
            outcomes.append(batch_runs.Outcome(row.idx, status.value, error=error))
            continue
        try:
            outcomes.append(run_one(task_type, row.idx, row.params, limit))
        except SoftTimeLimitExceeded:
            return outcomes, [r.idx for r in claim.items[n:]]
    return outcomes, []


def run_one(task_type: Any, idx: int, params: dict[str, Any], limit: int) -> batch_runs.Outcome:
    failed = TaskStatus.FAILED.value
    try:
        result = task_type.execute(params, NullContext(), None)
    except ValidationError as exc:
        return batch_runs.Outcome(idx, failed, error=error_view(exc, validation_message(exc)))
    except (CalculationError, ValueError, ArithmeticError, MemoryError) as exc:
        return batch_runs.Outcome(idx, failed, error=error_view(exc))
    except Exception as exc:  # a poisoned item fails alone
        log.exception("batch item %d failed unexpectedly", idx)
        return batch_runs.Outcome(idx, failed, error=error_view(exc, "internal error"))
    encoded = encode_json(result)
    if len(encoded.data) > limit:
        message = f"the result is {len(encoded.data)} bytes, over RESULT_MAX_BYTES ({limit})"
        return batch_runs.Outcome(idx, failed, error={"type": "ResultTooLarge", "message": message})
    return batch_runs.Outcome(idx, TaskStatus.SUCCESS.value, result=encoded)


@celery_app.task(name=CHUNK_TASK, bind=True)
def run_chunk(self: CeleryTask, batch_id: str, chunk: int, take_over: bool = False) -> None:
    bid = uuid.UUID(batch_id)
    redelivered = bool((self.request.delivery_info or {}).get("redelivered")) or take_over
    settings = get_settings()
    try:
        with session_scope() as session:
            claim = batch_runs.claim_chunk(session, bid, chunk, redelivered)
        if claim is None:
            return
        deadline = time.perf_counter() + chunk_budget(settings)
        outcomes, leftover = run_items(claim, batch_id, settings.result_max_bytes, deadline)
        with session_scope() as session:
            batch_runs.finish_items(session, bid, outcomes, utcnow())
            if leftover:  # this chunk took too long: the rest goes back, split in two
                for again in batch_runs.split_release(session, bid, chunk, leftover):
                    broker.enqueue_chunk(batch_id, again, claim.priority)
            tally: dict[str, int] = {}
            for o in outcomes:
                tally[o.status] = tally.get(o.status, 0) + 1
                metrics.batch_items_finished.labels(claim.type, o.status.lower()).inc()
            publish_batch_change(bid, TaskStatus.RUNNING.value, chunk=chunk, **tally)
            # The next chunk takes this one's place on the queue; a chunk sent again for its
            # leftover items already did, a duplicate delivery (nothing claimed) has no place.
            if not leftover and (outcomes or claim.lost or redelivered):
                batch_runs.pump(session, bid, claim.priority, 1)
            batch_runs.end_if_done(session, bid)
    except Retry:
        raise
    except TRANSIENT as exc:
        delay = backoff(self.request.retries)
        log.warning("batch %s chunk %d: transient %s, retry in %.1fs", batch_id, chunk, exc, delay)
        raise self.retry(countdown=delay, kwargs={"take_over": True}, max_retries=None) from exc


@celery_app.task(name=BATCH_NOTIFY_TASK, bind=True)
def notify_batch(self: CeleryTask, batch_id: str, status: str) -> None:
    """Send a batch's end to its `notify` targets (a webhook signed like a task's, an
    e-mail); retried with backoff up to NOTIFY_MAX_ATTEMPTS, logged, not recorded."""
    settings = get_settings()
    with session_scope() as session:
        batch = session.get(Batch, uuid.UUID(batch_id))
        if batch is None or batch.status != status:
            return
        body = json.dumps(
            {
                "id": batch_id,
                "type": batch.type,
                "status": status,
                "total": batch.total,
                "counts": batch_runs.counts(session, batch.id),
            },
            separators=(",", ":"),
        ).encode()
        targets = dict(batch.notify or {})
    try:
        if targets.get("webhook_url") and settings.webhook_secret:
            checked = check_webhook_url(targets["webhook_url"], settings.webhook_allow_private)
            post_webhook(
                checked,
                body,
                {
                    "X-Finq-Signature": sign(body, settings.webhook_secret),
                    "X-Finq-Event": f"batch.{status.lower()}",
                    "X-Finq-Delivery": f"batch-{batch_id}-{status}",
                },
                settings.notify_timeout_seconds,
            )
        if targets.get("email"):
            send_email(
                settings,
                targets["email"],
                f"finq: batch {status} ({batch_id})",
                f"Batch {batch_id} finished with status {status}.\n\n{body.decode()}\n",
            )
    except TargetRefused as exc:
        log.warning("batch %s: notification refused: %s", batch_id, exc)
    except DeliveryFailed as exc:
        attempt = self.request.retries + 1
        if exc.retryable and attempt < settings.notify_max_attempts:
            raise self.retry(countdown=backoff(attempt), max_retries=None) from None
        log.warning("batch %s: notification failed: %s", batch_id, exc)
