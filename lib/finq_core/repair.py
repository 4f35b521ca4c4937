"""The database is the source of truth and Redis only delivers: the beat queues again what
Redis lost (`Repairer.run_pass`, every tick of finq_worker.beat).

- Redis came back empty: the marker key (MARKER), which the beat writes beside the queues,
  is gone. Every PENDING record marked queued before that moment is sent again at once, high
  before normal before low, oldest first, in pages (REQUEUE_PAGE, REQUEUE_PER_PASS a tick).
- A message went missing (the last second of AOF, a failover's lag, an eviction): a sweep
  reads every queue list (with kombu's priority sub-lists) from its head in LRANGE pages, then
  kombu's `unacked` hash with HSCAN, at most BROKER_REPAIR_SCAN_BUDGET entries a tick, and
  notes the task ids it finds. A suspect is a record queued (PENDING) longer than the grace
  period, RETRYING longer than the visibility timeout (its retry's countdown is shorter), or
  RUNNING longer than the grace period (or since before Redis came back empty) without its
  worker announcing it (finq_core.presence). One missing in two consecutive sweeps is queued
  again; a RUNNING one goes back to PENDING first, so that its claim counts a new attempt.

Batches the same way: a chunk below its batch's frontier (`next_chunk`) with PENDING or
RUNNING items was sent (pump sends before it moves the frontier), so its message must be in a
list, in `unacked` or, RUNNING, in a live worker's hands (its heartbeat names the chunk). The
sweep notes chunk messages beside task ids. Chunks of a batch created longer than the grace
period ago (RUNNING ones: or before Redis came back empty) missing from two sweeps are sent
again: PENDING items as they are, RUNNING ones back to PENDING first (batch_runs.give_back:
the worker-lost rule of max_retries applies). A batch with nothing left below its frontier
and none RUNNING, yet PENDING items beyond it, is pumped. When Redis came back empty every
unfinished batch's chunks with PENDING items are sent again at once, after the tasks. Each
costs a few indexed statements per unfinished batch, whatever its size, and one batch event.

Re-sending is safe: the claim is a conditional UPDATE, so a duplicate message runs nothing. A
RUNNING record is touched only when no copy of its message exists: kombu restores a dead
worker's unacknowledged message itself (marked redelivered, which takes the record over), and
two runs must never happen side by side.

Scanning a list from its head by index misses no message that stays in it: LPUSH (publish)
shifts entries towards the tail, past the page being read, and BRPOP takes from the tail.
"""

import json
import logging
import re
import time
import uuid
from base64 import b64decode
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

import redis
from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.orm import Session

from finq_core import batch_runs, broker, metrics, presence
from finq_core.broker_check import MARKER
from finq_core.changes import publish_change
from finq_core.config import get_settings
from finq_core.db import session_scope
from finq_core.models import Task, TaskEvent, TaskStatus
from finq_core.redis_client import get_redis
from finq_core.store import TASKS, insert_event

log = logging.getLogger("finq.repair")

REQUEUE_PAGE = 500
REQUEUE_PER_PASS = 2000
SCAN_PAGE = 500
MAX_SUSPECTS = 10_000  # oldest first; younger ones wait for a later sweep
STRIKES = 2  # sweeps in a row that must miss a message before it counts as lost
LOST = "queued again: broker lost its message"

_ARGS = re.compile(r"\"argsrepr\": \"\['([0-9a-f-]{36})'\]\"")
_RUN = f'"task": "{broker.RUN_TASK}"'
_CHUNK_ARGS = re.compile(r"\"argsrepr\": \"\['([0-9a-f-]{36})', (\d+)\]\"")
_CHUNK = f'"task": "{broker.CHUNK_TASK}"'
BATCH_PAGE = 100  # unfinished batches re-sent a tick after Redis came back empty
MAX_BATCH_SUSPECTS = 1000  # batches looked at by one sweep, oldest first


