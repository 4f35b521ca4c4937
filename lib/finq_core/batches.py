"""Batches as callers ask for them: submit, cancel, retry, delete (reading them:
finq_core.batch_views).

A batch is many items of one task type, given as a list (`items`), as a grid (`base` plus
`vary`: field -> values, expanded as a cartesian product, the last field varying fastest), or
as CSV text (`csv`: one item per row, columns named after parameter fields, merged over
`base`; finq_core.batch_csv), or as the caller's upload of such a CSV (`upload_id`, an upload
of kind items). Every item is validated with the type's own model before anything is written;
the refusal names the item (`items[17].annual_rate`, `csv line 18: annual_rate`,
`upload_id line 18: annual_rate`). The items are then inserted in pages of bulk INSERTs in the
submission's one transaction, and the first chunks are sent (finq_core.batch_runs runs them).

Quotas: BATCH_MAX_ITEMS per batch; the items of the owner's unfinished batches, this one
included, within QUOTA_BATCH_ITEMS (a batch counts by its items, not as one task); the
`high` priority right and the stored-results quota as for tasks. A batch that is not the
caller's (unless an admin asks) does not exist for the caller.
"""

import itertools
import logging
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
from pydantic import ValidationError
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from finq_core import batch_csv, batch_runs, broker, flags, metrics
from finq_core.changes import publish_batch_change
from finq_core.checks import check_priority, check_storage_quota, check_targets
from finq_core.config import Settings
from finq_core.db import EncodedJSON
from finq_core.errors import (
    BatchNotFound,
    InvalidInput,
    Location,
    Problem,
    QueueUnavailable,
    QuotaExceeded,
    TaskStateConflict,
)
from finq_core.logs import request_id_var
from finq_core.models import Batch, Priority, Role, TaskStatus, UploadKind, User
from finq_core.timeutil import utcnow
from finq_core.uploads import find_upload
from finq_engine import get_task_type

log = logging.getLogger("finq.batches")

ITEMS = batch_runs.ITEMS
BATCHES = batch_runs.BATCHES
# Rows of one bulk INSERT.
INSERT_PAGE = 5000
# A refusal lists at most this many wrong items.
MAX_PROBLEMS = 20
QUOTA_RETRY_AFTER = 10
FINAL = batch_runs.FINAL


@dataclass(frozen=True)
class BatchRequest:
    """One of `items`, `vary`, `csv` or `upload_id` gives the items; `base` is merged under
    each."""

    type: str
    items: list[dict[str, Any]] | None = None
    base: dict[str, Any] = field(default_factory=dict)
    vary: dict[str, list[Any]] | None = None
    csv: str | None = None
    upload_id: str | None = None
    priority: str = Priority.NORMAL.value
    max_retries: int | None = None
    notify: Mapping[str, str | None] | None = None
    idempotency_key: str | None = None


@dataclass(frozen=True)
class Source:
    """The items of a request before validation: how many, which fields vary, each item's
    raw params with where it came from (for a refusal)."""

    count: int
    varied: list[str]
    rows: Iterator[tuple[tuple[str | int, ...], dict[str, Any]]]


def _grid(base: dict[str, Any], vary: dict[str, list[Any]]) -> Source:
    names = list(vary)
    count = 1
    for values in vary.values():
        count *= len(values)
    rows = (
        (("body", "vary", i), {**base, **dict(zip(names, combo, strict=True))})
        for i, combo in enumerate(itertools.product(*(vary[n] for n in names)))
    )
    return Source(count, names, rows)


def _csv(base: dict[str, Any], text: str, where: Location) -> Source:
    lines = text.splitlines()
    names = batch_csv.header(lines, where)
    return Source(batch_csv.count_rows(lines), names, batch_csv.rows(lines, names, where, base))


def _list(base: dict[str, Any], items: list[dict[str, Any]]) -> Source:
    varied: dict[str, None] = {}
    for item in items:
        varied.update(dict.fromkeys(item))
    rows = ((("body", "items", i), {**base, **item}) for i, item in enumerate(items))
    return Source(len(items), list(varied), rows)


def _one(loc: tuple[str | int, ...], msg: str) -> InvalidInput:
    return InvalidInput([Problem(loc, msg)])


