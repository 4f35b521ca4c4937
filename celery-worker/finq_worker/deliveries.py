"""The delivery task (`finq.notify` on the wire): deliver one task's final status to one
channel.

A separate task from `finq.run` so that a slow or failing receiver is retried on its own
(exponential backoff with full jitter, up to NOTIFY_MAX_ATTEMPTS) and never re-runs the
calculation. Every attempt is recorded in `task_deliveries`, which GET /api/v1/tasks/{id}
shows as `deliveries`.

The payload is the task's JSON as the API shows it, read from the record when the attempt
is made: a result bigger than RESULT_INLINE_MAX_BYTES is not read, the payload carries its
scalar fields and `result_url` instead. If the task left the final status it is about (a user
retried it meanwhile), the attempt is recorded as skipped and not sent: the new final status
will notify again.
"""

import functools
import json
import logging
import uuid
from datetime import datetime
from typing import Any

from celery import Task as CeleryTask

from finq_core.broker import DELIVERY_TASK, celery_app
from finq_core.config import get_settings
from finq_core.db import session_scope
from finq_core.models import DeliveryStatus, Task, TaskDelivery
from finq_core.notifications import (
    TARGET_FIELDS,
    DeliveryFailed,
    TargetRefused,
    check_webhook_url,
    post_webhook,
    send_email,
    sign,
)
from finq_core.store import WITHOUT_RESULT, task_view
from finq_worker.tasks import backoff

log = logging.getLogger("finq.notify")


def payload(task: Task) -> bytes:
    """The task's JSON, compact; these exact bytes are signed."""

    def default(value: Any) -> str:
        if isinstance(value, datetime):
            return value.isoformat()
        return str(value)

    return json.dumps(
        task_view(task), default=default, separators=(",", ":"), allow_nan=False
    ).encode()


def record(
    task_id: uuid.UUID,
    channel: str,
    target: str,
    task_status: str,
    attempt: int,
    status: DeliveryStatus,
    http_status: int | None = None,
    error: str | None = None,
) -> None:
    with session_scope() as session:
        if session.get(Task, task_id) is None:
            return  # deleted meanwhile: nothing to attach the attempt to
        session.add(
            TaskDelivery(
                task_id=task_id,
                channel=channel,
                target=target[:2048],
                task_status=task_status,
                attempt=attempt,
                status=status.value,
                http_status=http_status,
                error=(error or None) and error[:2000],
            )
        )
    log.info(
        "notification %s",
        status.value,
        extra={
            "task_id": str(task_id),
            "channel": channel,
            "attempt": attempt,
            "http_status": http_status,
            "error": error,
        },
    )


def send(task: Task, body: bytes, channel: str, target: str, delivery_id: str) -> int | None:
    """One attempt of sending `body` (the task's `payload`); returns the HTTP status
    (webhooks) or raises TargetRefused/DeliveryFailed."""
    settings = get_settings()
    if channel == "webhook":
        if not settings.webhook_secret:
            raise DeliveryFailed("webhooks are not configured (WEBHOOK_SECRET)", False)
        # Checked again now, whatever it resolved to at submission (DNS rebinding).
        checked = check_webhook_url(target, settings.webhook_allow_private)
        return post_webhook(
            checked,
            body,
            {
                "X-Finq-Signature": sign(body, settings.webhook_secret),
                "X-Finq-Event": f"task.{task.status.lower()}",
                "X-Finq-Delivery": delivery_id,
            },
            settings.notify_timeout_seconds,
        )
    send_email(
        settings,
        target,
        f"finq: task {task.type} {task.status} ({task.id})",
        f"Task {task.id} ({task.type}) finished with status {task.status}.\n\n"
        f"{json.dumps(json.loads(body), indent=2)}\n",
    )
    return None


@celery_app.task(name=DELIVERY_TASK, bind=True)
def deliver_notification(
    self: CeleryTask, task_id: str, channel: str, task_status: str, delivery_id: str
) -> None:
    tid = uuid.UUID(task_id)
    attempt = int(self.request.retries) + 1
    max_attempts = get_settings().notify_max_attempts
    with session_scope() as session:
        task = session.get(Task, tid, options=WITHOUT_RESULT)
        if task is None:
            log.info("task %s is gone; notification dropped", task_id)
            return
        target = str((task.notify or {}).get(TARGET_FIELDS.get(channel, ""), ""))
        if not target:
            return
        body = payload(task)  # while the session can still read a result small enough
        session.expunge(task)
    outcome = functools.partial(record, tid, channel, target, task_status, attempt)
    if task.status != task_status:
        outcome(DeliveryStatus.SKIPPED, error=f"not sent: the task is {task.status} now")
        return
    try:
        http_status = send(task, body, channel, target, delivery_id)
    except TargetRefused as exc:
        outcome(DeliveryStatus.REFUSED, error=str(exc))
        return
    except DeliveryFailed as exc:
        if exc.retryable and attempt < max_attempts:
            delay = backoff(attempt)
            outcome(
                DeliveryStatus.RETRYING, exc.http_status, f"{exc}; next attempt in {delay:.1f} s"
            )
            raise self.retry(countdown=delay, max_retries=None) from None
        outcome(DeliveryStatus.FAILED, exc.http_status, str(exc))
        return
    except Exception as exc:  # a bug, not the receiver: record it, keep the worker going
        log.exception("notification of %s via %s failed unexpectedly", task_id, channel)
        outcome(
            DeliveryStatus.FAILED,
            error=f"internal error ({type(exc).__name__}); see the worker log",
        )
        return
    outcome(DeliveryStatus.DELIVERED, http_status)
