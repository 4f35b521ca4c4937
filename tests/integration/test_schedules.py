"""The beat's schedule firing against a real (migrated) database and redis-server: every task
a schedule creates carries the schedule's template, its notification targets included, and is
a submission of the schedule's owner: within their queued-tasks quota, their submit limit and
SCHEDULE_MIN_INTERVAL, or skipped for good."""

import logging
import uuid
from datetime import datetime, timedelta

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import delete, select, update

from finq_core.config import Settings, get_settings
from finq_core.db import session_scope
from finq_core.dispatch import fire_schedules
from finq_core.lifecycle import task_values
from finq_core.models import Schedule, Task, TaskStatus, User
from finq_core.ratelimit import hit_submit
from finq_core.store import insert_task, recount_result_bytes
from finq_core.timeutil import utcnow

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def only_this_tests_schedules(migrated_db: str) -> None:
    """fire_schedules fires every due schedule in the database: none left by another test."""
    with session_scope() as s:
        s.execute(delete(Schedule))


def test_fired_tasks_carry_the_schedules_notify(migrated_db: str) -> None:
    # On a minute mark, as a stored schedule's runs are (they come from its cron).
    now = utcnow().replace(second=0, microsecond=0)
    notify = {"webhook_url": "https://hooks.example.com/finq", "email": "ops@example.com"}
    with_notify, without = uuid.uuid4(), uuid.uuid4()
    with session_scope() as s:
        for sid, spec in ((with_notify, notify), (without, None)):
            s.add(
                Schedule(
                    id=sid,
                    owner="tester",
                    name=f"n-{sid}",
                    cron="* * * * *",
                    type="loan_amortization",
                    params={"principal": 1000, "annual_rate": 0.05, "years": 1},
                    priority="low",
                    max_retries=1,
                    created_at=now,
                    next_run_at=now - timedelta(minutes=2),
                    notify=spec,
                )
            )
    # Each fires its first due run and the two minute marks since: 3 runs each.
    assert fire_schedules(now) == 6
    with session_scope() as s:
        fired = s.scalars(select(Task).where(Task.schedule_id == with_notify)).all()
        plain = s.scalars(select(Task).where(Task.schedule_id == without)).all()
        assert len(fired) == 3 and len(plain) == 3
        assert all(t.notify == notify for t in fired)
        assert all(t.notify is None for t in plain)
        assert {t.priority for t in fired} == {"low"}
        stored = s.get(Schedule, with_notify)
        assert stored is not None and stored.notify == notify
        s.delete(stored)
        s.delete(s.get(Schedule, without))


LOAN = {"principal": 1000, "annual_rate": 0.05, "years": 1}


def add_schedule(
    owner: str, cron: str, next_run_at: datetime, last_run_at: datetime | None = None
) -> uuid.UUID:
    sid = uuid.uuid4()
    with session_scope() as s:
        s.add(
            Schedule(
                id=sid,
                owner=owner,
                name=f"s-{sid}",
                cron=cron,
                type="loan_amortization",
                params=LOAN,
                priority="normal",
                max_retries=1,
                created_at=next_run_at - timedelta(days=1),
                last_run_at=last_run_at,
                next_run_at=next_run_at,
            )
        )
    return sid


def schedule_state(sid: uuid.UUID) -> tuple[datetime, datetime | None, int]:
    """The schedule's next run, last run, and how many tasks it created."""
    with session_scope() as s:
        schedule = s.get(Schedule, sid)
        assert schedule is not None
        made = len(s.scalars(select(Task.id).where(Task.schedule_id == sid)).all())
        return schedule.next_run_at, schedule.last_run_at, made


def waiting_task(owner: str, now: datetime) -> uuid.UUID:
    """A PENDING task of `owner`, due in an hour: it holds a queued-tasks quota slot."""
    values = task_values(
        owner=owner,
        type_name="loan_amortization",
        params=LOAN,
        priority="normal",
        max_retries=0,
        targets=None,
        now=now,
        run_at=now + timedelta(hours=1),
        idempotency_key=None,
    )
    with session_scope() as s:
        insert_task(s, values, "scheduled")
    task_id: uuid.UUID = values["id"]
    return task_id


def skipped(reason: str) -> float:
    return REGISTRY.get_sample_value("finq_schedule_runs_skipped_total", {"reason": reason}) or 0.0


def limits(**fields: object) -> Settings:
    return get_settings().model_copy(update=fields)


