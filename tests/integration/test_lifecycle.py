"""The task lifecycle protocol (finq_core.lifecycle) in-process, against the real redis-server
and database the fixtures start: what is recorded, what is queued, what is refused."""

import os
import uuid
from collections.abc import Iterator
from typing import Any, cast

import pytest
import redis
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from finq_core import broker, checks, flags, lifecycle, listing
from finq_core.config import get_settings
from finq_core.db import get_sessionmaker, session_scope
from finq_core.errors import (
    ChartNotFound,
    InvalidInput,
    NotAllowed,
    QueueUnavailable,
    QuotaExceeded,
    TaskNotFound,
    TaskStateConflict,
)
from finq_core.lifecycle import ScheduleRequest, TaskRequest
from finq_core.models import (
    Role,
    Schedule,
    Task,
    TaskChart,
    TaskDelivery,
    TaskEvent,
    TaskStatus,
    User,
)
from finq_core.store import add_event, transition
from tests.helpers import free_port

pytestmark = pytest.mark.integration

LOAN = {"principal": 1000, "annual_rate": 0.05, "years": 1}


def new_user(role: Role = Role.USER) -> User:
    user = User(username=f"owner-{uuid.uuid4().hex[:8]}", role=role.value, password_hash="-")
    with session_scope() as s:
        s.add(user)
    return user


@pytest.fixture
def session(redis_server: str, migrated_db: str) -> Iterator[Session]:
    with get_sessionmaker()() as s:
        yield s


@pytest.fixture
def owner(migrated_db: str) -> User:
    return new_user()


def take_message(queue: str, task_id: uuid.UUID) -> bool:
    """Whether `queue` held a message for the task; it is removed (no worker will run it)."""
    r = redis.Redis.from_url(os.environ["REDIS_URL"])
    found = [
        raw for raw in cast(list[bytes], r.lrange(queue, 0, -1)) if str(task_id).encode() in raw
    ]
    for raw in found:
        r.lrem(queue, 0, cast(str, raw))  # redis-py annotates the value as str; bytes work
    return bool(found)


def submit(session: Session, owner: User, **fields: Any) -> lifecycle.Submitted:
    request = TaskRequest(type="loan_amortization", params=LOAN, **fields)
    return lifecycle.submit(session, owner, request, get_settings())


def history(task_id: uuid.UUID) -> list[str]:
    with session_scope() as s:
        return list(
            s.scalars(
                select(TaskEvent.status).where(TaskEvent.task_id == task_id).order_by(TaskEvent.id)
            )
        )


def stored(task_id: uuid.UUID) -> Task | None:
    with session_scope() as s:
        return s.get(Task, task_id)


def set_status(task_id: uuid.UUID, status: TaskStatus) -> None:
    with session_scope() as s:
        s.execute(update(Task).where(Task.id == task_id).values(status=status.value))


def delayed_task(session: Session, owner: User) -> uuid.UUID:
    """A PENDING task with no message on any queue (it is due in an hour)."""
    return submit(session, owner, delay_seconds=3600).task.id


def test_an_immediate_submission_is_recorded_queued_and_its_message_is_on_its_queue(
    session: Session, owner: User
) -> None:
    submitted = submit(session, owner, priority="low")
    assert submitted.created
    task = stored(submitted.task.id)
    assert task is not None and task.status == TaskStatus.PENDING
    assert task.enqueued_at is not None and task.scheduled_for is None
    assert task.params["principal"] == 1000 and task.owner == owner.username
    assert history(task.id) == ["PENDING"]
    assert take_message("low", task.id)


def test_a_delayed_submission_is_recorded_but_not_queued(session: Session, owner: User) -> None:
    submitted = submit(session, owner, delay_seconds=3600)
    task = stored(submitted.task.id)
    assert task is not None and task.status == TaskStatus.PENDING
    assert task.scheduled_for is not None and task.enqueued_at is None
    assert not any(take_message(q, task.id) for q in broker.QUEUES)