def message_task_id(raw: str, unacked: bool = False) -> str | None:
    """The task id a `finq.run` message carries (kombu's JSON envelope, or an `unacked` hash
    value: [envelope, exchange, routing key]); None for other tasks' messages. Celery's
    `argsrepr` header is read first, the envelope parsed only without it: a sweep reads
    thousands of messages a tick (docs/performance.md)."""
    if _RUN not in raw:
        return None
    found = _ARGS.search(raw)
    if found:
        return found.group(1)
    args = _body_args(raw, unacked)
    return str(args[0]) if args else None


def message_chunk(raw: str, unacked: bool = False) -> str | None:
    """The chunk a `finq.batch_chunk` message carries, as broker.chunk_key names it; None for
    other tasks' messages. Read like message_task_id."""
    if _CHUNK not in raw:
        return None
    found = _CHUNK_ARGS.search(raw)
    if found:
        return broker.chunk_key(found.group(1), int(found.group(2)))
    args = _body_args(raw, unacked)
    return broker.chunk_key(args[0], int(args[1])) if args and len(args) > 1 else None


def _body_args(raw: str, unacked: bool) -> list[Any] | None:
    """The positional arguments in a message's body; None when it cannot be read."""
    try:
        envelope = json.loads(raw)
        if unacked:
            envelope = envelope[0]
        args = json.loads(b64decode(envelope["body"]))[0]
        return list(args) if args else None
    except (ValueError, KeyError, IndexError, TypeError):
        return None


@dataclass(frozen=True)
class Suspect:
    status: str
    version: tuple[Any, ...]  # what changes when the record moves on (see _version)
    priority: str
    request_id: str | None
    worker: str | None


@dataclass(frozen=True)
class ChunkSuspect:
    batch_id: uuid.UUID
    chunk: int | None  # None: the batch's frontier (nothing in flight, PENDING items beyond)
    running: bool
    version: tuple[Any, ...]  # its items' statuses, counts and attempts; or the frontier
    priority: str
    batch_status: str


@dataclass
class Sweep:
    suspects: dict[str, Suspect]
    keys: list[str]
    chunks: dict[str, ChunkSuspect] = field(default_factory=dict)
    key_index: int = 0
    offset: int = 0
    cursor: int = 0
    hashing: bool = False
    done: bool = False


@dataclass
class Requeue:
    """The at-once re-send after Redis came back empty: PENDING records queued before `before`."""

    before: datetime
    priority_index: int = 0
    after: tuple[datetime, uuid.UUID] | None = None
    sent: int = 0
    # Then the unfinished batches created before `before`, a page a tick.
    batch_after: tuple[datetime, uuid.UUID] | None = None
    batches_done: bool = False


