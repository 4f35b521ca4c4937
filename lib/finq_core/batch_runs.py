"""How a batch's items run: chunks sent a few at a time, claimed and finished with set-based
statements, the batch ended exactly once.

- A chunk is `chunk_size` consecutive items; its broker message carries (batch id, chunk).
- At most BATCH_CHUNKS_IN_FLIGHT chunks of one batch are on the broker: the submission sends
  the first ones, and every chunk that ran sends the next chunk with pending items (`pump`).
  A single task queued meanwhile waits behind at most that many chunks, and two batches'
  chunks interleave on the queue.
- A delivery claims its chunk's PENDING items in one UPDATE ... RETURNING (a redelivery, whose
  worker died mid-chunk, also takes over the chunk's RUNNING items), runs them, and writes
  every outcome in one executemany UPDATE guarded by `status = RUNNING`: items committed
  before a crash stay finished, only the others run again.
- An item whose runs were lost with their worker more than `max_retries` times fails alone
  ("worker lost"), so an item that kills its process every time cannot loop forever. The
  beat's repair (finq_core.repair) applies the same rule to a chunk whose worker and message
  Redis both lost (`give_back`), and sends again the chunks whose message it lost.
- The batch ends when no item is PENDING or RUNNING, by a conditional UPDATE: once.
"""

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, Table, bindparam, case, delete, func, insert, select, update
from sqlalchemy.orm import Session

from finq_core import broker, metrics
from finq_core.changes import publish_batch_change
from finq_core.models import Batch, BatchEvent, BatchItem, TaskStatus
from finq_core.timeutil import utcnow

log = logging.getLogger("finq.batches")

BATCHES: Table = Batch.__table__  # type: ignore[assignment]
ITEMS: Table = BatchItem.__table__  # type: ignore[assignment]
EVENTS: Table = BatchEvent.__table__  # type: ignore[assignment]
ACTIVE = (TaskStatus.PENDING.value, TaskStatus.RUNNING.value)
FINAL = (TaskStatus.SUCCESS.value, TaskStatus.FAILED.value, TaskStatus.CANCELLED.value)

# CPU seconds of one item of each type, measured with the registry's example parameters
# (a 1-year loan: 0.1 ms, a 30-year one 1.8 ms; the table takes 0.5 ms) on the 2-core
# development machine: `python -m timeit` over TaskType.execute. A chunk holds
# BATCH_CHUNK_SECONDS / cost items (1 to MAX_CHUNK_ITEMS): about 0.1 s of work per message.
ITEM_SECONDS: dict[str, float] = {
    "loan_amortization": 0.0005,
    "black_scholes": 0.0003,
    "bond_analytics": 0.00004,
    "cash_flow_analysis": 0.0004,
    "portfolio_var": 0.0005,
    "monte_carlo_option": 0.008,
    "csv_portfolio_analytics": 0.02,
    # Measured 2026-12-06 on the same machine, busy (medians of 5): 3.9, 109 and 2.2 ms.
    "implied_volatility": 0.004,
    "american_option": 0.1,
    "dated_bond_analytics": 0.002,
}
DEFAULT_ITEM_SECONDS = 0.01
MAX_CHUNK_ITEMS = 1000


def chunk_size(type_name: str, chunk_seconds: float) -> int:
    cost = ITEM_SECONDS.get(type_name, DEFAULT_ITEM_SECONDS)
    return max(1, min(MAX_CHUNK_ITEMS, round(chunk_seconds / cost)))


def add_event(session: Session, batch_id: uuid.UUID, status: str, message: str) -> None:
    session.execute(
        insert(EVENTS).values(batch_id=batch_id, status=status, at=utcnow(), message=message)
    )


def pump(session: Session, batch_id: uuid.UUID, priority: str, count: int) -> int:
    """Send up to `count` more chunks of the batch that still have PENDING items, lowest
    first; commits. Returns how many moved the frontier. Each send is followed by a
    compare-and-set of `next_chunk`: two pumps racing may send one chunk twice, and the second
    delivery then finds nothing to claim (a duplicate is harmless, a lost chunk would stall the
    batch). The pump that lost the race sends the next chunk too: otherwise every race would
    take one chunk off the batch's flight for good (the duplicate sends none)."""
    sent = tries = 0
    while sent < count and tries < 2 * count:
        tries += 1
        start = session.scalar(select(BATCHES.c.next_chunk).where(BATCHES.c.id == batch_id))
        if start is None:
            break
        chunk = session.scalar(
            select(func.min(ITEMS.c.chunk)).where(
                ITEMS.c.batch_id == batch_id,
                ITEMS.c.status == TaskStatus.PENDING.value,
                ITEMS.c.chunk >= start,
            )
        )
        if chunk is None:
            break
        broker.enqueue_chunk(str(batch_id), int(chunk), priority)
        moved = session.execute(
            update(BATCHES)
            .where(BATCHES.c.id == batch_id, BATCHES.c.next_chunk == start)
            .values(next_chunk=chunk + 1)
        ).rowcount  # type: ignore[attr-defined]
        session.commit()
        sent += 1 if moved else 0
    return sent


