"""Work of the single beat process: queue due tasks, fire schedules, keep the store tidy.

Every step is safe to repeat and safe after a crash at any point:
- a record this pass (or a manual retry in the API) queues is committed before its message is
  sent and marked `enqueued_at` after, so a crash in between is repaired by the next pass (the
  worker's claim makes a duplicate harmless). A new task submitted for now is not this
  module's business: the API sends its message, then commits the record already marked;
- a schedule moves `next_run_at` forward with a conditional update in the same transaction that
  creates the task (whose idempotency key is the schedule id and due time), so a restarted beat
  neither skips a due run nor fires one twice;
- a run is a submission of the schedule's owner, under the same quotas and submit limit as the
  API's: one that does not fit is skipped (logged, counted) and the schedule moves on.
"""

import logging
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import Row, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from finq_core import batch_runs, broker, metrics
from finq_core.changes import publish_change
from finq_core.checks import check_storage_quota, check_task_quota
from finq_core.config import Settings, get_settings
from finq_core.db import session_scope
from finq_core.errors import QuotaExceeded, StorageQuotaExceeded
from finq_core.lifecycle import task_values
from finq_core.models import (
    FINAL_STATUSES,
    Schedule,
    Task,
    TaskEvent,
    TaskStatus,
    User,
)
from finq_core.ratelimit import hit_submit
from finq_core.scheduling import next_fire
from finq_core.store import (
    commit_and_queue_deliveries,
    delete_finished,
    insert_task,
    owner_running_now,
    recount_result_bytes,
    transition,
)

log = logging.getLogger("finq.beat")

# A record committed but never marked queued (a manual retry in the API that crashed between
# its commit and its enqueue) is repaired after this long; the API marks its own enqueue well
# within it. New submissions are written already marked (the API sends them first).
ORPHAN_GRACE = timedelta(seconds=30)
MAX_CATCH_UP = 100  # missed runs fired after a long outage, per schedule and pass


def due_tasks(
    session: Session, now: datetime, limit: int = 500
) -> Sequence[Row[uuid.UUID, str, str | None]]:
    """(id, priority, request_id) of the due, not yet queued PENDING tasks, except those whose
    owner has QUOTA_RUNNING_TASKS running: they wait here, not in a queue (a worker's claim
    would only defer them again: finq_core.store.defer_pending)."""
    # Unscheduled records waiting unqueued: only those whose PENDING event is older than
    # the grace period (a retry in the API is still between its commit and its enqueue
    # otherwise).
    last_event = (
        select(func.max(TaskEvent.at))
        .where(TaskEvent.task_id == Task.id)
        .correlate(Task)
        .scalar_subquery()
    )
    return session.execute(
        select(Task.id, Task.priority, Task.request_id)
        .where(
            Task.status == TaskStatus.PENDING.value,
            Task.enqueued_at.is_(None),
            owner_running_now < get_settings().quota_running_tasks,
            or_(
                Task.scheduled_for <= now,
                Task.scheduled_for.is_(None) & (last_event < now - ORPHAN_GRACE),
            ),
        )
        .order_by(Task.scheduled_for, Task.created_at)
        .limit(limit)
    ).all()


def dispatch_due(now: datetime, limit: int = 500) -> int:
    """Send every due task (`due_tasks`) to its queue."""
    with session_scope() as session:
        rows = due_tasks(session, now, limit)
    sent = 0
    for task_id, priority, request_id in rows:
        broker.enqueue(str(task_id), priority, request_id)
        with session_scope() as session:
            session.execute(update(Task).where(Task.id == task_id).values(enqueued_at=now))
        sent += 1
    return sent


def fire_schedules(now: datetime, settings: Settings | None = None) -> int:
    """Create one task per due run of every schedule (catching up missed runs); returns how
    many were created. Each run is a submission of the schedule's owner: a run over the owner's
    queued-tasks quota or submit limit, or sooner than SCHEDULE_MIN_INTERVAL after the
    schedule's last run, is skipped, logged, counted (finq_schedule_runs_skipped_total) and
    recorded on the schedule (skipped_count, last_skipped_at, last_skip_reason), and the
    schedule moves on to its next run: a skipped run is never made up later."""
    settings = settings or get_settings()
    fired = 0
    with session_scope() as session:
        due = session.scalars(select(Schedule).where(Schedule.next_run_at <= now)).all()
        due_ids = [s.id for s in due]
    for schedule_id in due_ids:
        for _ in range(MAX_CATCH_UP):
            outcome = _fire_one(schedule_id, now, settings)
            if outcome is None:
                break
            fired += outcome == CREATED
    return fired


CREATED, SKIPPED = "created", "skipped"
# Why a run was skipped, as logged; the keys label finq_schedule_runs_skipped_total.
SKIP_REASONS = {
    "interval": "sooner than SCHEDULE_MIN_INTERVAL after the last run",
    "queued_tasks": "over the owner's queued-tasks quota (QUOTA_QUEUED_TASKS)",
    "rate_limit": "over the owner's submit limit (RATE_LIMIT_SUBMIT)",
    "result_bytes": "the owner's stored results are over their quota (QUOTA_RESULT_BYTES)",
}