@dataclass
class Repairer:
    """One per beat; its state (the sweep in progress, strikes) lives between ticks."""

    sweep: Sweep | None = None
    requeue: Requeue | None = None
    strikes: dict[str, tuple[tuple[Any, ...], int]] = field(default_factory=dict)
    # When Redis last came back empty: RUNNING records started before then are doubted at
    # once, without the grace period (their messages went with the rest).
    emptied_at: datetime | None = None
    next_sweep_at: float = 0.0
    # Heartbeats are trusted once every live worker has had time to beat (after a start or
    # after Redis lost them).
    presence_trusted_at: float = field(
        default_factory=lambda: time.monotonic() + 2 * presence.STALE_SECONDS
    )

    def run_pass(self, now: datetime) -> int:
        """One tick's bounded work; the number of tasks queued again."""
        r = get_redis()
        if broker_emptied(r, now):
            self.requeue, self.emptied_at = Requeue(before=now), now
            self.sweep, self.strikes = None, {}
            self.presence_trusted_at = time.monotonic() + 2 * presence.STALE_SECONDS
        if self.requeue is not None:
            return self._requeue_pass(now)
        if self.sweep is None:
            if time.monotonic() < self.next_sweep_at:
                return 0
            self.sweep = self._start_sweep(r, now)
            if self.sweep is None:
                metrics.repair_sweeps.labels("idle").inc()
                self.next_sweep_at = time.monotonic() + _interval()
                return 0
        scan(r, self.sweep, get_settings().broker_repair_scan_budget)
        if not self.sweep.done:
            return 0
        sweep, self.sweep = self.sweep, None
        repaired = self._conclude(r, sweep, now)
        metrics.repair_sweeps.labels("repaired" if repaired else "clean").inc()
        # A suspect with one strike is looked for again at once; otherwise after the interval.
        self.next_sweep_at = time.monotonic() + (0 if self.strikes else _interval())
        return repaired

    def _requeue_pass(self, now: datetime) -> int:
        job = cast(Requeue, self.requeue)
        sent = 0
        while sent < REQUEUE_PER_PASS and job.priority_index < len(broker.QUEUES):
            page = _queued_before(job, min(REQUEUE_PAGE, REQUEUE_PER_PASS - sent))
            if not page:
                job.priority_index, job.after = job.priority_index + 1, None
                continue
            sent += _resend_page(page, now, "broker_emptied", "Redis came back empty")
            job.after = (page[-1].enqueued_at, page[-1].id)
        if job.priority_index >= len(broker.QUEUES) and sent < REQUEUE_PER_PASS:
            batches = _batches_before(job)
            sent += sum(_resend_batch(b, now) for b in batches)
            if batches:
                job.batch_after = (batches[-1].created_at, batches[-1].id)
            job.batches_done = len(batches) < BATCH_PAGE
        job.sent += sent
        if job.batches_done:
            # Also the first pass on a new Redis: nothing to say unless something was queued.
            if job.sent:
                log.warning(
                    "Redis lost its data: %d queued tasks and batch chunks queued again from "
                    "the database",
                    job.sent,
                )
            self.requeue = None
        return sent

    def _start_sweep(self, r: "redis.Redis", now: datetime) -> Sweep | None:
        announced = self._announced(r)
        found = suspects(now, announced, self.emptied_at)
        chunks = chunk_suspects(now, announced, self.emptied_at)
        if not found and not chunks:
            self.strikes = {}
            return None
        keys = [key for name in broker.QUEUES for key in broker.queue_keys(name)]
        return Sweep(found, keys, chunks)

    def _announced(self, r: "redis.Redis") -> set[str] | None:
        """Task ids and chunks (broker.chunk_key) live workers say they run; None while
        heartbeats cannot be trusted yet."""
        if time.monotonic() < self.presence_trusted_at:
            return None
        return {
            t
            for info in presence.online(r).values()
            for t in (*info.get("tasks", []), *info.get("chunks", []))
        }

    def _conclude(self, r: "redis.Redis", sweep: Sweep, now: datetime) -> int:
        """Strike the suspects no list or hash held; queue again those struck twice."""
        announced = self._announced(r)
        versions = {t: sweep.suspects[t].version for t in suspects_still(sweep.suspects, announced)}
        versions.update({k: sweep.chunks[k].version for k in chunks_still(sweep.chunks, announced)})
        strikes: dict[str, tuple[tuple[Any, ...], int]] = {}
        for key, version in versions.items():
            earlier, n = self.strikes.get(key, (version, 0))
            strikes[key] = (version, n + 1 if earlier == version else 1)
        lost = [key for key, (_, n) in strikes.items() if n >= STRIKES]
        self.strikes = {key: vn for key, vn in strikes.items() if vn[1] < STRIKES}
        return sum(
            _repair_chunk(sweep.chunks[key], now)
            if key in sweep.chunks
            else _repair_one(key, sweep.suspects[key], now)
            for key in lost
        )


def _interval() -> float:
    return get_settings().broker_repair_interval_seconds


def broker_emptied(r: "redis.Redis", now: datetime) -> bool:
    """True once after Redis lost its data (and on its very first use): the marker was
    missing, and is written now."""
    return bool(r.set(MARKER, now.isoformat(), nx=True))