def source(request: BatchRequest, uploaded: str | None = None) -> Source:
    """The request's items; `uploaded`: the CSV text of its `upload_id` (read_upload)."""
    given = [n for n in ("items", "vary", "csv", "upload_id") if getattr(request, n) is not None]
    if len(given) != 1:
        raise _one(
            ("body",), "give exactly one of `items`, `vary` (with `base`), `csv` or `upload_id`"
        )
    if request.items is not None:
        return _list(request.base, request.items)
    if request.vary is not None:
        return _grid(request.base, request.vary)
    if request.upload_id is not None:
        return _csv(request.base, uploaded or "", ("body", "upload_id"))
    return _csv(request.base, request.csv or "", ("body", "csv"))


def read_upload(session: Session, owner: User, upload_id: str) -> str:
    """The CSV text of the owner's upload of kind items; InvalidInput on `upload_id` when
    there is none (another user's answers the same) or it is a price table."""
    where: Location = ("body", "upload_id")
    upload = find_upload(session, upload_id, owner.username)
    if upload is None:
        raise _one(
            where,
            f"upload {upload_id} not found; upload the CSV with POST /api/v1/uploads "
            "(kind=items) and use its id",
        )
    if upload.kind != UploadKind.ITEMS.value or upload.items_csv is None:
        raise _one(
            where,
            f"upload {upload_id} is a price table (kind {upload.kind}); a batch reads an "
            "upload of kind items",
        )
    return upload.items_csv


def validated(
    request: BatchRequest, settings: Settings, uploaded: str | None = None
) -> tuple[list[str], list[EncodedJSON]]:
    """The varied fields and every item's params checked by the type's model (defaults filled
    in, encoded once); InvalidInput naming up to MAX_PROBLEMS wrong items. `uploaded`: the
    CSV text of the request's `upload_id`."""
    task_type = get_task_type(request.type)
    if task_type is None:
        raise _one(
            ("body", "type"), f"unknown task type {request.type!r}; see GET /api/v1/task-types"
        )
    if task_type.upload is not None:
        raise _one(("body", "type"), f"{request.type} reads an upload and cannot run in a batch")
    src = source(request, uploaded)
    if src.count == 0:
        raise _one(("body",), "the batch has no items")
    if src.count > settings.batch_max_items:
        raise _one(
            ("body",),
            f"{src.count} items: at most {settings.batch_max_items} per batch (BATCH_MAX_ITEMS)",
        )
    problems: list[Problem] = []
    out: list[EncodedJSON] = []
    for where, raw in src.rows:
        try:
            parsed = task_type.parse(raw)
        except ValidationError as exc:
            problems.extend(Problem((*where, *e["loc"]), e["msg"], e["type"]) for e in exc.errors())
            if len(problems) >= MAX_PROBLEMS:
                break
            continue
        if not problems:
            out.append(EncodedJSON(parsed.model_dump_json(by_alias=True).encode()))
    if problems:
        raise InvalidInput(problems[:MAX_PROBLEMS])
    return src.varied, out


def check_batch_quota(session: Session, owner: str, adding: int, settings: Settings) -> None:
    """QuotaExceeded when the items of the owner's unfinished batches, plus `adding`, would
    pass QUOTA_BATCH_ITEMS."""
    waiting = (
        session.scalar(
            select(func.coalesce(func.sum(BATCHES.c.total), 0)).where(
                BATCHES.c.owner == owner, BATCHES.c.status.in_(batch_runs.ACTIVE)
            )
        )
        or 0
    )
    if waiting + adding > settings.quota_batch_items:
        metrics.quota_refusals.labels("batch_items").inc()
        raise QuotaExceeded(
            f"Quota exceeded: at most {settings.quota_batch_items} items in unfinished batches "
            f"per user (QUOTA_BATCH_ITEMS); {waiting} are waiting or running and this batch "
            f"adds {adding}",
            retry_after=QUOTA_RETRY_AFTER,
        )


@dataclass(frozen=True)
class Submitted:
    batch: Batch
    created: bool