def _fire_one(schedule_id: uuid.UUID, now: datetime, settings: Settings) -> str | None:
    """Handle the schedule's earliest due run: CREATED, SKIPPED, or None when none is due."""
    try:
        with session_scope() as session:
            schedule = session.get(Schedule, schedule_id)
            if schedule is None or schedule.next_run_at > now:
                return None
            run_at = schedule.next_run_at
            skip = _skip_reason(session, schedule, run_at, settings)
            if skip == "interval" and schedule.last_run_at is not None:
                # Straight to the first run the interval allows, not one skip per cron tick.
                earliest = schedule.last_run_at + timedelta(seconds=settings.schedule_min_interval)
                following = next_fire(schedule.cron, earliest - timedelta(seconds=1))
            else:
                following = next_fire(schedule.cron, run_at)
            # A skipped run is recorded on the schedule too, for its owner to see.
            skipped = (
                dict(
                    skipped_count=Schedule.skipped_count + 1,
                    last_skipped_at=run_at,
                    last_skip_reason=skip,
                )
                if skip
                else {}
            )
            moved = session.execute(
                update(Schedule)
                .where(Schedule.id == schedule_id, Schedule.next_run_at == run_at)
                .values(
                    next_run_at=following,
                    last_run_at=schedule.last_run_at if skip else run_at,
                    **skipped,
                )
            ).rowcount  # type: ignore[attr-defined]
            if moved != 1:
                return None
            if skip:
                _skipped(schedule, run_at, skip)
                return SKIPPED
            values = task_values(
                owner=schedule.owner,
                type_name=schedule.type,
                params=schedule.params,
                priority=schedule.priority,
                max_retries=schedule.max_retries,
                targets=schedule.notify,
                now=now,
                run_at=run_at,
                idempotency_key=f"schedule:{schedule.id}:{run_at.isoformat()}",
                schedule_id=schedule.id,
            )
            insert_task(
                session, values, f"from schedule {schedule.name!r} due {run_at.isoformat()}"
            )
    except IntegrityError:
        # The run already exists (a previous beat made it): nothing to do, nothing doubled.
        return CREATED
    return CREATED


def _skip_reason(
    session: Session, schedule: Schedule, run_at: datetime, settings: Settings
) -> str | None:
    """Why this run may not create a task (a SKIP_REASONS key), or None. The submit limit is
    counted last, so that only a run that is created spends a hit."""
    last = schedule.last_run_at
    if last is not None and run_at - last < timedelta(seconds=settings.schedule_min_interval):
        return "interval"
    try:
        check_task_quota(session, schedule.owner, settings)
    except QuotaExceeded:
        return "queued_tasks"
    owner = session.scalar(select(User).where(User.username == schedule.owner))
    try:
        if owner is not None:
            check_storage_quota(session, owner, settings)
    except StorageQuotaExceeded:
        return "result_bytes"
    if hit_submit(schedule.owner, settings) is not None:
        return "rate_limit"
    return None


def _skipped(schedule: Schedule, run_at: datetime, reason: str) -> None:
    metrics.schedule_runs_skipped.labels(reason).inc()
    log.warning(
        "schedule %s of %s: run due %s skipped, %s",
        schedule.id,
        schedule.owner,
        run_at.isoformat(),
        SKIP_REASONS[reason],
        extra={
            "schedule_id": str(schedule.id),
            "owner": schedule.owner,
            "due": run_at.isoformat(),
            "reason": reason,
        },
    )


def mark_stuck(now: datetime) -> int:
    """RUNNING for longer than any delivery could last (its message would have come back by
    now): the worker and its message are gone. Fail it, with a clear reason."""
    settings = get_settings()
    cutoff = now - timedelta(seconds=broker.visibility_timeout(settings) + 60)
    with session_scope() as session:
        ids = session.scalars(
            select(Task.id).where(Task.status == TaskStatus.RUNNING.value, Task.started_at < cutoff)
        ).all()
        failed = 0
        for task_id in ids:
            if transition(
                session,
                task_id,
                [TaskStatus.RUNNING],
                TaskStatus.FAILED,
                "stuck in RUNNING past the hard time limit",
                error={
                    "type": "TimeLimitExceeded",
                    "message": f"timed out after {settings.default_task_timeout} s (worker lost)",
                },
            ):
                failed += 1
        commit_and_queue_deliveries(session)
    for task_id in ids:
        publish_change(task_id, TaskStatus.FAILED.value)
    return failed


def purge_finished(now: datetime, batch: int = 1000) -> int:
    """Delete finished tasks older than RESULT_TTL_DAYS, with their history."""
    cutoff = now - timedelta(days=get_settings().result_ttl_days)
    with session_scope() as session:
        ids = session.scalars(
            select(Task.id)
            .where(Task.status.in_([s.value for s in FINAL_STATUSES]), Task.finished_at < cutoff)
            .limit(batch)
        ).all()
        if ids:
            delete_finished(session, ids)
    return len(ids)


def recount_usage() -> None:
    """Every user's stored-results counter recounted from the tasks (a repair: the counters
    are kept as results are stored and deleted, but a concurrent recount may miss one)."""
    with session_scope() as session:
        recount_result_bytes(session)


def purge_batches(now: datetime, limit: int = 2) -> int:
    """Delete ended batches older than RESULT_TTL_DAYS, with their items and history; a few
    per pass (a batch may hold 100,000 items)."""
    cutoff = now - timedelta(days=get_settings().result_ttl_days)
    with session_scope() as session:
        return batch_runs.purge_ended(session, cutoff, limit)