@dataclass(frozen=True)
class ChunkClaim:
    batch_id: uuid.UUID
    type: str
    owner: str
    priority: str
    items: Sequence[Row[Any]]  # idx, params
    lost: int  # items failed here because their worker was lost too often


def claim_chunk(
    session: Session, batch_id: uuid.UUID, chunk: int, take_over: bool
) -> ChunkClaim | None:
    """Mark the chunk's runnable items RUNNING (attempts + 1) and return them; None when the
    batch is gone or ended. Commits."""
    batch = session.execute(
        select(
            BATCHES.c.type,
            BATCHES.c.owner,
            BATCHES.c.priority,
            BATCHES.c.status,
            BATCHES.c.max_retries,
        ).where(BATCHES.c.id == batch_id)
    ).first()
    if batch is None or batch.status not in ACTIVE:
        return None
    now = utcnow()
    in_chunk = (ITEMS.c.batch_id == batch_id, ITEMS.c.chunk == chunk)
    lost = _fail_lost(session, batch_id, chunk, batch.max_retries, now) if take_over else 0
    statuses = ACTIVE if take_over else (TaskStatus.PENDING.value,)
    items = session.execute(
        update(ITEMS)
        .where(*in_chunk, ITEMS.c.status.in_(statuses))
        .values(status=TaskStatus.RUNNING.value, attempts=ITEMS.c.attempts + 1)
        .returning(ITEMS.c.idx, ITEMS.c.params)
    ).all()
    started = session.execute(
        update(BATCHES)
        .where(BATCHES.c.id == batch_id, BATCHES.c.status == TaskStatus.PENDING.value)
        .values(
            status=TaskStatus.RUNNING.value, started_at=func.coalesce(BATCHES.c.started_at, now)
        )
    ).rowcount  # type: ignore[attr-defined]
    if started:
        add_event(session, batch_id, TaskStatus.RUNNING.value, "started")
    session.commit()
    if started:
        publish_batch_change(batch_id, TaskStatus.RUNNING.value)
    return ChunkClaim(batch_id, batch.type, batch.owner, batch.priority, items, lost)


def _fail_lost(
    session: Session, batch_id: uuid.UUID, chunk: int, max_retries: int, now: datetime
) -> int:
    """The chunk's RUNNING items whose run was lost once more: FAILED ("worker lost") when
    out of attempts. Returns how many."""
    return int(
        session.execute(
            update(ITEMS)
            .where(
                ITEMS.c.batch_id == batch_id,
                ITEMS.c.chunk == chunk,
                ITEMS.c.status == TaskStatus.RUNNING.value,
                ITEMS.c.attempts > max_retries,
            )
            .values(
                status=TaskStatus.FAILED.value,
                finished_at=now,
                error={
                    "type": "WorkerLost",
                    "message": "the worker running this item was lost on every attempt",
                },
            )
        ).rowcount  # type: ignore[attr-defined]
    )


def give_back(session: Session, batch_id: uuid.UUID, chunk: int) -> tuple[int, int]:
    """A chunk whose RUNNING items' worker and message are both gone (finq_core.repair): the
    items out of attempts fail as a redelivery's take-over fails them, the others go back to
    PENDING (the next claim counts a new attempt). Returns (back, failed); does not commit."""
    max_retries = session.scalar(select(BATCHES.c.max_retries).where(BATCHES.c.id == batch_id))
    if max_retries is None:
        return 0, 0
    failed = _fail_lost(session, batch_id, chunk, max_retries, utcnow())
    back = session.execute(
        update(ITEMS)
        .where(
            ITEMS.c.batch_id == batch_id,
            ITEMS.c.chunk == chunk,
            ITEMS.c.status == TaskStatus.RUNNING.value,
        )
        .values(status=TaskStatus.PENDING.value)
    ).rowcount  # type: ignore[attr-defined]
    return int(back), failed


@dataclass(frozen=True)
class Outcome:
    idx: int
    status: str
    result: Any = None  # an EncodedJSON or None
    error: dict[str, str] | None = None


_FINISH = (
    update(ITEMS)
    .where(
        ITEMS.c.batch_id == bindparam("b_id"),
        ITEMS.c.idx == bindparam("b_idx"),
        ITEMS.c.status == TaskStatus.RUNNING.value,
    )
    .values(
        status=bindparam("b_status"),
        result=bindparam("b_result"),
        error=bindparam("b_error"),
        finished_at=bindparam("b_at"),
    )
)


def finish_items(
    session: Session, batch_id: uuid.UUID, outcomes: Sequence[Outcome], at: datetime
) -> None:
    """Write every outcome in one statement (only over items still RUNNING); commits."""
    if outcomes:
        session.execute(
            _FINISH,
            [
                {
                    "b_id": batch_id,
                    "b_idx": o.idx,
                    "b_status": o.status,
                    "b_result": o.result,
                    "b_error": o.error,
                    "b_at": at,
                }
                for o in outcomes
            ],
        )
    session.commit()