def submit(session: Session, owner: User, request: BatchRequest, settings: Settings) -> Submitted:
    """Check, record and start a batch; commits. Nothing is recorded when an item is wrong,
    a quota is full, or Redis refuses the first chunks (QueueUnavailable)."""
    key = request.idempotency_key
    uploaded = None
    if request.upload_id is not None:
        # A replay finds its batch even when the upload was deleted once the batch held it.
        if key and (existing := _by_key(session, owner.username, key)) is not None:
            return Submitted(existing, created=False)
        uploaded = read_upload(session, owner, request.upload_id)
    varied, params = validated(request, settings, uploaded)
    targets = check_targets(request.notify, settings)
    check_priority(owner, request.priority, settings)
    if key and (existing := _by_key(session, owner.username, key)) is not None:
        return Submitted(existing, created=False)
    check_batch_quota(session, owner.username, len(params), settings)
    check_storage_quota(session, owner, settings)
    size = batch_runs.chunk_size(request.type, settings.batch_chunk_seconds)
    now = utcnow()
    batch = Batch(
        id=uuid.uuid4(),
        owner=owner.username,
        type=request.type,
        status=TaskStatus.PENDING.value,
        priority=request.priority,
        varied=varied,
        total=len(params),
        chunk_size=size,
        chunks=(len(params) + size - 1) // size,
        next_chunk=0,
        max_retries=(
            request.max_retries if request.max_retries is not None else settings.max_retry_attempts
        ),
        created_at=now,
        idempotency_key=key,
        request_id=request_id_var.get(),
        notify=targets,
    )
    session.add(batch)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        existing = _by_key(session, owner.username, key or "")
        if existing is None:
            raise
        return Submitted(existing, created=False)
    _insert_items(session, batch.id, size, params)
    batch_runs.add_event(session, batch.id, TaskStatus.PENDING.value, f"{len(params)} items")
    session.commit()
    _start(session, batch, settings)
    metrics.batches_submitted.labels(batch.type, batch.priority).inc()
    metrics.batch_items_submitted.labels(batch.type).inc(batch.total)
    log.info(
        "batch submitted",
        extra={"batch_id": str(batch.id), "type": batch.type, "items": batch.total},
    )
    return Submitted(batch, created=True)