def test_runs_over_the_queued_quota_are_skipped_logged_and_never_made_up(
    migrated_db: str, redis_server: str, caplog: pytest.LogCaptureFixture
) -> None:
    now = utcnow().replace(second=0, microsecond=0)
    owner = f"q-{uuid.uuid4().hex[:8]}"
    full = [waiting_task(owner, now) for _ in range(2)]
    sid = add_schedule(owner, "* * * * *", now - timedelta(minutes=2))
    tight = limits(quota_queued_tasks=2)
    before = skipped("queued_tasks")
    with caplog.at_level(logging.WARNING, logger="finq.beat"):
        # Three runs due (two missed, one now), none fits: each skipped, the schedule moves on.
        assert fire_schedules(now, tight) == 0
    assert schedule_state(sid) == (now + timedelta(minutes=1), None, 0)
    assert skipped("queued_tasks") == before + 3
    assert caplog.text.count(f"of {owner}: run due") == 3
    with session_scope() as s:  # and on the schedule, for its owner to see
        seen = s.get(Schedule, sid)
        assert seen is not None and seen.skipped_count == 3
        assert (seen.last_skipped_at, seen.last_skip_reason) == (now, "queued_tasks")
    assert "queued-tasks quota (QUOTA_QUEUED_TASKS)" in caplog.text
    # Room again: the skipped runs are not made up (no burst), the next due run is created.
    with session_scope() as s:
        s.execute(update(Task).where(Task.id == full[0]).values(status=TaskStatus.CANCELLED.value))
    assert fire_schedules(now, tight) == 0
    assert fire_schedules(now + timedelta(minutes=1), tight) == 1
    assert schedule_state(sid) == (now + timedelta(minutes=2), now + timedelta(minutes=1), 1)
    # That run fills the quota again: the following one is skipped.
    assert fire_schedules(now + timedelta(minutes=2), tight) == 0
    assert schedule_state(sid)[2] == 1


def test_runs_count_against_the_owners_submit_limit(migrated_db: str, redis_server: str) -> None:
    now = utcnow().replace(microsecond=0)
    owner = f"r-{uuid.uuid4().hex[:8]}"
    limited = limits(rate_limit_enabled=True, rate_limit_submit="3/minute", schedule_min_interval=1)
    assert hit_submit(owner, limited) is None  # a submission through the API, same counter
    sid = add_schedule(owner, "* * * * * *", now - timedelta(seconds=4))
    before = skipped("rate_limit")
    # Five runs due, two left in the owner's budget of three a minute.
    assert fire_schedules(now, limited) == 2
    assert schedule_state(sid) == (now + timedelta(seconds=1), now - timedelta(seconds=3), 2)
    assert skipped("rate_limit") == before + 3
    retry_after = hit_submit(owner, limited)  # and the API's next submission is refused too
    assert retry_after is not None and 1 <= retry_after <= 60


def test_a_schedule_firing_more_often_than_the_minimum_interval_runs_once_per_interval(
    migrated_db: str, redis_server: str
) -> None:
    """A schedule stored before SCHEDULE_MIN_INTERVAL (or one whose spacing the check at
    creation did not see) runs at most once per interval: the beat jumps to the first run the
    interval allows, one skip per jump."""
    last = utcnow().replace(microsecond=0) - timedelta(seconds=10)
    owner = f"i-{uuid.uuid4().hex[:8]}"
    sid = add_schedule(owner, "* * * * * *", last + timedelta(seconds=1), last_run_at=last)
    every_minute = limits(schedule_min_interval=60)
    before = skipped("interval")
    assert fire_schedules(last + timedelta(seconds=10), every_minute) == 0
    assert schedule_state(sid) == (last + timedelta(seconds=60), last, 0)
    assert skipped("interval") == before + 1
    assert fire_schedules(last + timedelta(seconds=60), every_minute) == 1
    assert fire_schedules(last + timedelta(seconds=61), every_minute) == 0
    assert schedule_state(sid) == (
        last + timedelta(seconds=120),
        last + timedelta(seconds=60),
        1,
    )


def test_a_run_is_skipped_while_the_owners_stored_results_are_over_their_quota(
    migrated_db: str, redis_server: str
) -> None:
    now = utcnow().replace(second=0, microsecond=0)
    owner = f"b-{uuid.uuid4().hex[:8]}"
    with session_scope() as s:
        s.add(User(username=owner, role="user", password_hash="-"))
    stored = waiting_task(owner, now)
    with session_scope() as s:
        s.execute(
            update(Task)
            .where(Task.id == stored)
            .values(status=TaskStatus.SUCCESS.value, result_bytes=2 * 1024 * 1024)
        )
        recount_result_bytes(s)  # the owner's counter, as the store keeps it
    sid = add_schedule(owner, "* * * * *", now)
    before = skipped("result_bytes")
    assert fire_schedules(now, limits(quota_result_bytes=1024 * 1024)) == 0
    assert schedule_state(sid) == (now + timedelta(minutes=1), None, 0)
    assert skipped("result_bytes") == before + 1