def split_release(
    session: Session, batch_id: uuid.UUID, chunk: int, idxs: Sequence[int]
) -> list[int]:
    """A chunk that ran out of time: its items not run go back to PENDING, the second half of
    them as a new chunk of the batch, so that two processes take them on (items that cost far
    more than their type's table says spread out instead of running one after the other).
    Returns the chunks to send again; commits."""
    rest = sorted(idxs)
    moved = rest[len(rest) // 2 :] if len(rest) > 1 else []
    new = None
    if moved:
        new = session.scalar(
            update(BATCHES)
            .where(BATCHES.c.id == batch_id)
            .values(chunks=BATCHES.c.chunks + 1)
            .returning(BATCHES.c.chunks - 1)
        )
    release(session, batch_id, rest, moved, new)
    return [chunk] if new is None else [chunk, int(new)]


def release(
    session: Session,
    batch_id: uuid.UUID,
    idxs: Sequence[int],
    moved: Sequence[int] = (),
    to_chunk: int | None = None,
) -> None:
    """Put claimed items not run back to PENDING (their claim not counted as an attempt); the
    `moved` ones into chunk `to_chunk`. Commits."""
    values: dict[str, Any] = {"status": TaskStatus.PENDING.value, "attempts": ITEMS.c.attempts - 1}
    if moved and to_chunk is not None:
        values["chunk"] = case((ITEMS.c.idx.in_(moved), to_chunk), else_=ITEMS.c.chunk)
    session.execute(
        update(ITEMS)
        .where(
            ITEMS.c.batch_id == batch_id,
            ITEMS.c.idx.in_(idxs),
            ITEMS.c.status == TaskStatus.RUNNING.value,
        )
        .values(values)
    )
    session.commit()


def counts(session: Session, batch_id: uuid.UUID) -> dict[str, int]:
    rows = session.execute(
        select(ITEMS.c.status, func.count())
        .where(ITEMS.c.batch_id == batch_id)
        .group_by(ITEMS.c.status)
    ).all()
    return {str(status): int(n) for status, n in rows}


def end_if_done(session: Session, batch_id: uuid.UUID) -> str | None:
    """End the batch when no item is PENDING or RUNNING: CANCELLED if any item was cancelled,
    FAILED if any failed, SUCCESS otherwise. Returns the final status when this call ended it
    (a conditional UPDATE: exactly one caller does), after queueing its notification."""
    busy = session.scalar(
        select(ITEMS.c.idx).where(ITEMS.c.batch_id == batch_id, ITEMS.c.status.in_(ACTIVE)).limit(1)
    )
    if busy is not None:
        return None
    by_status = counts(session, batch_id)
    if by_status.get(TaskStatus.CANCELLED.value):
        final = TaskStatus.CANCELLED.value
    elif by_status.get(TaskStatus.FAILED.value):
        final = TaskStatus.FAILED.value
    else:
        final = TaskStatus.SUCCESS.value
    row = session.execute(
        update(BATCHES)
        .where(
            BATCHES.c.id == batch_id,
            BATCHES.c.status.in_(ACTIVE),
            # Checked again in the statement: a retry committed since the counts were read
            # has items PENDING again, and this decision is then stale.
            ~select(ITEMS.c.idx)
            .where(ITEMS.c.batch_id == batch_id, ITEMS.c.status.in_(ACTIVE))
            .exists(),
        )
        .values(status=final, finished_at=utcnow())
        .returning(BATCHES.c.notify, BATCHES.c.type)
    ).first()
    if row is None:
        session.rollback()
        return None
    summary = ", ".join(f"{n} {s}" for s, n in sorted(by_status.items()))
    add_event(session, batch_id, final, summary)
    session.commit()
    metrics.batches_finished.labels(row.type, final.lower()).inc()
    publish_batch_change(batch_id, final)
    if row.notify:
        try:
            broker.enqueue_batch_notification(str(batch_id), final)
        except broker.UNAVAILABLE as exc:
            log.error("could not queue the notification of batch %s: %s", batch_id, exc)
    return final


def purge_ended(session: Session, cutoff: datetime, limit: int) -> int:
    """Delete up to `limit` batches ended before `cutoff`, items and history first; commits."""
    ids = session.scalars(
        select(BATCHES.c.id)
        .where(BATCHES.c.status.in_(FINAL), BATCHES.c.finished_at < cutoff)
        .limit(limit)
    ).all()
    for batch_id in ids:
        session.execute(delete(ITEMS).where(ITEMS.c.batch_id == batch_id))
        session.execute(delete(EVENTS).where(EVENTS.c.batch_id == batch_id))
        session.execute(delete(BATCHES).where(BATCHES.c.id == batch_id))
        session.commit()
    return len(ids)
