"""A real Celery worker, a real redis-server and a real database: outcomes of tasks."""

import json
import multiprocessing
import os
import signal
import subprocess
import uuid
from pathlib import Path
from typing import Any, cast

import psutil
import pytest
import redis
from sqlalchemy import select, update

from finq_core import broker, changes, flags
from finq_core.config import get_settings
from finq_core.db import reset_engine, session_scope
from finq_core.dispatch import due_tasks
from finq_core.models import Task, TaskChart, TaskEvent, TaskStatus
from finq_core.store import add_event
from finq_core.timeutil import utcnow
from finq_worker import priority, runner, tasks
from finq_worker.progress import WorkerContext
from tests.e2e.tasks import LONG_MC
from tests.helpers import wait_until

pytestmark = pytest.mark.integration


def submit(type_: str, params: dict[str, Any]) -> uuid.UUID:
    task_id = uuid.uuid4()
    with session_scope() as s:
        s.add(Task(id=task_id, owner="tester", type=type_, params=params))
        add_event(s, task_id, TaskStatus.PENDING.value, "queued")
    broker.enqueue(str(task_id), "normal")
    return task_id


def outcome(task_id: uuid.UUID, timeout: float = 30) -> Task:
    def probe() -> Task | None:
        with session_scope() as s:
            t = s.get(Task, task_id)
            return t if t is not None and t.status in {"SUCCESS", "FAILED", "CANCELLED"} else None

    return wait_until(probe, timeout, 0.05, what=f"task {task_id} to finish")


def running_elsewhere() -> uuid.UUID:
    """A quick task's record, RUNNING on another worker (first@host) on its first attempt."""
    tid = uuid.uuid4()
    with session_scope() as s:
        s.add(
            Task(
                id=tid,
                owner="tester",
                type="loan_amortization",
                attempts=1,
                status=TaskStatus.RUNNING.value,
                worker="first@host",
                started_at=utcnow(),
                params={"principal": 1000, "annual_rate": 0.05, "years": 1},
            )
        )
        add_event(s, tid, TaskStatus.PENDING.value, "queued")
    return tid


def history(task_id: uuid.UUID) -> list[str]:
    with session_scope() as s:
        return list(
            s.scalars(
                select(TaskEvent.status).where(TaskEvent.task_id == task_id).order_by(TaskEvent.id)
            )
        )


def test_a_task_runs_to_success(celery_worker: subprocess.Popen[bytes]) -> None:
    tid = submit("loan_amortization", {"principal": 10000, "annual_rate": 0.05, "years": 30})
    task = outcome(tid)
    assert task.status == TaskStatus.SUCCESS, task.error
    assert task.result is not None and task.result["periods"] == 360
    assert task.attempts == 1 and task.worker and task.worker.startswith("testworker@")
    assert task.started_at is not None and task.finished_at is not None
    assert task.started_at <= task.finished_at
    assert history(tid) == ["PENDING", "RUNNING", "SUCCESS"]


def test_a_message_that_arrives_before_its_record_waits_for_it(
    celery_worker: subprocess.Popen[bytes],
) -> None:
    """The API sends a task's message just before it commits the record: a worker that gets
    the message first must look again later (here: after a Celery retry), not drop it."""
    tid = uuid.uuid4()
    broker.enqueue(str(tid), "normal")
    r = redis.Redis.from_url(os.environ["REDIS_URL"])

    def retried_and_held() -> bool:
        # kombu keeps a delivered, unacknowledged message in the `unacked` hash; the worker's
        # retry is a new message with `retries` >= 1, held until its countdown ends.
        for raw in cast(list[bytes], r.hvals("unacked")):
            headers = json.loads(raw)[0]["headers"]
            if str(tid) in headers.get("argsrepr", "") and headers.get("retries", 0) >= 1:
                return True
        return False

    wait_until(retried_and_held, 15, 0.02, what="the early message to be retried")
    with session_scope() as s:
        s.add(
            Task(
                id=tid,
                owner="tester",
                type="loan_amortization",
                params={"principal": 1000, "annual_rate": 0.05, "years": 1},
            )
        )
        add_event(s, tid, TaskStatus.PENDING.value, "queued")
    task = outcome(tid)
    assert task.status == TaskStatus.SUCCESS, task.error
    assert task.attempts == 1
    assert history(tid) == ["PENDING", "RUNNING", "SUCCESS"]


