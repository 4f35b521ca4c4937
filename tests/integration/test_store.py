"""The task store on both databases: migrations, conditional transitions, history, keys."""

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, inspect, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from finq_core.db import make_engine
from finq_core.migrate import upgrade
from finq_core.models import Task, TaskEvent, TaskStatus
from finq_core.store import add_event, transition

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('store')}/store.db"
    else:
        url = request.getfixturevalue("postgres_url")
    upgrade(url)
    upgrade(url)  # idempotent
    eng = make_engine(url)
    yield eng
    eng.dispose()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    with sessionmaker(engine, expire_on_commit=False)() as s:
        yield s


def new_task(session: Session, owner: str = "alice", key: str | None = None) -> Task:
    task = Task(id=uuid.uuid4(), owner=owner, type="loan_amortization",
                params={"principal": 1, "annual_rate": 0.1, "years": 1}, idempotency_key=key)
    session.add(task)
    add_event(session, task.id, TaskStatus.PENDING.value, "queued")
    session.commit()
    return task


def test_migrations_create_every_table(engine: Engine) -> None:
    tables = set(inspect(engine).get_table_names())
    assert {"users", "tasks", "task_events", "schedules", "alembic_version"} <= tables


def test_defaults_and_aware_timestamps(session: Session) -> None:
    task = new_task(session)
    session.expire_all()
    loaded = session.get(Task, task.id)
    assert loaded is not None
    assert loaded.status == TaskStatus.PENDING
    assert loaded.created_at.tzinfo is not None
    assert loaded.params["principal"] == 1


def test_transition_is_conditional(session: Session) -> None:
    task = new_task(session)
    assert transition(session, task.id, [TaskStatus.PENDING], TaskStatus.RUNNING, worker="w1")
    session.commit()
    # A second delivery racing for the same start loses; so does a late cancel of a success.
    assert not transition(session, task.id, [TaskStatus.PENDING], TaskStatus.RUNNING)
    assert transition(session, task.id, [TaskStatus.RUNNING], TaskStatus.SUCCESS,
                      result={"ok": True})
    assert not transition(session, task.id, [TaskStatus.PENDING, TaskStatus.RUNNING],
                          TaskStatus.CANCELLED)
    session.commit()
    session.expire_all()
    loaded = session.get(Task, task.id)
    assert loaded is not None and loaded.status == TaskStatus.SUCCESS
    assert loaded.finished_at is not None and loaded.result == {"ok": True}
    history = session.scalars(select(TaskEvent.status).where(TaskEvent.task_id == task.id)
                              .order_by(TaskEvent.id)).all()
    assert history == ["PENDING", "RUNNING", "SUCCESS"]


def test_idempotency_key_is_unique_per_owner(session: Session) -> None:
    key = uuid.uuid4().hex
    new_task(session, "alice", key)
    new_task(session, "bob", key)  # another owner may reuse it
    with pytest.raises(IntegrityError):
        new_task(session, "alice", key)
    session.rollback()


def test_deleting_a_task_deletes_its_history(session: Session) -> None:
    task = new_task(session)
    session.delete(session.get(Task, task.id))
    session.commit()
    assert session.scalars(select(TaskEvent).where(TaskEvent.task_id == task.id)).first() is None