def scan(r: "redis.Redis", sweep: Sweep, budget: int) -> None:
    """Read up to `budget` entries of the lists, then of the unacked hash, striking off the
    suspects found."""
    read = 0
    while read < budget and not sweep.done:
        if not sweep.hashing:
            key = sweep.keys[sweep.key_index]
            page = cast(list[str], r.lrange(key, sweep.offset, sweep.offset + SCAN_PAGE - 1))
            _strike_off(sweep, page, unacked=False)
            if len(page) < SCAN_PAGE:
                sweep.key_index, sweep.offset = sweep.key_index + 1, 0
                sweep.hashing = sweep.key_index == len(sweep.keys)
            else:
                sweep.offset += SCAN_PAGE
        else:
            cursor, items = cast(
                tuple[int, dict[str, str]],
                r.hscan(broker.UNACKED_KEY, sweep.cursor, count=SCAN_PAGE),
            )
            page = list(items.values())
            _strike_off(sweep, page, unacked=True)
            sweep.cursor = int(cursor)
            sweep.done = sweep.cursor == 0
        read += max(len(page), 1)


def _strike_off(sweep: Sweep, page: Iterable[str], unacked: bool) -> None:
    """Drop the suspects (tasks, then chunks) whose message is in this page."""
    for raw in page:
        tid = message_task_id(raw, unacked)
        if tid is not None:
            sweep.suspects.pop(tid, None)
        elif sweep.chunks and (key := message_chunk(raw, unacked)) is not None:
            sweep.chunks.pop(key, None)


def _version(row: Any) -> tuple[Any, ...]:
    return (row.status, row.attempts, row.enqueued_at, row.started_at)


_SUSPECT_COLUMNS = (
    Task.id,
    Task.status,
    Task.attempts,
    Task.enqueued_at,
    Task.started_at,
    Task.priority,
    Task.request_id,
    Task.worker,
)


def suspects(
    now: datetime, announced: set[str] | None, emptied_at: datetime | None = None
) -> dict[str, Suspect]:
    """Records whose message should be in Redis by now, oldest first (MAX_SUSPECTS at most).
    RUNNING ones only when heartbeats can be trusted (`announced` is not None): started
    before the grace period, or before Redis came back empty (`emptied_at`)."""
    settings = get_settings()
    grace = timedelta(seconds=settings.broker_repair_grace_seconds)
    running_before = max(now - grace, emptied_at) if emptied_at else now - grace
    retry_grace = timedelta(seconds=broker.visibility_timeout(settings))
    last_event = (
        select(func.max(TaskEvent.at))
        .where(TaskEvent.task_id == Task.id)
        .correlate(Task)
        .scalar_subquery()
    )
    queries = [
        select(*_SUSPECT_COLUMNS)
        .where(Task.status == TaskStatus.PENDING.value, Task.enqueued_at < now - grace)
        .order_by(Task.enqueued_at),
        select(*_SUSPECT_COLUMNS).where(
            Task.status == TaskStatus.RETRYING.value, last_event < now - retry_grace
        ),
    ]
    if announced is not None:
        queries.append(
            select(*_SUSPECT_COLUMNS).where(
                Task.status == TaskStatus.RUNNING.value, Task.started_at < running_before
            )
        )
    found: dict[str, Suspect] = {}
    with session_scope() as session:
        for query in queries:
            for row in session.execute(query.limit(MAX_SUSPECTS - len(found))):
                if str(row.id) not in (announced or ()):
                    found[str(row.id)] = _suspect(row)
    return found


def _suspect(row: Any) -> Suspect:
    return Suspect(row.status, _version(row), row.priority, row.request_id, row.worker)


def suspects_still(found: dict[str, Suspect], announced: set[str] | None) -> list[str]:
    """The suspects whose record has not moved on since they were picked (and, if RUNNING,
    that no live worker announces)."""
    still: list[str] = []
    ids = list(found)
    with session_scope() as session:
        for start in range(0, len(ids), REQUEUE_PAGE):
            chunk = [uuid.UUID(t) for t in ids[start : start + REQUEUE_PAGE]]
            for row in session.execute(select(*_SUSPECT_COLUMNS).where(Task.id.in_(chunk))):
                tid = str(row.id)
                if _version(row) != found[tid].version:
                    continue
                if row.status == TaskStatus.RUNNING.value and (
                    announced is None or tid in announced
                ):
                    continue
                still.append(tid)
    return still


@dataclass(frozen=True)
class Queued:
    id: uuid.UUID
    priority: str
    request_id: str | None
    enqueued_at: datetime


