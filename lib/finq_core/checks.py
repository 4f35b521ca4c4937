"""What a task or a schedule must pass before anything is written: its params against its
type's model (and upload), its notification targets, the caller's right to its priority, the
owner's quotas, and a schedule's cron. Every refusal is a finq_core.errors exception."""

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from finq_core import metrics
from finq_core.config import Settings
from finq_core.errors import (
    InvalidInput,
    NotAllowed,
    Problem,
    QuotaExceeded,
    StorageQuotaExceeded,
)
from finq_core.models import (
    Priority,
    Schedule,
    Task,
    TaskStatus,
    UploadKind,
    User,
)
from finq_core.notifications import TargetRefused, check_email, check_webhook_url
from finq_core.scheduling import check_interval, validate_cron
from finq_core.uploads import find_upload
from finq_engine import get_task_type

# Retry-After of a full queued-tasks quota: a hint, since room comes as tasks start.
QUEUED_QUOTA_RETRY_AFTER = 10
WAITING = (TaskStatus.PENDING.value, TaskStatus.RETRYING.value)


def check_params(
    session: Session, owner: User, type_name: str, raw: dict[str, Any]
) -> dict[str, Any]:
    """The params validated against the type's model, defaults filled in (what the worker will
    run); InvalidInput naming each wrong field.

    A type that reads an upload also gets its reference checked: the upload must exist and be
    the owner's, and the params must fit its shape (e.g. one weight per asset)."""
    task_type = get_task_type(type_name)
    if task_type is None:
        raise InvalidInput(
            [
                Problem(
                    ("body", "type"),
                    f"unknown task type {type_name!r}; see GET /api/v1/task-types",
                )
            ]
        )
    try:
        parsed = task_type.parse(raw)
    except ValidationError as exc:
        raise InvalidInput(
            Problem(("body", "params", *err["loc"]), err["msg"], err["type"])
            for err in exc.errors()
        ) from None
    params: dict[str, Any] = parsed.model_dump(mode="json", by_alias=True)
    if task_type.upload is not None:
        field = task_type.upload.param
        upload = find_upload(session, task_type.upload_id(params), owner.username)
        if upload is None:
            raise InvalidInput(
                [
                    Problem(
                        ("body", "params", field),
                        f"upload {params.get(field)} not found; "
                        "upload a CSV with POST /api/v1/uploads and use its id",
                    )
                ]
            )
        if upload.kind != UploadKind.PRICES.value or upload.assets is None:
            raise InvalidInput(
                [
                    Problem(
                        ("body", "params", field),
                        f"upload {params.get(field)} holds batch items (kind {upload.kind}); "
                        f"{type_name} reads a price table (kind prices)",
                    )
                ]
            )
        problems = task_type.upload.check(parsed, len(upload.assets))
        if problems:
            raise InvalidInput(Problem(("body", "params", name), msg) for name, msg in problems)
    return params


def check_targets(
    targets: Mapping[str, str | None] | None, settings: Settings
) -> dict[str, str] | None:
    """The notification targets, checked now (InvalidInput on `notify.<field>`); the worker
    checks a webhook again before every attempt, since what a name resolves to can change."""
    if targets is None:
        return None
    problems: list[Problem] = []
    out: dict[str, str] = {}
    webhook_url, email = targets.get("webhook_url"), targets.get("email")
    if webhook_url is not None:
        loc: tuple[str | int, ...] = ("body", "notify", "webhook_url")
        if not settings.webhook_secret:
            problems.append(
                Problem(loc, "webhooks are not enabled on this server (WEBHOOK_SECRET is not set)")
            )
        else:
            try:
                check_webhook_url(webhook_url, settings.webhook_allow_private)
                out["webhook_url"] = webhook_url
            except TargetRefused as exc:
                problems.append(Problem(loc, str(exc)))
    if email is not None:
        loc = ("body", "notify", "email")
        if not settings.smtp_host:
            problems.append(
                Problem(loc, "e-mail is not enabled on this server (SMTP_HOST is not set)")
            )
        else:
            try:
                out["email"] = check_email(email)
            except TargetRefused as exc:
                problems.append(Problem(loc, str(exc)))
    if problems:
        raise InvalidInput(problems)
    return out


