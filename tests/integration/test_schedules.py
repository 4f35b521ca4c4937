"""The beat's schedule firing against a real (migrated) database: every task a schedule
creates carries the schedule's template, its notification targets included."""

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select

from finq_core.db import session_scope
from finq_core.dispatch import fire_schedules
from finq_core.models import Schedule, Task
from finq_core.timeutil import utcnow

pytestmark = pytest.mark.integration


def test_fired_tasks_carry_the_schedules_notify(migrated_db: str) -> None:
    now = utcnow().replace(microsecond=0)
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