def _queued_before(job: Requeue, limit: int) -> list[Queued]:
    """The next page of PENDING records of the job's priority queued before `job.before`."""
    priority = broker.QUEUES[job.priority_index]
    query = select(Task.id, Task.priority, Task.request_id, Task.enqueued_at).where(
        Task.status == TaskStatus.PENDING.value,
        Task.priority == priority,
        Task.enqueued_at < job.before,
    )
    if job.after is not None:
        at, last = job.after
        query = query.where(
            or_(Task.enqueued_at > at, and_(Task.enqueued_at == at, Task.id > last))
        )
    with session_scope() as session:
        rows = session.execute(query.order_by(Task.enqueued_at, Task.id).limit(limit)).all()
    return [Queued(r.id, r.priority, r.request_id, r.enqueued_at) for r in rows]


def _resend_page(page: list[Queued], now: datetime, reason: str, why: str) -> int:
    """Record each record still PENDING as queued again, then send its message."""
    moved = _record_resent([(q.id, TaskStatus.PENDING.value) for q in page], now, reason, why)
    for q in page:
        if q.id in moved:
            broker.enqueue(str(q.id), q.priority, q.request_id)
    return len(moved)


def _record_resent(
    ids: list[tuple[uuid.UUID, str]], now: datetime, reason: str, why: str
) -> set[uuid.UUID]:
    """Mark records queued again (those still in the status they were picked in), each with a
    history event, before their messages are sent: a worker may claim a message at once. A
    send that then fails leaves a record the next sweep finds missing again."""
    moved: set[uuid.UUID] = set()
    if not ids:
        return moved
    with session_scope() as session:
        for task_id, status in ids:
            row = session.execute(
                update(TASKS)
                .where(TASKS.c.id == task_id, TASKS.c.status == status)
                .values(enqueued_at=now)
                .returning(TASKS.c.id)
            ).first()
            if row is not None:
                insert_event(session, task_id, status, f"{LOST} ({why})", now)
                moved.add(task_id)
    for task_id in moved:
        log.warning(
            "task %s %s (%s)", task_id, LOST, why, extra={"task_id": str(task_id), "reason": reason}
        )
    metrics.messages_repaired.labels(reason).inc(len(moved))
    return moved


def _repair_one(tid: str, suspect: Suspect, now: datetime) -> int:
    """Queue one lost record again; 1 if its message was sent."""
    task_id = uuid.UUID(tid)
    if suspect.status != TaskStatus.RUNNING.value:
        why = "found in no queue nor in any worker's hands"
        if not _record_resent([(task_id, suspect.status)], now, "message_missing", why):
            return 0
        broker.enqueue(tid, suspect.priority, suspect.request_id)
        return 1
    why = f"its worker {suspect.worker} is gone"
    # Back to PENDING, unmarked, before the send: a crash in between leaves a record the
    # dispatcher queues (finq_core.dispatch); the claim then counts a new attempt (started_at
    # is kept).
    with session_scope() as session:
        moved = session.execute(
            update(TASKS)
            .where(
                TASKS.c.id == task_id,
                TASKS.c.status == TaskStatus.RUNNING.value,
                TASKS.c.started_at == suspect.version[3],
            )
            .values(status=TaskStatus.PENDING.value, worker=None, enqueued_at=None)
            .returning(TASKS.c.id)
        ).first()
        if moved is None:
            return 0
        insert_event(session, task_id, TaskStatus.PENDING.value, f"{LOST} ({why})", now)
    publish_change(task_id, TaskStatus.PENDING.value)
    broker.enqueue(tid, suspect.priority, suspect.request_id)
    with session_scope() as session:
        session.execute(update(TASKS).where(TASKS.c.id == task_id).values(enqueued_at=now))
    log.warning("task %s %s (%s)", tid, LOST, why, extra={"task_id": tid, "reason": "worker_lost"})
    metrics.messages_repaired.labels("worker_lost").inc()
    return 1


# Batches: what should be on the broker for each unfinished batch, and its re-sends.