def check_template(
    session: Session,
    owner: User,
    type_name: str,
    params: dict[str, Any],
    targets: Mapping[str, str | None] | None,
    settings: Settings,
) -> tuple[dict[str, Any], dict[str, str] | None]:
    """What a task or a schedule will run, checked: (params, notification targets)."""
    return check_params(session, owner, type_name, params), check_targets(targets, settings)


def check_priority(owner: User, priority: str, settings: Settings) -> None:
    """NotAllowed (403) when the owner's role may not submit `priority`."""
    if priority == Priority.HIGH and owner.role not in settings.high_priority_roles:
        allowed = ", ".join(settings.high_priority_roles) or "none"
        raise NotAllowed(
            f'priority "high" is reserved to the roles: {allowed} (HIGH_PRIORITY_ROLES); '
            'use "normal" or "low"'
        )


def queued_count(session: Session, owner: str, limit: int | None = None) -> int:
    """The owner's tasks waiting to run: PENDING (delayed ones included) or RETRYING; counted
    up to `limit` at most (ix_tasks_owner_status: the cost follows the count, not the history)."""
    # Only indexed columns: the count reads the index alone.
    waiting = select(Task.status).where(Task.owner == owner, Task.status.in_(WAITING))
    if limit is not None:
        waiting = waiting.limit(limit)
    return session.scalar(select(func.count()).select_from(waiting.subquery())) or 0


def check_task_quota(session: Session, owner: str, settings: Settings) -> None:
    """QuotaExceeded when one more waiting task would pass QUOTA_QUEUED_TASKS. Counted, not
    locked: concurrent submissions may pass it by the number in flight."""
    queued = queued_count(session, owner, settings.quota_queued_tasks)
    if queued >= settings.quota_queued_tasks:
        metrics.quota_refusals.labels("queued_tasks").inc()
        raise QuotaExceeded(
            f"Quota exceeded: at most {settings.quota_queued_tasks} queued tasks (PENDING or "
            f"RETRYING) per user (QUOTA_QUEUED_TASKS), and {queued} are waiting; retry when "
            "some have started, or cancel some",
            retry_after=QUEUED_QUOTA_RETRY_AFTER,
        )


def check_cron(expr: str, now: datetime, settings: Settings) -> str:
    """The normalised cron; InvalidInput on `cron` when it is malformed, never fires, or fires
    more often than SCHEDULE_MIN_INTERVAL."""
    try:
        cron = validate_cron(expr)
        check_interval(cron, settings.schedule_min_interval, now)
    except ValueError as exc:
        raise InvalidInput([Problem(("body", "cron"), str(exc))]) from None
    return cron


def check_schedule_quota(session: Session, owner: str, settings: Settings) -> None:
    """QuotaExceeded when one more schedule would pass QUOTA_SCHEDULES."""
    count = (
        session.scalar(select(func.count()).select_from(Schedule).where(Schedule.owner == owner))
        or 0
    )
    if count >= settings.quota_schedules:
        metrics.quota_refusals.labels("schedules").inc()
        raise QuotaExceeded(
            f"Quota exceeded: at most {settings.quota_schedules} schedules per user "
            "(QUOTA_SCHEDULES); delete one first"
        )


def check_storage_quota(session: Session, owner: User, settings: Settings) -> None:
    """StorageQuotaExceeded while the owner's stored results take more than
    QUOTA_RESULT_BYTES: a run that may store more is refused until they delete some."""
    used = owner.result_bytes
    quota = settings.quota_result_bytes
    if used is not None and used > quota:
        raise StorageQuotaExceeded(
            f"Your stored results take {used} bytes, over your quota of {quota} bytes "
            "(QUOTA_RESULT_BYTES); delete finished tasks (DELETE /api/v1/tasks/{id}) "
            "to run more"
        )
