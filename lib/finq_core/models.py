"""The task store: users, tasks, their status history, recurring schedules, uploaded price
tables, charts, notification deliveries, and batches with their items (SQLAlchemy 2)."""

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from finq_core.timeutil import utcnow


class UTCDateTime(TypeDecorator[datetime]):
    """Stores UTC, always returns aware datetimes (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


JSONType = JSON().with_variant(JSONB(), "postgresql")


class TaskStatus(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    RETRYING = "RETRYING"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset({TaskStatus.SUCCESS, TaskStatus.FAILED, TaskStatus.CANCELLED})


class Priority(StrEnum):
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


class Role(StrEnum):
    USER = "user"
    ADMIN = "admin"


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSONType, list[str]: JSONType}


def username_key(username: str) -> str:
    """The form in which usernames are compared: ignoring case."""
    return username.lower()


def _username_key(context: Any) -> str:
    return username_key(context.get_current_parameters()["username"])


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    # The name as compared (lower case): unique, so `Alice` cannot join `alice`.
    username_key: Mapped[str] = mapped_column(
        String(64), unique=True, index=True, default=_username_key
    )
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default=Role.USER)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Carried by every token (claim `ver`); bumped on a password or role change and on
    # deletion, so every token issued before is refused (finq_core.accounts).
    token_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # A deleted account stays a row: its id and name are never given to anyone else.
    deleted_at: Mapped[datetime | None] = mapped_column()
    # The sum of the owner's tasks' result_bytes, kept with every stored and deleted result
    # (finq_core.store) and recounted by the purge: the quota check reads one row, not all.
    result_bytes: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class Task(Base):
    __tablename__ = "tasks"
    __table_args__ = (
        UniqueConstraint("owner", "idempotency_key", name="uq_tasks_owner_idempotency_key"),
        Index("ix_tasks_owner_created", "owner", "created_at", "id"),
        Index("ix_tasks_status", "status"),
        Index("ix_tasks_owner_status", "owner", "status"),
        Index("ix_tasks_dispatch", "status", "enqueued_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    owner: Mapped[str] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(JSONType)
    status: Mapped[str] = mapped_column(String(16), default=TaskStatus.PENDING)
    priority: Mapped[str] = mapped_column(String(8), default=Priority.NORMAL)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    progress_message: Mapped[str | None] = mapped_column(String(255))
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    # The stored result's size (bytes of JSON) and its scalar fields: a view carries those
    # instead of a result too big to inline, and the sizes add up to the owner's quota.
    result_bytes: Mapped[int | None] = mapped_column(BigInteger)
    result_summary: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_retries: Mapped[int] = mapped_column(Integer, default=3)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    scheduled_for: Mapped[datetime | None] = mapped_column()
    # Set once the message is on the broker; the dispatcher queues records still lacking it.
    enqueued_at: Mapped[datetime | None] = mapped_column()
    schedule_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()
    worker: Mapped[str | None] = mapped_column(String(255))
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_id: Mapped[str | None] = mapped_column(String(64))
    # {"webhook_url": ..., "email": ...}: where to report the task's final status.
    notify: Mapped[dict[str, Any] | None] = mapped_column(JSONType)

    events: Mapped[list["TaskEvent"]] = relationship(
        back_populates="task",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="TaskEvent.id",
    )


class TaskEvent(Base):
    __tablename__ = "task_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("tasks.id", ondelete="CASCADE"), index=True
    )
    status: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    message: Mapped[str | None] = mapped_column(Text)

    task: Mapped[Task] = relationship(back_populates="events")


class Schedule(Base):
    __tablename__ = "schedules"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    owner: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(128))
    cron: Mapped[str] = mapped_column(String(128))
    type: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(JSONType)
    priority: Mapped[str] = mapped_column(String(8), default=Priority.NORMAL)
    max_retries: Mapped[int] = mapped_column(Integer, default=3)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_run_at: Mapped[datetime | None] = mapped_column()
    next_run_at: Mapped[datetime] = mapped_column()
    # Copied into every task the schedule creates (see Task.notify).
    notify: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    # Runs the beat skipped (quota, submit limit, interval: finq_core.dispatch.SKIP_REASONS).
    skipped_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_skipped_at: Mapped[datetime | None] = mapped_column()
    last_skip_reason: Mapped[str | None] = mapped_column(String(32))


class UploadKind(StrEnum):
    PRICES = "prices"  # a table of daily prices, for csv_portfolio_analytics
    ITEMS = "items"  # the items of a batch, one a row (POST /api/v1/batches `upload_id`)


class Upload(Base):
    """An uploaded CSV, by `kind`. A price table is parsed at once and its prices kept as one
    little-endian float64 matrix (rows x assets, C order): a 5 MB file is a few MB of bytes
    instead of tens of MB of JSON, and the worker turns it back into an array without
    parsing; its columns are null for items. Batch items are kept as the CSV text
    (`items_csv`, header checked at upload) and read like a batch's inline `csv`."""

    __tablename__ = "uploads"
    __table_args__ = (Index("ix_uploads_owner_created", "owner", "created_at"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    owner: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(
        String(16), default=UploadKind.PRICES.value, server_default=UploadKind.PRICES.value
    )
    filename: Mapped[str] = mapped_column(String(255))
    # prices: the assets; items: null (`columns` names the header).
    assets: Mapped[list[str] | None] = mapped_column(JSONType)
    dates: Mapped[list[str] | None] = mapped_column(JSONType)
    # prices: days; items: items (non-blank lines below the header).
    rows: Mapped[int] = mapped_column(Integer)
    first_date: Mapped[str | None] = mapped_column(String(10))
    last_date: Mapped[str | None] = mapped_column(String(10))
    prices: Mapped[bytes | None] = mapped_column(LargeBinary)
    columns: Mapped[list[str] | None] = mapped_column(JSONType)
    items_csv: Mapped[str | None] = mapped_column(Text)
    size_bytes: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TaskChart(Base):
    """The PNG chart a worker rendered for a successful task (at most one per task)."""

    __tablename__ = "task_charts"

    task_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True
    )
    png: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DeliveryStatus(StrEnum):
    DELIVERED = "delivered"
    RETRYING = "retrying"  # this attempt failed; another is scheduled
    FAILED = "failed"  # this attempt failed and it was the last
    REFUSED = "refused"  # not attempted: the target is not allowed (never retried)
    SKIPPED = "skipped"  # not sent: the task left the final status meanwhile (retried)


class TaskDelivery(Base):
    """One attempt to deliver a task's final status to a webhook or an e-mail address."""

    __tablename__ = "task_deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("tasks.id", ondelete="CASCADE"), index=True
    )
    channel: Mapped[str] = mapped_column(String(16))  # webhook | email
    target: Mapped[str] = mapped_column(String(2048))
    task_status: Mapped[str] = mapped_column(String(16))  # the final status reported
    attempt: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    http_status: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(default=utcnow)