_BATCH_COLUMNS = (
    batch_runs.BATCHES.c.id,
    batch_runs.BATCHES.c.status,
    batch_runs.BATCHES.c.priority,
    batch_runs.BATCHES.c.next_chunk,
    batch_runs.BATCHES.c.created_at,
)


def _chunk_states(session: Session, batch: Any) -> dict[str, ChunkSuspect]:
    """Each chunk of the batch below its frontier with PENDING or RUNNING items; with none,
    the frontier itself when PENDING items wait beyond it and none runs. Three indexed
    statements at most, whatever the batch's size."""
    items = batch_runs.ITEMS
    pending, running = TaskStatus.PENDING.value, TaskStatus.RUNNING.value
    rows = session.execute(
        select(items.c.chunk, items.c.status, func.count(), func.sum(items.c.attempts))
        .where(
            items.c.batch_id == batch.id,
            items.c.status.in_(batch_runs.ACTIVE),
            items.c.chunk < batch.next_chunk,
        )
        .group_by(items.c.chunk, items.c.status)
    ).all()
    by_chunk: dict[int, list[tuple[Any, ...]]] = {}
    for chunk, status, n, attempts in rows:
        by_chunk.setdefault(int(chunk), []).append((status, int(n), int(attempts or 0)))
    if by_chunk:
        return {
            broker.chunk_key(batch.id, chunk): ChunkSuspect(
                batch.id,
                chunk,
                any(status == running for status, _, _ in states),
                tuple(sorted(states)),
                batch.priority,
                batch.status,
            )
            for chunk, states in by_chunk.items()
        }
    in_batch = items.c.batch_id == batch.id
    busy = select(items.c.idx).where(in_batch, items.c.status == running).limit(1)
    if session.scalar(busy) is not None:
        return {}
    first = session.scalar(
        select(items.c.chunk)
        .where(in_batch, items.c.status == pending)
        .order_by(items.c.chunk)
        .limit(1)
    )
    if first is None:
        return {}
    key = broker.chunk_key(batch.id, "next")
    suspect = ChunkSuspect(
        batch.id, None, False, (batch.next_chunk, first), batch.priority, batch.status
    )
    return {key: suspect}


def chunk_suspects(
    now: datetime, announced: set[str] | None, emptied_at: datetime | None = None
) -> dict[str, ChunkSuspect]:
    """The chunks whose message should be in Redis by now, of unfinished batches created
    before the grace period (RUNNING chunks: or before Redis came back empty, and only when
    heartbeats can be trusted and no live worker announces them); oldest batches first."""
    grace = timedelta(seconds=get_settings().broker_repair_grace_seconds)
    running_before = max(now - grace, emptied_at) if emptied_at else now - grace
    batches = batch_runs.BATCHES
    found: dict[str, ChunkSuspect] = {}
    with session_scope() as session:
        rows = session.execute(
            select(*_BATCH_COLUMNS)
            .where(batches.c.status.in_(batch_runs.ACTIVE), batches.c.created_at < running_before)
            .order_by(batches.c.created_at)
            .limit(MAX_BATCH_SUSPECTS)
        ).all()
        for batch in rows:
            for key, suspect in _chunk_states(session, batch).items():
                if not suspect.running:
                    if batch.created_at < now - grace:
                        found[key] = suspect
                elif announced is not None and key not in announced:
                    found[key] = suspect
    return found


def chunks_still(found: dict[str, ChunkSuspect], announced: set[str] | None) -> list[str]:
    """The chunk suspects whose items have not moved on since they were picked (and, if
    RUNNING, that no live worker announces)."""
    ids = list({s.batch_id for s in found.values()})
    batches = batch_runs.BATCHES
    current: dict[str, ChunkSuspect] = {}
    with session_scope() as session:
        for start in range(0, len(ids), REQUEUE_PAGE):
            page = ids[start : start + REQUEUE_PAGE]
            for batch in session.execute(
                select(*_BATCH_COLUMNS).where(
                    batches.c.id.in_(page), batches.c.status.in_(batch_runs.ACTIVE)
                )
            ):
                current.update(_chunk_states(session, batch))
    return [
        key
        for key, suspect in found.items()
        if key in current
        and current[key].version == suspect.version
        and not (suspect.running and (announced is None or key in announced))
    ]


