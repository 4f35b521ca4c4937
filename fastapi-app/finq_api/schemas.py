"""Request and response bodies of the HTTP API (the task parameters live in finq_engine)."""

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from finq_api import API_PREFIX
from finq_core.models import Priority, Role, TaskStatus

USERNAME_PATTERN = r"^[A-Za-z0-9_.-]{3,64}$"
MIN_PASSWORD_LENGTH = 12
# The largest RUN_AT_MAX_DAYS; the setting itself bounds a delay (finq_core.lifecycle).
MAX_DELAY_SECONDS = 3660 * 24 * 3600


class NotificationTargets(BaseModel):
    """Where to report the task's final status (SUCCESS, FAILED or CANCELLED)."""

    model_config = ConfigDict(extra="forbid")

    webhook_url: str | None = Field(
        default=None,
        max_length=2048,
        description="http(s) URL that receives the finished task's JSON in a POST, signed "
        "with X-Finq-Signature: sha256=<HMAC-SHA256 of the body with WEBHOOK_SECRET>. Must "
        "resolve to public addresses only (unless the server sets WEBHOOK_ALLOW_PRIVATE).",
    )
    email: str | None = Field(
        default=None, max_length=254, description="Address that receives an e-mail with the task."
    )

    @model_validator(mode="after")
    def _at_least_one(self) -> "NotificationTargets":
        if self.webhook_url is None and self.email is None:
            raise ValueError("give webhook_url, email or both")
        return self


class TaskCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str = Field(max_length=64, description=f"A task type from GET {API_PREFIX}/task-types.")
    params: dict[str, Any] = Field(
        default_factory=dict, description="Parameters, validated by the type's JSON schema."
    )
    priority: Priority = Field(
        default=Priority.NORMAL,
        description="`high` only for the roles in HIGH_PRIORITY_ROLES (admins by default): 403.",
    )
    run_at: AwareDatetime | None = Field(
        default=None, description="Run at this time (ISO 8601 with a zone), not before."
    )
    delay_seconds: float | None = Field(
        default=None,
        ge=0,
        le=MAX_DELAY_SECONDS,
        description="Start this many seconds from now, within RUN_AT_MAX_DAYS days.",
    )
    max_retries: int | None = Field(
        default=None,
        ge=0,
        le=10,
        description="Retries of transient failures (default from MAX_RETRY_ATTEMPTS).",
    )
    notify: NotificationTargets | None = Field(
        default=None, description="Notifications when the task reaches a final status."
    )

    @model_validator(mode="after")
    def _one_start_time(self) -> "TaskCreate":
        if self.run_at is not None and self.delay_seconds is not None:
            raise ValueError("give run_at or delay_seconds, not both")
        return self


class TaskError(BaseModel):
    type: str
    message: str


class DeliveryOut(BaseModel):
    """One attempt to deliver a final status."""

    channel: Literal["webhook", "email"]
    target: str
    task_status: TaskStatus = Field(description="The final status this delivery reports.")
    attempt: int = Field(description="1 for the first attempt (0: could not be queued).")
    status: Literal["delivered", "retrying", "failed", "refused", "skipped"]
    http_status: int | None
    error: str | None
    at: datetime


class TaskOut(BaseModel):
    id: uuid.UUID
    owner: str
    type: str
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="The parameters (omitted by GET of one task when `include` leaves them out).",
    )
    status: TaskStatus
    priority: Priority
    progress: float
    progress_message: str | None
    result: dict[str, Any] | None = Field(
        default=None,
        description="The result; when `result_truncated`, only its scalar fields (omitted by "
        "GET of one task when `include` leaves it out).",
    )
    result_truncated: bool = Field(
        default=False,
        description="True when the result is bigger than RESULT_INLINE_MAX_BYTES: `result` "
        "holds its scalar fields only, and `result_url` returns the whole.",
    )
    result_bytes: int | None = Field(
        default=None, description="Size of the stored result (bytes of JSON); counts to the quota."
    )
    result_url: str | None = Field(
        default=None, description="Where the whole stored result is read (once there is one)."
    )
    error: TaskError | None
    attempts: int
    max_retries: int
    created_at: datetime
    scheduled_for: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    worker: str | None
    idempotency_key: str | None
    notify: dict[str, str] | None = None
    deliveries: list[DeliveryOut] = Field(
        default_factory=list,
        description="Notification attempts, oldest first (GET of one task only; omitted "
        "when `include` leaves them out).",
    )


class TaskSummary(BaseModel):
    """A task in a listing: everything but the (possibly large) params and result."""

    id: uuid.UUID
    type: str
    status: TaskStatus
    priority: Priority
    progress: float
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    attempts: int
    error: TaskError | None
    result_bytes: int | None = None


class UploadOut(BaseModel):
    id: uuid.UUID
    kind: Literal["prices", "items"] = Field(
        description="prices: a price table (csv_portfolio_analytics); items: batch items."
    )
    filename: str
    columns: list[str] | None = Field(
        default=None, description="items: the header's parameter names; prices: null."
    )
    assets: list[str] | None = Field(description="prices: the assets; items: null.")
    rows: int = Field(description="prices: days; items: items (rows below the header).")
    first_date: str | None = Field(description="prices: the first day; items: null.")
    last_date: str | None = Field(description="prices: the last day; items: null.")
    size_bytes: int
    created_at: datetime


class TaskPage(BaseModel):
    items: list[TaskSummary]
    next_cursor: str | None