class Batch(Base):
    """Many calculations of one type submitted at once. Its items run in chunks (several items
    per broker message); its status changes are kept in `batch_events`, the items keep only
    their own final status, error and result (no per-item history)."""

    __tablename__ = "batches"
    __table_args__ = (
        UniqueConstraint("owner", "idempotency_key", name="uq_batches_owner_idempotency_key"),
        Index("ix_batches_owner_created", "owner", "created_at", "id"),
        Index("ix_batches_status", "status"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    owner: Mapped[str] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=TaskStatus.PENDING)
    priority: Mapped[str] = mapped_column(String(8), default=Priority.NORMAL)
    # The parameter fields that differ between items: the columns of its results.
    varied: Mapped[list[str]] = mapped_column(JSONType)
    total: Mapped[int] = mapped_column(Integer)
    chunk_size: Mapped[int] = mapped_column(Integer)
    chunks: Mapped[int] = mapped_column(Integer)
    # The lowest chunk not yet sent to the broker (chunks are sent a few at a time).
    next_chunk: Mapped[int] = mapped_column(Integer, default=0)
    max_retries: Mapped[int] = mapped_column(Integer, default=3)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_id: Mapped[str | None] = mapped_column(String(64))
    notify: Mapped[dict[str, Any] | None] = mapped_column(JSONType)


class BatchItem(Base):
    """One calculation of a batch: its parameters (validated, defaults filled in) and outcome."""

    __tablename__ = "batch_items"
    __table_args__ = (Index("ix_batch_items_status_chunk", "batch_id", "status", "chunk"),)

    batch_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("batches.id", ondelete="CASCADE"), primary_key=True
    )
    idx: Mapped[int] = mapped_column(Integer, primary_key=True)
    chunk: Mapped[int] = mapped_column(Integer)
    params: Mapped[dict[str, Any]] = mapped_column(JSONType)
    status: Mapped[str] = mapped_column(String(16), default=TaskStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    finished_at: Mapped[datetime | None] = mapped_column()


class BatchEvent(Base):
    """One status change of a batch (created, started, cancelled, retried, ended)."""

    __tablename__ = "batch_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    batch_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("batches.id", ondelete="CASCADE"), index=True
    )
    status: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    message: Mapped[str | None] = mapped_column(Text)