def _batch_requeued(
    session: Session, s: ChunkSuspect, now: datetime, reason: str, why: str
) -> None:
    """The batch event and log line of chunks queued again, before they are sent (a send that
    fails leaves chunks the next sweep finds missing again); commits the event."""
    message = f"{LOST} ({why})"
    session.execute(
        insert(batch_runs.EVENTS).values(
            batch_id=s.batch_id, status=s.batch_status, at=now, message=message
        )
    )
    session.commit()
    log.warning(
        "batch %s %s", s.batch_id, message, extra={"batch_id": str(s.batch_id), "reason": reason}
    )


def _repair_chunk(s: ChunkSuspect, now: datetime) -> int:
    """Queue one lost chunk (or a stalled frontier) again; how many chunks were sent."""
    in_flight = get_settings().batch_chunks_in_flight
    reason = "worker_lost" if s.running else "message_missing"
    with session_scope() as session:
        if s.chunk is None:
            why = "nothing in flight: the next chunks sent"
            _batch_requeued(session, s, now, reason, why)
            sent = batch_runs.pump(session, s.batch_id, s.priority, in_flight)
        elif not s.running:
            why = f"chunk {s.chunk} found in no queue nor in any worker's hands"
            _batch_requeued(session, s, now, reason, why)
            broker.enqueue_chunk(str(s.batch_id), s.chunk, s.priority)
            sent = 1
        else:
            back, failed = batch_runs.give_back(session, s.batch_id, s.chunk)
            why = (
                f"chunk {s.chunk}: its worker is gone; {back} items back to PENDING, "
                f"{failed} failed (worker lost)"
            )
            _batch_requeued(session, s, now, reason, why)
            if back:
                broker.enqueue_chunk(str(s.batch_id), s.chunk, s.priority)
            # Nothing left to run in it: its place on the queue goes to the next chunk.
            sent = 1 if back else batch_runs.pump(session, s.batch_id, s.priority, 1)
            batch_runs.end_if_done(session, s.batch_id)
    metrics.messages_repaired.labels(reason).inc(sent)
    return sent


def _batches_before(job: Requeue) -> list[Any]:
    """The next page of unfinished batches created before `job.before`."""
    batches = batch_runs.BATCHES
    query = select(*_BATCH_COLUMNS).where(
        batches.c.status.in_(batch_runs.ACTIVE), batches.c.created_at < job.before
    )
    if job.batch_after is not None:
        at, last = job.batch_after
        query = query.where(
            or_(batches.c.created_at > at, and_(batches.c.created_at == at, batches.c.id > last))
        )
    with session_scope() as session:
        return list(
            session.execute(
                query.order_by(batches.c.created_at, batches.c.id).limit(BATCH_PAGE)
            ).all()
        )


def _resend_batch(batch: Any, now: datetime) -> int:
    """After Redis came back empty: send again the batch's chunks below its frontier with
    PENDING items (or pump a stalled frontier); RUNNING chunks are left to the sweep, which
    asks the workers' heartbeats first. How many chunks were sent."""
    with session_scope() as session:
        states = [s for s in _chunk_states(session, batch).values() if not s.running]
        if not states:
            return 0
        chunks = [s.chunk for s in states if s.chunk is not None]
        if chunks:
            why = f"Redis came back empty: chunks {', '.join(map(str, chunks))} sent again"
            _batch_requeued(session, states[0], now, "broker_emptied", why)
            for chunk in chunks:
                broker.enqueue_chunk(str(batch.id), chunk, batch.priority)
            sent = len(chunks)
        else:
            why = "Redis came back empty: nothing in flight, the next chunks sent"
            _batch_requeued(session, states[0], now, "broker_emptied", why)
            in_flight = get_settings().batch_chunks_in_flight
            sent = batch_runs.pump(session, batch.id, batch.priority, in_flight)
    metrics.messages_repaired.labels("broker_emptied").inc(sent)
    return sent