def test_a_message_whose_submission_failed_is_dropped_at_once(
    celery_worker: subprocess.Popen[bytes],
    worker_log: Path,
) -> None:
    """A submission that lost the race for its idempotency key (or whose commit failed) has
    sent its message already; the API marks it void and the worker drops it on its first
    delivery, instead of looking for a record that will never come for a minute."""
    tid = uuid.uuid4()
    flags.mark_void(str(tid))
    broker.enqueue(str(tid), "normal")
    line = wait_until(
        lambda: next(
            (
                x
                for x in worker_log.read_text().splitlines()
                if str(tid) in x and "dropping the message" in x
            ),
            None,
        ),
        15,
        0.05,
        what="the void message to be dropped",
    )
    assert "submission failed" in line
    r = redis.Redis.from_url(os.environ["REDIS_URL"])
    # Acknowledged (acks late: just after the task returned); the log line above says it was
    # dropped on this delivery, not retried.
    wait_until(
        lambda: (
            not [raw for raw in cast(list[bytes], r.hvals("unacked")) if str(tid).encode() in raw]
        ),
        10,
        0.05,
        what="the void message to be acknowledged",
    )


def test_a_void_mark_never_drops_a_record_that_exists(
    redis_server: str,
    migrated_db: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A commit can raise after the database did commit (the connection broke on the way
    back): the API marks the message void, yet the record exists. The worker's looks before
    the commit was visible missed it; it looks once more before dropping, and runs it."""
    tid = uuid.uuid4()
    with session_scope() as s:
        s.add(
            Task(
                id=tid,
                owner="tester",
                type="loan_amortization",
                params={"principal": 1000, "annual_rate": 0.05, "years": 1},
            )
        )
        add_event(s, tid, TaskStatus.PENDING.value, "queued")
    flags.mark_void(str(tid))

    def too_early(*_args: Any) -> None:
        raise runner.NoRecord(str(tid))

    monkeypatch.setattr(runner, "claim_when_visible", too_early)
    tasks.run_task.apply(args=[str(tid)])
    with session_scope() as s:
        task = s.get(Task, tid)
        assert task is not None and task.status == TaskStatus.SUCCESS, task and task.error


def test_a_claim_that_sees_the_record_only_after_its_update_looks_again(
    redis_server: str,
    migrated_db: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On PostgreSQL each statement has its own snapshot: the API's commit can land between
    the claim's UPDATE (no row yet) and the read after it (PENDING). That is "not visible
    yet", never "already handled": dropping the message would lose a task the client got a
    202 for. Simulated here by an UPDATE that matches nothing."""
    tid = uuid.uuid4()
    with session_scope() as s:
        s.add(
            Task(
                id=tid,
                owner="tester",
                type="loan_amortization",
                params={"principal": 1000, "annual_rate": 0.05, "years": 1},
            )
        )
        add_event(s, tid, TaskStatus.PENDING.value, "queued")
    monkeypatch.setattr(runner, "claim_running", lambda *_args: None)
    with pytest.raises(runner.NoRecord):
        runner.claim(tid, "testworker@here")
    with session_scope() as s:  # a final record is refused, not waited for
        s.execute(update(Task).where(Task.id == tid).values(status=TaskStatus.SUCCESS.value))
    assert runner.claim(tid, "testworker@here") is None


def test_a_running_task_is_taken_over_only_by_a_delivery_that_continues_it(
    redis_server: str,
    migrated_db: str,
) -> None:
    """A fresh message for a RUNNING task is a duplicate (the beat re-sent a task whose
    "queued" mark a crash lost): refused, the run goes on alone. A redelivered one (its worker
    died) takes it over and counts a new attempt."""
    tid = running_elsewhere()
    assert runner.claim(tid, "second@host") is None
    with session_scope() as s:
        task = s.get(Task, tid)
        assert task is not None and (task.worker, task.attempts) == ("first@host", 1)
    taken = runner.claim(tid, "second@host", take_over=True)
    assert taken is not None and taken.attempts == 2
    with session_scope() as s:
        task = s.get(Task, tid)
        assert task is not None and task.worker == "second@host"


def test_poisoned_tasks_fail_alone_and_the_worker_keeps_going(
    celery_worker: subprocess.Popen[bytes],
) -> None:
    bad_params = submit("loan_amortization", {"principal": -1, "annual_rate": 0.05, "years": 1})
    unknown = submit("no_such_type", {})
    garbage = submit("loan_amortization", {"principal": "NaN", "annual_rate": [1], "years": {}})
    good = submit("loan_amortization", {"principal": 1000, "annual_rate": 0.0, "years": 1})
    for tid in (bad_params, unknown, garbage):
        task = outcome(tid)
        assert task.status == TaskStatus.FAILED
        assert task.error is not None and task.error["message"]
        assert "Traceback" not in task.error["message"]
    assert "principal" in (outcome(bad_params).error or {})["message"]
    ok = outcome(good)
    assert ok.status == TaskStatus.SUCCESS and ok.result is not None
    assert ok.result["payment"] == pytest.approx(1000 / 12, abs=0.01)
    assert celery_worker.poll() is None, "the worker died"


def test_a_final_record_is_never_recomputed(celery_worker: subprocess.Popen[bytes]) -> None:
    tid = submit("loan_amortization", {"principal": 500, "annual_rate": 0.1, "years": 1})
    first = outcome(tid)
    assert first.status == TaskStatus.SUCCESS
    # Redeliver the same message (as after a lost worker): the record must not change.
    broker.enqueue(str(tid), "normal")
    marker = submit("loan_amortization", {"principal": 1, "annual_rate": 0.1, "years": 1})
    outcome(marker)  # the queue is FIFO per priority: the duplicate was consumed before it
    again = outcome(tid)
    assert again.finished_at == first.finished_at and again.attempts == first.attempts
    assert history(tid).count("SUCCESS") == 1


def stored_chart(task_id: uuid.UUID) -> bytes:
    def probe() -> tuple[bytes] | None:  # a tuple: an empty PNG is an answer too
        with session_scope() as s:
            chart = s.get(TaskChart, task_id)
            return (chart.png,) if chart is not None else None

    return wait_until(probe, 30, 0.05, what=f"the chart of {task_id}")[0]


def test_charts_are_drawn_when_asked_for_and_a_failure_is_remembered(
    celery_worker: subprocess.Popen[bytes],
) -> None:
    tid = submit("loan_amortization", {"principal": 1000, "annual_rate": 0.05, "years": 2})
    assert outcome(tid).status == TaskStatus.SUCCESS
    with session_scope() as s:
        assert s.get(TaskChart, tid) is None, "a chart was drawn nobody asked for"
    broker.enqueue_chart(str(tid))
    assert stored_chart(tid).startswith(b"\x89PNG\r\n\x1a\n")
    # A result the renderer cannot draw is stored as "no chart" (empty), never retried forever.
    broken = submit("loan_amortization", {"principal": 1000, "annual_rate": 0.05, "years": 1})
    assert outcome(broken).status == TaskStatus.SUCCESS
    with session_scope() as s:
        s.execute(update(Task).where(Task.id == broken).values(result={"unexpected": True}))
    broker.enqueue_chart(str(broken))
    assert stored_chart(broken) == b""
    assert celery_worker.poll() is None, "the worker died"


def test_a_progress_report_publishes_and_learns_of_a_cancel_in_one_go(
    redis_server: str,
    migrated_db: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each report stores the fraction, publishes it, and reads the cancel flag in the same
    round trip: the next cancel check between chunks needs no Redis call of its own."""
    tid = uuid.uuid4()
    with session_scope() as s:
        s.add(
            Task(
                id=tid,
                owner="tester",
                type="monte_carlo_option",
                params={},
                status=TaskStatus.RUNNING.value,
                started_at=utcnow(),
            )
        )
    sub = redis.Redis.from_url(os.environ["REDIS_URL"]).pubsub()
    sub.subscribe(changes.channel(str(tid)))
    wait_until(lambda: sub.get_message(timeout=0.1), 5, 0, what="the subscription")
    # No cancel check of its own: only the reports may read the flag.
    monkeypatch.setattr(flags, "cancel_requested", lambda _tid: pytest.fail("a second round trip"))
    ctx = WorkerContext(tid, interval=0.0)
    ctx.cancel_check_seconds = 3600.0
    ctx.progress(0.25, "a quarter")
    assert not ctx.cancelled()
    flags.request_cancel(str(tid))
    ctx.progress(0.5, "half")
    assert ctx.cancelled()
    frames = [
        json.loads(m["data"])
        for m in iter(lambda: sub.get_message(timeout=1.0), None)
        if m["type"] == "message"
    ]
    assert [(f["progress"], f["message"]) for f in frames] == [(0.25, "a quarter"), (0.5, "half")]
    with session_scope() as s:
        task = s.get(Task, tid)
        assert task is not None and task.progress == 0.5 and task.progress_message == "half"


def test_a_finished_task_shows_counts_that_agree_with_its_100_percent(
    celery_worker: subprocess.Popen[bytes],
) -> None:
    """Progress reports are throttled, so the last one written may say "N of M" with N < M;
    the outcome stores 100% with the calculation's own last message, never an earlier one."""
    params = {
        "spot": 100,
        "strike": 105,
        "maturity": 1,
        "rate": 0.03,
        "volatility": 0.2,
        "option_type": "call",
        "style": "asian_arithmetic",
        "paths": 225_000,  # 112,500 antithetic pairs in 7 chunks of 252 steps
        "steps": 252,
        "seed": 1,
    }
    task = outcome(submit("monte_carlo_option", params), timeout=120)
    assert task.status == TaskStatus.SUCCESS, task.error
    assert (task.progress, task.progress_message) == (1.0, "112,500 of 112,500 samples")


def test_a_retry_that_waited_for_its_record_never_takes_over_a_run(
    redis_server: str,
    migrated_db: str,
) -> None:
    """A message retried only because its record was not visible yet continues no run: if a
    duplicate started the task meanwhile, it must not start a second run beside it. A retry
    after a transient error does continue its run, and takes the record over."""
    tid = running_elsewhere()
    tasks.run_task.apply(args=[str(tid)], kwargs={"record_wait": True}, retries=1)
    with session_scope() as s:
        task = s.get(Task, tid)
        assert task is not None
        assert (task.status, task.worker, task.attempts) == ("RUNNING", "first@host", 1)
    tasks.run_task.apply(args=[str(tid)], kwargs={"record_wait": False}, retries=1)
    with session_scope() as s:
        task = s.get(Task, tid)
        assert task is not None and task.status == TaskStatus.SUCCESS and task.attempts == 2


def test_a_void_message_whose_record_was_seen_is_not_dropped(
    redis_server: str,
    migrated_db: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The last look before dropping a void message saw the record (committed, not claimable
    by this statement's snapshot yet): the message waits for it like any early one."""
    tid = uuid.uuid4()

    def seen(*_args: Any) -> None:
        raise runner.NoRecord(str(tid), seen=True)

    monkeypatch.setattr(runner, "claim", seen)
    with pytest.raises(runner.NoRecord):
        tasks._claim_void(tid, "w@host", False)

    def unseen(*_args: Any) -> None:
        raise runner.NoRecord(str(tid))

    monkeypatch.setattr(runner, "claim", unseen)
    assert tasks._claim_void(tid, "w@host", False) is None


def pool_process_running(task_id: uuid.UUID, not_pid: int = 0) -> int:
    """The pid of the pool process running `task_id`, as the worker itself reports it (Celery's
    `inspect active`); `not_pid`: one already killed, whose request may still be listed."""

    def probe() -> int | None:
        replies = broker.celery_app.control.inspect(timeout=0.5).active() or {}
        for request in (r for requests in replies.values() for r in requests):
            pid = request.get("worker_pid")
            if str(task_id) in request.get("args", []) and pid and pid != not_pid:
                return int(pid)
        return None

    return wait_until(probe, 30, 0.1, what=f"a pool process to run {task_id}")


def attempt_running(task_id: uuid.UUID, attempt: int) -> None:
    def probe() -> bool:
        with session_scope() as s:
            task = s.get(Task, task_id)
            return task is not None and (task.status, task.attempts) == ("RUNNING", attempt)

    wait_until(probe, 30, 0.05, what=f"attempt {attempt} of {task_id} to run")


def test_a_task_that_kills_its_process_on_every_run_fails_after_its_retries(
    celery_worker: subprocess.Popen[bytes],
) -> None:
    """A run killed on every attempt (out of memory, a native crash) is redelivered each time;
    the lost runs count against max_retries, and after max_retries + 1 of them the task is
    FAILED "worker lost N times", its message acknowledged, and the worker serves others."""
    tid = uuid.uuid4()
    with session_scope() as s:
        s.add(
            Task(id=tid, owner="tester", type="monte_carlo_option", params=LONG_MC, max_retries=1)
        )
        add_event(s, tid, TaskStatus.PENDING.value, "queued")
    broker.enqueue(str(tid), "normal")
    killed = 0
    for attempt in (1, 2):
        attempt_running(tid, attempt)
        killed = pool_process_running(tid, not_pid=killed)
        os.kill(killed, signal.SIGKILL)
    task = outcome(tid, timeout=60)
    assert task.status == TaskStatus.FAILED, task.error
    assert task.error == {"type": "WorkerLost", "message": "worker lost 2 times"}
    assert task.attempts == 2
    assert history(tid) == ["PENDING", "RUNNING", "RUNNING", "FAILED"]
    r = redis.Redis.from_url(os.environ["REDIS_URL"])
    wait_until(
        lambda: not any(str(tid).encode() in raw for raw in cast(list[bytes], r.hvals("unacked"))),
        10,
        0.05,
        what="the poisoned message to be acknowledged",
    )
    assert not any(str(tid).encode() in raw for raw in cast(list[bytes], r.lrange("normal", 0, -1)))
    good = submit("loan_amortization", {"principal": 1000, "annual_rate": 0.05, "years": 1})
    assert outcome(good).status == TaskStatus.SUCCESS
    assert celery_worker.poll() is None, "the worker died"


def test_only_runs_ended_by_a_lost_worker_count_as_lost(
    redis_server: str,
    migrated_db: str,
) -> None:
    """A run that ended in a transient retry lost no worker: of three runs since the task was
    queued, the two that the next delivery took over while RUNNING are counted."""
    tid = running_elsewhere()
    with session_scope() as s:
        s.execute(update(Task).where(Task.id == tid).values(attempts=3, max_retries=2))
        for status in ("RUNNING", "RETRYING", "RUNNING", "RUNNING"):
            add_event(s, tid, status)
    assert runner.claim(tid, "third@host", take_over=True) is None
    with session_scope() as s:
        task = s.get(Task, tid)
        assert task is not None and task.status == TaskStatus.FAILED and task.attempts == 3
        assert task.error == {"type": "WorkerLost", "message": "worker lost 2 times"}


def test_the_worker_and_its_pool_yield_the_cpu_to_the_api(
    celery_worker: subprocess.Popen[bytes],
) -> None:
    """WORKER_NICE (10 by default) holds for the main process and every pool process, and the
    pool runs under SCHED_IDLE (WORKER_SCHED_IDLE, on by default), so the API, at the default
    priority and policy, is served first on shared cores."""
    main = psutil.Process(celery_worker.pid)
    pool = wait_until(lambda: main.children(), 30, what="the worker's pool processes")
    assert main.nice() == 10
    assert [child.nice() for child in pool] == [10] * len(pool)
    assert os.sched_getscheduler(main.pid) == os.SCHED_OTHER
    # Each pool process lowers its own policy as it starts (worker_process_init).
    wait_until(
        lambda: all(os.sched_getscheduler(c.pid) == os.SCHED_IDLE for c in pool),
        30,
        what="every pool process under SCHED_IDLE",
    )
    assert psutil.Process().nice() == 0
    assert os.sched_getscheduler(0) == os.SCHED_OTHER


def test_a_task_over_its_owners_running_cap_waits_for_room_without_losing_an_attempt(
    redis_server: str, migrated_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """QUOTA_RUNNING_TASKS=1: a claim of the owner's second task hands it back to the beat's
    dispatcher (PENDING, not queued, no attempt, no event); the dispatcher leaves it while the
    owner's first runs and queues it once that ends; then it runs as attempt 1. Another
    owner's task is not held back."""
    monkeypatch.setenv("QUOTA_RUNNING_TASKS", "1")
    get_settings.cache_clear()
    try:
        # Records only, no messages: the session's worker must not take them meanwhile.
        first, second = running_elsewhere(), uuid.uuid4()
        owner = f"capped-{uuid.uuid4().hex[:8]}"  # no other task of theirs runs
        with session_scope() as s:
            s.add(Task(id=second, owner=owner, type="loan_amortization", params={}))
            add_event(s, second, TaskStatus.PENDING.value, "queued")
        with session_scope() as s:
            s.execute(update(Task).where(Task.id == first).values(owner=owner))
            # as the API writes it: queued already
            s.execute(update(Task).where(Task.id == second).values(enqueued_at=utcnow()))
        assert runner.claim(second, "w@here") is None
        with session_scope() as s:
            held = s.get(Task, second)
            assert held is not None
            assert (held.status, held.attempts, held.enqueued_at) == ("PENDING", 0, None)
            assert held.progress_message is not None
            assert "QUOTA_RUNNING_TASKS" in held.progress_message
        assert history(second) == ["PENDING"]

        def due() -> set[uuid.UUID]:
            with session_scope() as s:
                return {row.id for row in due_tasks(s, utcnow(), limit=100_000)}

        assert second not in due()  # the owner is still full: the dispatcher leaves it
        other = uuid.uuid4()
        with session_scope() as s:
            s.add(Task(id=other, owner="someone-else", type="loan_amortization", params={}))
        assert runner.claim(other, "w@here") is not None  # a share per owner
        with session_scope() as s:
            s.execute(update(Task).where(Task.id == first).values(status="SUCCESS"))
        assert second in due()  # room again: queued on the next pass
        claimed = runner.claim(second, "w@here")
        assert claimed is not None and claimed.attempts == 1
    finally:
        get_settings.cache_clear()


def _policies_around_transactions(answers: Any) -> None:
    """In a forked child: the policy outside, inside and after a committed and a failed
    transaction of a SCHED_IDLE process that holds transactions at normal policy."""
    reset_engine()
    seen = []
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    priority.hold_transactions_at_normal_policy()
    seen.append(os.sched_getscheduler(0))
    with session_scope() as s:
        s.execute(update(Task).where(Task.id == uuid.uuid4()).values(progress=0.5))
        seen.append(os.sched_getscheduler(0))
    seen.append(os.sched_getscheduler(0))
    try:
        with session_scope() as s:
            s.execute(select(Task.id).limit(1))
            seen.append(os.sched_getscheduler(0))
            raise KeyError("rolled back")
    except KeyError:
        seen.append(os.sched_getscheduler(0))
    answers.put(seen)


@pytest.mark.skipif(
    not priority.this_process_may_leave_idle(),
    reason="leaving SCHED_IDLE needs CAP_SYS_NICE or RLIMIT_NICE",
)
def test_a_pool_process_holds_its_database_transactions_at_normal_policy(
    migrated_db: str,
) -> None:
    """SQLite's one write lock must not wait on a SCHED_IDLE process behind its busy siblings:
    a pool process leaves SCHED_IDLE from a transaction's start to its commit or rollback."""
    context = multiprocessing.get_context("fork")
    answers = context.Queue()
    child = context.Process(target=_policies_around_transactions, args=(answers,))
    child.start()
    seen = answers.get(timeout=30)
    child.join(30)
    idle, other = os.SCHED_IDLE, os.SCHED_OTHER
    assert seen == [idle, other, idle, other, idle]
    assert child.exitcode == 0