class TaskEventOut(BaseModel):
    status: str
    at: datetime
    message: str | None


class TaskTypeOut(BaseModel):
    name: str
    title: str
    description: str | None
    params_schema: dict[str, Any]
    example: dict[str, Any]


class ScheduleCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128)
    cron: str = Field(
        max_length=128,
        description="5 fields (minute hour day month weekday), or 6 with seconds last; UTC.",
        examples=["0 6 * * 1-5"],
    )
    type: str = Field(max_length=64)
    params: dict[str, Any] = Field(default_factory=dict)
    priority: Priority = Field(
        default=Priority.NORMAL,
        description="`high` only for the roles in HIGH_PRIORITY_ROLES (admins by default): 403.",
    )
    max_retries: int | None = Field(default=None, ge=0, le=10)
    notify: NotificationTargets | None = Field(
        default=None,
        description="Notifications for every task the schedule creates, when it "
        "reaches a final status (the same rules as a task's notify).",
    )


class ScheduleOut(BaseModel):
    id: uuid.UUID
    owner: str
    name: str
    cron: str
    type: str
    params: dict[str, Any]
    priority: Priority
    max_retries: int
    created_at: datetime
    last_run_at: datetime | None
    next_run_at: datetime
    notify: dict[str, str] | None = None
    skipped_count: int = Field(
        default=0,
        description="Runs the beat skipped (over a quota or the submit limit, or too soon "
        "after the last run); a skipped run is not made up later",
    )
    last_skipped_at: datetime | None = Field(
        default=None, description="When the last skipped run was due"
    )
    last_skip_reason: str | None = Field(
        default=None,
        description="Why it was skipped: interval, queued_tasks, rate_limit or result_bytes",
    )


class Token(BaseModel):
    access_token: str
    token_type: str = "bearer"  # noqa: S105
    expires_in: int


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(pattern=USERNAME_PATTERN)
    password: str = Field(min_length=MIN_PASSWORD_LENGTH, max_length=256)
    role: Role = Role.USER


class UserUpdate(BaseModel):
    """An admin's change to an account: either revokes every token issued before."""

    model_config = ConfigDict(extra="forbid")

    password: str | None = Field(default=None, min_length=MIN_PASSWORD_LENGTH, max_length=256)
    role: Role | None = None

    @model_validator(mode="after")
    def _something(self) -> "UserUpdate":
        if self.password is None and self.role is None:
            raise ValueError("give password, role or both")
        return self


class PasswordChange(BaseModel):
    """A user's change of their own password: revokes every token issued before."""

    model_config = ConfigDict(extra="forbid")

    current_password: str = Field(max_length=256)
    new_password: str = Field(min_length=MIN_PASSWORD_LENGTH, max_length=256)


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int = Field(description="The account's immutable id (a token's `sub`)")
    username: str
    role: Role
    created_at: datetime


class Me(UserOut):
    priorities: list[Priority] = Field(
        description="The priorities this account may submit (`high` only for the roles in "
        "HIGH_PRIORITY_ROLES)"
    )


class StreamTicket(BaseModel):
    """Opens one stream of one task: `GET /api/v1/tasks/{id}/events?ticket=...`."""

    ticket: str
    expires_in: int = Field(description="Seconds the ticket stays valid if unused")


class BatchCreate(BaseModel):
    """Many items of one task type: `items`, or `base` + `vary` (a grid), or `csv`, or
    `upload_id` (an uploaded CSV)."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(max_length=64, description=f"A task type from GET {API_PREFIX}/task-types.")
    items: list[dict[str, Any]] | None = Field(
        default=None, description="One parameter object per item (merged over `base`)."
    )
    base: dict[str, Any] = Field(
        default_factory=dict,
        description="Parameters every item shares (under `vary`/`csv`/`upload_id`).",
    )
    vary: dict[str, list[Any]] | None = Field(
        default=None,
        description="field -> values: the cartesian grid of every combination over `base`, "
        "in the order the fields are given, the last varying fastest.",
    )
    csv: str | None = Field(
        default=None,
        description="CSV text: a header of parameter field names, one item per row "
        "(numbers, true/false and JSON lists are read as such).",
    )
    upload_id: uuid.UUID | None = Field(
        default=None,
        description="The id of the caller's upload of kind items (POST /api/v1/uploads with "
        "kind=items): the same CSV as `csv`, sent before; a wrong row is named "
        "`upload_id`, `line N`.",
    )
    priority: Priority = Field(default=Priority.NORMAL, description="As for tasks.")
    max_retries: int | None = Field(
        default=None, ge=0, le=10, description="Runs of an item lost with its worker allowed."
    )
    notify: NotificationTargets | None = Field(
        default=None, description="Notified once, when the batch ends."
    )


class BatchOut(BaseModel):
    id: uuid.UUID
    type: str
    status: str
    priority: str
    total: int
    varied: list[str]
    counts: dict[str, int]
    progress: float
    items_per_second: float | None
    chunk_size: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    notify: dict[str, Any] | None = None


class BatchPage(BaseModel):
    items: list[BatchOut]
    next_cursor: str | None


class BatchItemOut(BaseModel):
    index: int
    params: dict[str, Any]
    status: str
    attempts: int
    error: dict[str, Any] | None
    result: dict[str, Any] | None
    finished_at: datetime | None


class BatchItemPage(BaseModel):
    items: list[BatchItemOut]
    next_after: int | None = Field(description="Pass as `after` for the next page.")