def test_an_idempotency_key_returns_the_first_task(session: Session, owner: User) -> None:
    key = f"key-{uuid.uuid4().hex}"
    first = submit(session, owner, idempotency_key=key, delay_seconds=3600)
    again = submit(session, owner, idempotency_key=key, delay_seconds=3600)
    assert first.created and not again.created
    assert again.task.id == first.task.id
    with session_scope() as s:
        assert len(s.scalars(select(Task).where(Task.idempotency_key == key)).all()) == 1


def test_a_submission_that_loses_the_race_for_its_key_marks_its_message_void(
    session: Session, owner: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = f"race-{uuid.uuid4().hex}"
    first = submit(session, owner, idempotency_key=key)
    assert take_message("normal", first.task.id)
    sent: list[uuid.UUID] = []
    real_send, real_by_key = lifecycle._send, lifecycle._by_key
    look_ups: list[Any] = []

    def spy(task: Task) -> bool:
        sent.append(task.id)
        return real_send(task)

    def late(*args: Any) -> Task | None:  # the early look-up misses, as in the race
        look_ups.append(args)
        return None if len(look_ups) == 1 else real_by_key(*args)

    monkeypatch.setattr(lifecycle, "_send", spy)
    monkeypatch.setattr(lifecycle, "_by_key", late)
    second = submit(session, owner, idempotency_key=key)
    assert not second.created and second.task.id == first.task.id
    assert len(sent) == 1 and sent[0] != first.task.id
    assert flags.is_void(str(sent[0])) and not flags.is_void(str(first.task.id))
    assert stored(sent[0]) is None
    assert take_message("normal", sent[0])


def test_redis_unreachable_refuses_the_submission_and_records_nothing(
    session: Session, owner: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = get_settings().model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    monkeypatch.setattr(broker, "celery_app", broker.make_celery(dead))
    key = f"down-{uuid.uuid4().hex}"
    with pytest.raises(QueueUnavailable):
        submit(session, owner, idempotency_key=key)
    with session_scope() as s:
        assert s.scalars(select(Task).where(Task.idempotency_key == key)).first() is None


def test_a_bug_inside_the_send_is_not_mistaken_for_an_outage(
    session: Session, owner: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: Any, **_kwargs: Any) -> None:
        raise TypeError("send_task() got an unexpected keyword argument")

    monkeypatch.setattr(broker.celery_app, "send_task", broken)
    key = f"bug-{uuid.uuid4().hex}"
    with pytest.raises(TypeError):
        submit(session, owner, idempotency_key=key)
    with session_scope() as s:
        assert s.scalars(select(Task).where(Task.idempotency_key == key)).first() is None


def test_wrong_params_and_targets_name_their_fields(session: Session, owner: User) -> None:
    with pytest.raises(InvalidInput) as bad_params:
        lifecycle.submit(
            session,
            owner,
            TaskRequest(type="loan_amortization", params={**LOAN, "annual_rate": "high"}),
            get_settings(),
        )
    assert [p.loc for p in bad_params.value.problems] == [("body", "params", "annual_rate")]
    no_webhooks = get_settings().model_copy(update={"webhook_secret": None})
    with pytest.raises(InvalidInput) as bad_target:
        checks.check_targets({"webhook_url": "https://x.example/", "email": None}, no_webhooks)
    assert [p.loc for p in bad_target.value.problems] == [("body", "notify", "webhook_url")]


def test_a_pending_task_is_cancelled_at_once(session: Session, owner: User) -> None:
    tid = delayed_task(session, owner)
    task, stopping = lifecycle.cancel(session, owner, tid)
    assert task.status == TaskStatus.CANCELLED and not stopping
    assert history(tid) == ["PENDING", "CANCELLED"]


def test_a_running_task_is_asked_to_stop(session: Session, owner: User) -> None:
    tid = delayed_task(session, owner)
    with session_scope() as s:
        assert transition(s, tid, [TaskStatus.PENDING], TaskStatus.RUNNING)
    task, stopping = lifecycle.cancel(session, owner, tid)
    assert task.status == TaskStatus.RUNNING and stopping
    assert flags.cancel_requested(str(tid))


def test_a_finished_task_cannot_be_cancelled(session: Session, owner: User) -> None:
    tid = delayed_task(session, owner)
    set_status(tid, TaskStatus.SUCCESS)
    with pytest.raises(TaskStateConflict, match="Task is already SUCCESS"):
        lifecycle.cancel(session, owner, tid)


def test_only_a_failed_or_cancelled_task_is_retried(session: Session, owner: User) -> None:
    tid = delayed_task(session, owner)
    with pytest.raises(TaskStateConflict, match="this one is PENDING"):
        lifecycle.retry(session, owner, tid)
    lifecycle.cancel(session, owner, tid)
    task = lifecycle.retry(session, owner, tid)
    assert task.status == TaskStatus.PENDING and task.attempts == 1
    assert task.enqueued_at is not None and not flags.cancel_requested(str(tid))
    assert history(tid) == ["PENDING", "CANCELLED", "PENDING"]
    assert take_message("normal", tid)
    set_status(tid, TaskStatus.SUCCESS)
    session.expire_all()  # changed by another session
    with pytest.raises(TaskStateConflict, match="this one is SUCCESS"):
        lifecycle.retry(session, owner, tid)


def test_delete_takes_the_history_chart_and_deliveries_and_spares_active_tasks(
    session: Session, owner: User
) -> None:
    tid = delayed_task(session, owner)
    with pytest.raises(TaskStateConflict, match="cancel it first"):
        lifecycle.delete(session, owner, tid)
    assert stored(tid) is not None
    lifecycle.cancel(session, owner, tid)
    with session_scope() as s:
        s.add(TaskChart(task_id=tid, png=b""))
        s.add(
            TaskDelivery(
                task_id=tid,
                channel="email",
                target="ops@example.com",
                task_status="CANCELLED",
                attempt=1,
                status="delivered",
            )
        )
        add_event(s, tid, TaskStatus.CANCELLED.value, "noted")
    lifecycle.delete(session, owner, tid)
    with session_scope() as s:
        assert s.get(Task, tid) is None and s.get(TaskChart, tid) is None
        for table in (TaskEvent, TaskDelivery):
            assert s.scalars(select(table).where(table.task_id == tid)).first() is None


def test_another_owners_task_does_not_exist_for_the_caller(session: Session, owner: User) -> None:
    tid = delayed_task(session, owner)
    stranger, admin = new_user(), new_user(Role.ADMIN)
    for ask in (lifecycle.find_owned, lifecycle.cancel, lifecycle.retry, lifecycle.delete):
        with pytest.raises(TaskNotFound):
            ask(session, stranger, tid)
    assert lifecycle.find_owned(session, admin, tid).id == tid
    task = stored(tid)
    assert task is not None and task.status == TaskStatus.PENDING


def test_pages_follow_the_cursor_newest_first_and_only_admins_see_everyone(
    session: Session, owner: User
) -> None:
    ids = [delayed_task(session, owner) for _ in range(5)]
    seen: list[uuid.UUID] = []
    cursor = None
    while True:
        page = listing.page_of_tasks(session, owner, listing.TaskFilter(), 2, cursor)
        seen += [t.id for t in page.tasks]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == ids[::-1]
    with pytest.raises(NotAllowed):
        listing.page_of_tasks(session, owner, listing.TaskFilter(all_users=True), 2, None)
    admin = new_user(Role.ADMIN)
    everyone = listing.page_of_tasks(session, admin, listing.TaskFilter(all_users=True), 200, None)
    assert set(ids) <= {t.id for t in everyone.tasks}


def test_a_garbled_cursor_is_named_as_the_wrong_input(session: Session, owner: User) -> None:
    with pytest.raises(InvalidInput) as refused:
        listing.page_of_tasks(session, owner, listing.TaskFilter(), 2, "garbage")
    assert [p.loc for p in refused.value.problems] == [("query", "cursor")]


def test_only_a_successful_task_has_a_chart(session: Session, owner: User) -> None:
    task_id = delayed_task(session, owner)
    with pytest.raises(ChartNotFound, match="Only a successful task"):
        lifecycle.chart(session, owner, task_id)


def test_the_queued_tasks_quota_counts_waiting_tasks_at_submission_and_retry(
    session: Session, owner: User
) -> None:
    two = get_settings().model_copy(update={"quota_queued_tasks": 2})

    def delayed(key: str | None = None) -> lifecycle.Submitted:
        request = TaskRequest(
            type="loan_amortization", params=LOAN, delay_seconds=3600, idempotency_key=key
        )
        return lifecycle.submit(session, owner, request, two)

    key = f"quota-{uuid.uuid4().hex}"
    first, second = delayed(key).task.id, delayed().task.id
    with pytest.raises(QuotaExceeded, match=r"at most 2 queued tasks .*QUOTA_QUEUED_TASKS") as full:
        delayed()
    assert full.value.retry_after
    again = delayed(key)  # a repeated key still gets its task
    assert not again.created and again.task.id == first
    set_status(second, TaskStatus.RUNNING)  # running is not waiting: room for one
    delayed()
    lifecycle.cancel(session, owner, first)
    delayed()
    with pytest.raises(QuotaExceeded):  # a retry queues the task again: counted too
        lifecycle.retry(session, owner, first, two)
    stranger = TaskRequest("loan_amortization", LOAN, delay_seconds=60)
    assert lifecycle.submit(session, new_user(), stranger, two).created  # quotas are per user


def test_high_priority_is_a_right_of_the_roles_in_high_priority_roles(
    session: Session, owner: User
) -> None:
    with pytest.raises(NotAllowed, match=r'priority "high" .* admin \(HIGH_PRIORITY_ROLES\)'):
        submit(session, owner, priority="high", delay_seconds=3600)
    assert submit(session, new_user(Role.ADMIN), priority="high", delay_seconds=3600).created
    everyone = get_settings().model_copy(update={"high_priority_roles": ["admin", "user"]})
    request = TaskRequest("loan_amortization", LOAN, priority="high", delay_seconds=3600)
    assert lifecycle.submit(session, owner, request, everyone).created
    nobody = get_settings().model_copy(update={"high_priority_roles": []})
    with pytest.raises(NotAllowed, match="roles: none"):
        lifecycle.submit(session, new_user(Role.ADMIN), request, nobody)


def test_delay_seconds_lies_within_run_at_max_days(session: Session, owner: User) -> None:
    one_day = get_settings().model_copy(update={"run_at_max_days": 1})
    request = TaskRequest("loan_amortization", LOAN, delay_seconds=86400 + 1)
    with pytest.raises(InvalidInput) as far:
        lifecycle.submit(session, owner, request, one_day)
    (problem,) = far.value.problems
    assert problem.loc == ("body", "delay_seconds") and "RUN_AT_MAX_DAYS" in problem.msg
    within = TaskRequest("loan_amortization", LOAN, delay_seconds=86400)
    assert lifecycle.submit(session, owner, within, one_day).created


def test_a_schedule_needs_the_minimum_interval_a_free_quota_slot_and_the_priority_right(
    session: Session, owner: User
) -> None:
    one = get_settings().model_copy(update={"quota_schedules": 1, "schedule_min_interval": 60})

    def create(cron: str, priority: str = "normal") -> Schedule:
        request = ScheduleRequest("s", cron, "loan_amortization", LOAN, priority=priority)
        return lifecycle.create_schedule(session, owner, request, one)

    with pytest.raises(InvalidInput) as often:
        create("* * * * * *")
    (problem,) = often.value.problems
    assert problem.loc == ("body", "cron")
    assert "fires every 1 s" in problem.msg and "SCHEDULE_MIN_INTERVAL" in problem.msg
    with pytest.raises(NotAllowed, match='priority "high"'):
        create("* * * * *", priority="high")
    made = create("* * * * *")
    with pytest.raises(QuotaExceeded, match=r"at most 1 schedules .*QUOTA_SCHEDULES") as full:
        create("0 6 * * *")
    assert full.value.retry_after is None  # only deleting one makes room
    session.delete(made)  # no run of it for the beat's tests
    session.commit()