def _insert_items(
    session: Session, batch_id: uuid.UUID, size: int, params: Sequence[EncodedJSON]
) -> None:
    """The rows in bulk, given to the driver as they are stored (the id bound once, the params
    already JSON): SQLite's executemany in pages of INSERT_PAGE, PostgreSQL's COPY; the
    statement layer's per-value processing doubled the time to accept 100,000 items."""
    pending = TaskStatus.PENDING.value
    connection = session.connection()
    dialect = connection.dialect
    if dialect.name == "sqlite":
        columns = ["batch_id", "idx", "chunk", "params", "status", "attempts"]
        sql = str(insert(ITEMS).compile(dialect=dialect, column_keys=columns))
        bind = ITEMS.c.batch_id.type.bind_processor(dialect)
        stored_id = bind(batch_id) if bind else batch_id
        cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
        for start in range(0, len(params), INSERT_PAGE):
            stop = min(start + INSERT_PAGE, len(params))
            cursor.executemany(
                sql,
                [
                    (stored_id, i, i // size, params[i].data.decode(), pending, 0)
                    for i in range(start, stop)
                ],
            )
        return
    if dialect.name == "postgresql":
        _copy_items(connection, batch_id, size, params)
        return
    for start in range(0, len(params), INSERT_PAGE):
        session.execute(
            insert(ITEMS),
            [
                {
                    "batch_id": batch_id,
                    "idx": i,
                    "chunk": i // size,
                    "params": params[i],
                    "status": pending,
                    "attempts": 0,
                }
                for i in range(start, min(start + INSERT_PAGE, len(params)))
            ],
        )


def _copy_items(
    connection: Any, batch_id: uuid.UUID, size: int, params: Sequence[EncodedJSON]
) -> None:
    """PostgreSQL: one COPY of every row (psycopg), several times faster than INSERTs."""
    pending = TaskStatus.PENDING.value
    cursor = connection.connection.driver_connection.cursor()
    columns = "batch_id, idx, chunk, params, status, attempts"
    with cursor.copy(f"COPY batch_items ({columns}) FROM STDIN") as copy:
        for i, item in enumerate(params):
            copy.write_row((batch_id, i, i // size, item.data.decode(), pending, 0))


def _start(session: Session, batch: Batch, settings: Settings) -> None:
    """Send the first chunks of a committed batch. If Redis refuses before any was sent the
    batch is removed again and QueueUnavailable raised; once one is out, the chunks that run
    send the rest."""
    try:
        sent = batch_runs.pump(session, batch.id, batch.priority, settings.batch_chunks_in_flight)
    except broker.UNAVAILABLE as exc:
        session.rollback()
        log.error("batch %s: its first chunks could not be queued: %s", batch.id, exc)
        sent = session.scalar(select(BATCHES.c.next_chunk).where(BATCHES.c.id == batch.id)) or 0
        if not sent:
            _remove(session, batch.id)
            raise QueueUnavailable() from None


def _remove(session: Session, batch_id: uuid.UUID) -> None:
    session.execute(delete(ITEMS).where(ITEMS.c.batch_id == batch_id))
    session.execute(delete(batch_runs.EVENTS).where(batch_runs.EVENTS.c.batch_id == batch_id))
    session.execute(delete(BATCHES).where(BATCHES.c.id == batch_id))
    session.commit()


def _by_key(session: Session, owner: str, key: str) -> Batch | None:
    return session.scalars(
        select(Batch).where(Batch.owner == owner, Batch.idempotency_key == key)
    ).first()


def find_owned(session: Session, user: User, batch_id: uuid.UUID) -> Batch:
    batch = session.get(Batch, batch_id)
    if batch is None or (batch.owner != user.username and user.role != Role.ADMIN):
        raise BatchNotFound()
    return batch


def cancel(session: Session, user: User, batch_id: uuid.UUID) -> Batch:
    """Pending items are cancelled at once; running chunks stop between items (they read the
    cancel flag). TaskStateConflict when the batch has ended."""
    batch = find_owned(session, user, batch_id)
    if batch.status in FINAL:
        raise TaskStateConflict(f"Batch is already {batch.status}")
    try:
        flags.request_batch_cancel(str(batch_id))
    except redis.RedisError:
        raise QueueUnavailable() from None
    n = session.execute(
        update(ITEMS)
        .where(ITEMS.c.batch_id == batch_id, ITEMS.c.status == TaskStatus.PENDING.value)
        .values(status=TaskStatus.CANCELLED.value, finished_at=utcnow())
    ).rowcount  # type: ignore[attr-defined]
    batch_runs.add_event(
        session, batch_id, "CANCELLING", f"cancel asked: {n} pending items cancelled"
    )
    session.commit()
    publish_batch_change(batch_id, batch.status)
    batch_runs.end_if_done(session, batch_id)
    session.refresh(batch)
    return batch


def retry(session: Session, user: User, batch_id: uuid.UUID, settings: Settings) -> Batch:
    """FAILED and CANCELLED items go back to PENDING (their attempts counted afresh) and the
    batch runs again; TaskStateConflict while it runs or when no item needs it."""
    batch = find_owned(session, user, batch_id)
    if batch.status not in FINAL:
        raise TaskStateConflict(f"Batch is {batch.status}; only an ended batch can be retried")
    again = (TaskStatus.FAILED.value, TaskStatus.CANCELLED.value)
    n = (
        session.scalar(
            select(func.count()).where(ITEMS.c.batch_id == batch_id, ITEMS.c.status.in_(again))
        )
        or 0
    )
    if not n:
        raise TaskStateConflict("No failed or cancelled items to retry")
    check_batch_quota(session, batch.owner, n, settings)
    try:
        flags.clear_batch_cancel(str(batch_id))
    except redis.RedisError:
        raise QueueUnavailable() from None
    session.execute(
        update(ITEMS)
        .where(ITEMS.c.batch_id == batch_id, ITEMS.c.status.in_(again))
        .values(
            status=TaskStatus.PENDING.value, attempts=0, error=None, result=None, finished_at=None
        )
    )
    session.execute(
        update(BATCHES)
        .where(BATCHES.c.id == batch_id)
        .values(status=TaskStatus.PENDING.value, finished_at=None, next_chunk=0)
    )
    batch_runs.add_event(session, batch_id, TaskStatus.PENDING.value, f"{n} items retried")
    session.commit()
    session.refresh(batch)
    try:
        sent = batch_runs.pump(session, batch_id, batch.priority, settings.batch_chunks_in_flight)
    except broker.UNAVAILABLE:
        session.rollback()
        sent = 0
    if not sent:
        batch_runs.add_event(session, batch_id, "UNQUEUED", "retry could not be queued")
        session.execute(
            update(ITEMS)
            .where(ITEMS.c.batch_id == batch_id, ITEMS.c.status == TaskStatus.PENDING.value)
            .values(
                status=TaskStatus.FAILED.value,
                error={"type": "QueueUnavailable", "message": "the retry could not be queued"},
            )
        )
        session.commit()
        batch_runs.end_if_done(session, batch_id)
        raise QueueUnavailable()
    publish_batch_change(batch_id, TaskStatus.PENDING.value)
    return batch


def delete_batch(session: Session, user: User, batch_id: uuid.UUID) -> None:
    """Remove an ended batch with its items and history; TaskStateConflict while it runs."""
    batch = find_owned(session, user, batch_id)
    if batch.status not in FINAL:
        raise TaskStateConflict(f"Batch is {batch.status}; cancel it first")
    _remove(session, batch_id)
