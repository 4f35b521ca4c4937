"""Reading batches as a caller sees them: a batch's view (counts by status, progress, items
per second), pages of batches and of items, and the whole result set streamed a page at a
time as NDJSON or CSV (finq_core.row_streams; memory stays flat whatever the batch's size)."""

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from finq_core import batch_runs
from finq_core.listing import decode_cursor, encode_cursor
from finq_core.models import Batch, TaskStatus, User
from finq_core.row_streams import csv_stream, ndjson_stream
from finq_core.timeutil import utcnow

ITEMS = batch_runs.ITEMS
# Rows read at a time while streaming results.
READ_PAGE = 1000


def view(session: Session, batch: Batch) -> dict[str, Any]:
    """The batch as the API shows it: counts by status, progress and items per second."""
    by_status = batch_runs.counts(session, batch.id)
    done = sum(by_status.get(s, 0) for s in batch_runs.FINAL)
    rate = None
    if batch.started_at is not None:
        seconds = ((batch.finished_at or utcnow()) - batch.started_at).total_seconds()
        rate = round(done / seconds, 1) if seconds > 0 else None
    return {
        "id": batch.id,
        "type": batch.type,
        "status": batch.status,
        "priority": batch.priority,
        "total": batch.total,
        "varied": batch.varied,
        "counts": {s.value: by_status.get(s.value, 0) for s in TaskStatus},
        "progress": round(done / batch.total, 4) if batch.total else 1.0,
        "items_per_second": rate,
        "chunk_size": batch.chunk_size,
        "created_at": batch.created_at,
        "started_at": batch.started_at,
        "finished_at": batch.finished_at,
        "notify": batch.notify,
    }


@dataclass(frozen=True)
class Page:
    batches: list[Batch]
    next_cursor: str | None


def page_of_batches(
    session: Session, user: User, status: str | None, limit: int, cursor: str | None
) -> Page:
    """The caller's batches, newest first."""
    stmt = select(Batch).where(Batch.owner == user.username)
    if status:
        stmt = stmt.where(Batch.status == status)
    if cursor:
        at, bid = decode_cursor(cursor)
        stmt = stmt.where(or_(Batch.created_at < at, and_(Batch.created_at == at, Batch.id < bid)))
    rows = session.scalars(
        stmt.order_by(Batch.created_at.desc(), Batch.id.desc()).limit(limit + 1)
    ).all()
    next_cursor = encode_cursor(rows[limit - 1]) if len(rows) > limit else None
    return Page(list(rows[:limit]), next_cursor)


def page_of_items(
    session: Session, batch: Batch, status: str | None, limit: int, after: int | None
) -> tuple[list[dict[str, Any]], int | None]:
    """Items in index order after `after`, with the next page's `after` (None: the last)."""
    stmt = select(
        ITEMS.c.idx,
        ITEMS.c.params,
        ITEMS.c.status,
        ITEMS.c.attempts,
        ITEMS.c.error,
        ITEMS.c.result,
        ITEMS.c.finished_at,
    ).where(ITEMS.c.batch_id == batch.id)
    if status:
        stmt = stmt.where(ITEMS.c.status == status)
    if after is not None:
        stmt = stmt.where(ITEMS.c.idx > after)
    rows = session.execute(stmt.order_by(ITEMS.c.idx).limit(limit + 1)).all()
    items = [
        {
            "index": r.idx,
            "params": r.params,
            "status": r.status,
            "attempts": r.attempts,
            "error": r.error,
            "result": r.result,
            "finished_at": r.finished_at,
        }
        for r in rows[:limit]
    ]
    return items, (rows[limit - 1].idx if len(rows) > limit else None)


def _result_rows(session: Session, batch_id: uuid.UUID) -> Iterator[Any]:
    """Every item in index order, a page at a time: memory stays flat whatever the size."""
    after = -1
    while True:
        rows = session.execute(
            select(ITEMS.c.idx, ITEMS.c.params, ITEMS.c.status, ITEMS.c.result, ITEMS.c.error)
            .where(ITEMS.c.batch_id == batch_id, ITEMS.c.idx > after)
            .order_by(ITEMS.c.idx)
            .limit(READ_PAGE)
        ).all()
        if not rows:
            return
        yield from rows
        after = rows[-1].idx


def _flat(row: Any, varied: list[str], scalars_only: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"index": row.idx, "status": row.status}
    out.update({name: row.params.get(name) for name in varied})
    for key, value in (row.result or {}).items():
        if scalars_only and isinstance(value, list | dict):
            continue
        out[f"result.{key}" if key in out else key] = value
    out["error"] = (row.error or {}).get("message")
    return out


def ndjson_results(session: Session, batch: Batch) -> Iterator[bytes]:
    """One JSON line per item: index, status, varied params, result fields, error."""
    varied = list(batch.varied)
    rows = _result_rows(session, batch.id)
    return ndjson_stream(_flat(row, varied, scalars_only=False) for row in rows)


def csv_results(session: Session, batch: Batch) -> Iterator[bytes]:
    """A header, then one line per item: index, status, varied params, the result's scalar
    fields (arrays are left out of CSV), error. The columns are those of the first result."""
    varied = list(batch.varied)
    first = session.scalar(
        select(ITEMS.c.result)
        .where(ITEMS.c.batch_id == batch.id, ITEMS.c.status == TaskStatus.SUCCESS.value)
        .order_by(ITEMS.c.idx)
        .limit(1)
    )
    probe = type("Row", (), {"idx": 0, "status": "", "params": {}, "result": first, "error": None})
    columns = list(_flat(probe, varied, scalars_only=True))
    rows = _result_rows(session, batch.id)
    return csv_stream(columns, (_flat(row, varied, scalars_only=True) for row in rows))
