"""The task store on both databases: migrations, conditional transitions, history, keys,
stored results (their sizes, read back whole) and listings that read neither params nor results."""

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy import Engine, event, inspect, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from finq_core import broker, listing, store
from finq_core.config import get_settings
from finq_core.db import Checkpointer, encode_json, make_engine
from finq_core.migrate import upgrade
from finq_core.models import Task, TaskChart, TaskDelivery, TaskEvent, TaskStatus, User
from finq_core.store import PENDING_DELIVERIES, add_event, set_progress, transition
from finq_core.timeutil import utcnow
from finq_core.uploads import find_upload, new_upload, upload_table
from finq_engine import PriceTable
from tests.helpers import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
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
    task = Task(
        id=uuid.uuid4(),
        owner=owner,
        type="loan_amortization",
        params={"principal": 1, "annual_rate": 0.1, "years": 1},
        idempotency_key=key,
    )
    session.add(task)
    add_event(session, task.id, TaskStatus.PENDING.value, "queued")
    session.commit()
    return task


def test_migrations_create_every_table(engine: Engine) -> None:
    tables = set(inspect(engine).get_table_names())
    assert {
        "users",
        "tasks",
        "task_events",
        "schedules",
        "alembic_version",
        "uploads",
        "task_charts",
        "task_deliveries",
    } <= tables
    assert "notify" in {c["name"] for c in inspect(engine).get_columns("schedules")}


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
    assert transition(
        session, task.id, [TaskStatus.RUNNING], TaskStatus.SUCCESS, result={"ok": True}
    )
    assert not transition(
        session, task.id, [TaskStatus.PENDING, TaskStatus.RUNNING], TaskStatus.CANCELLED
    )
    session.commit()
    session.expire_all()
    loaded = session.get(Task, task.id)
    assert loaded is not None and loaded.status == TaskStatus.SUCCESS
    assert loaded.finished_at is not None and loaded.result == {"ok": True}
    history = session.scalars(
        select(TaskEvent.status).where(TaskEvent.task_id == task.id).order_by(TaskEvent.id)
    ).all()
    assert history == ["PENDING", "RUNNING", "SUCCESS"]


def test_progress_is_stored_only_while_running(session: Session) -> None:
    """A progress report that lands after the outcome (or a cancel) must not rewrite it."""
    task = new_task(session)
    set_progress(session, task.id, 0.3, "too early")
    session.commit()
    session.expire_all()
    pending = session.get(Task, task.id)
    assert pending is not None and pending.progress == 0.0
    assert transition(session, task.id, [TaskStatus.PENDING], TaskStatus.RUNNING)
    set_progress(session, task.id, 0.42, "21 of 50 chunks")
    session.commit()
    session.expire_all()
    running = session.get(Task, task.id)
    assert running is not None
    assert (running.progress, running.progress_message) == (0.42, "21 of 50 chunks")
    assert transition(session, task.id, [TaskStatus.RUNNING], TaskStatus.SUCCESS, progress=1.0)
    set_progress(session, task.id, 0.9, "late")
    session.commit()
    session.expire_all()
    done = session.get(Task, task.id)
    assert done is not None and (done.progress, done.status) == (1.0, TaskStatus.SUCCESS)
    history = session.scalars(
        select(TaskEvent.status).where(TaskEvent.task_id == task.id).order_by(TaskEvent.id)
    ).all()
    assert history == ["PENDING", "RUNNING", "SUCCESS"]  # progress is no transition


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


def test_uploads_round_trip_and_stay_with_their_owner(session: Session) -> None:
    """The price matrix survives BYTEA/BLOB bit for bit, and lookups are by id *and* owner."""
    prices = np.random.default_rng(1).uniform(1, 500, (1000, 7))
    table = PriceTable(
        tuple(str(np.datetime64("2020-01-01") + i) for i in range(1000)),
        tuple(f"A{i}" for i in range(7)),
        prices,
    )
    upload = new_upload("alice", "p.csv", table, 12345)
    session.add(upload)
    session.commit()
    session.expire_all()
    found = find_upload(session, upload.id, "alice")
    assert found is not None
    loaded = upload_table(found)
    np.testing.assert_array_equal(loaded.prices, prices)
    assert loaded.dates == table.dates and loaded.assets == table.assets
    assert find_upload(session, upload.id, "bob") is None
    assert find_upload(session, "not-a-uuid", "alice") is None


def test_charts_and_deliveries_go_with_their_task(session: Session) -> None:
    task = new_task(session)
    session.add(TaskChart(task_id=task.id, png=b"\x89PNG..."))
    session.add(
        TaskDelivery(
            task_id=task.id,
            channel="webhook",
            target="https://x.example/",
            task_status="SUCCESS",
            attempt=1,
            status="delivered",
            http_status=200,
        )
    )
    session.commit()
    session.delete(session.get(Task, task.id))
    session.commit()
    assert session.get(TaskChart, task.id) is None
    assert (
        session.scalars(select(TaskDelivery).where(TaskDelivery.task_id == task.id)).first() is None
    )


def test_a_final_transition_of_a_notified_task_is_queued_after_commit_only(
    session: Session,
) -> None:
    """The notification jobs wait for the commit: a rolled-back final status sends nothing."""
    task = new_task(session)
    session.execute(
        update(Task).where(Task.id == task.id).values(notify={"webhook_url": "https://x.example/"})
    )
    session.commit()
    assert transition(session, task.id, [TaskStatus.PENDING], TaskStatus.CANCELLED)
    assert session.info[PENDING_DELIVERIES] == [
        (str(task.id), "CANCELLED", {"webhook_url": "https://x.example/"})
    ]
    session.rollback()
    assert PENDING_DELIVERIES not in session.info


def test_a_final_status_is_committed_with_its_deliveries_or_not_at_all(
    session: Session, redis_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plain commit of a notified task's final status would never queue its deliveries: it
    is refused. Committed with commit_and_queue_deliveries, they are queued after the commit."""
    task = new_task(session)
    targets = {"webhook_url": "https://x.example/", "email": "ops@example.com"}
    session.execute(update(Task).where(Task.id == task.id).values(notify=targets))
    session.commit()
    assert transition(session, task.id, [TaskStatus.PENDING], TaskStatus.CANCELLED)
    with pytest.raises(store.UnqueuedDeliveriesError):
        session.commit()
    session.rollback()
    queued: list[tuple[str, str, dict[str, str]]] = []

    def spy(task_id: str, status: str, targets: dict[str, str]) -> None:
        committed = cast(Engine, session.get_bind()).connect()
        with committed:  # another connection: sees only what was committed
            found = committed.execute(
                select(Task.status).where(Task.id == uuid.UUID(task_id))
            ).scalar()
        assert found == TaskStatus.CANCELLED, "queued before the commit"
        queued.append((task_id, status, targets))
        real(task_id, status, targets)

    real = broker.enqueue_deliveries
    monkeypatch.setattr(broker, "enqueue_deliveries", spy)
    assert transition(session, task.id, [TaskStatus.PENDING], TaskStatus.CANCELLED)
    store.commit_and_queue_deliveries(session)
    assert queued == [(str(task.id), "CANCELLED", targets)]


def test_outside_tests_a_plain_commit_still_queues_its_deliveries(
    session: Session,
    redis_server: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The guard's fallback in production: the forgotten call is logged as an error, and the
    deliveries go after the commit all the same."""
    monkeypatch.setattr(get_settings(), "app_env", "production")
    task = new_task(session)
    targets = {"webhook_url": "https://x.example/"}
    session.execute(update(Task).where(Task.id == task.id).values(notify=targets))
    session.commit()
    queued: list[str] = []
    monkeypatch.setattr(broker, "enqueue_deliveries", lambda task_id, *_: queued.append(task_id))
    assert transition(session, task.id, [TaskStatus.PENDING], TaskStatus.CANCELLED)
    session.commit()
    assert queued == [str(task.id)]
    assert "plain commit of final statuses" in caplog.text


def test_purging_spares_a_task_retried_meanwhile_and_its_history(session: Session) -> None:
    """delete_finished deletes only tasks still final, and only their history."""
    done, again = new_task(session), new_task(session)
    for task in (done, again):
        assert transition(session, task.id, [TaskStatus.PENDING], TaskStatus.CANCELLED)
    assert transition(session, again.id, [TaskStatus.CANCELLED], TaskStatus.PENDING, "retried")
    session.commit()
    store.delete_finished(session, [done.id, again.id])
    session.commit()
    left = session.scalars(select(Task.id).where(Task.id.in_([done.id, again.id]))).all()
    assert list(left) == [again.id]
    kept = session.scalars(select(TaskEvent.status).where(TaskEvent.task_id == again.id)).all()
    assert list(kept) == ["PENDING", "CANCELLED", "PENDING"]


def documents() -> dict[str, Any]:
    # Up to 1e15: PostgreSQL's jsonb writes larger numbers out in full ("2040...000"), which
    # read back as Python ints (equal in JSON, not in Python), whichever codec reads them.
    rng = np.random.default_rng(3)
    floats = [float(x) for x in rng.standard_normal(2_000) * 10.0 ** rng.integers(-300, 15, 2_000)]
    return {
        "values": floats,
        "tiny": 5e-324,
        "int": 2**53 + 1,
        "text": "é ✓ \u2028",
        "nested": [{"a": None, "b": True}, []],
    }


@pytest.mark.parametrize(
    ("extra", "encoded"),
    [({}, False), ({}, True), ({"huge": 2**70}, True)],
    ids=["as-a-dict", "encoded-as-the-worker-does", "encoded-past-orjsons-int-range"],
)
def test_json_documents_round_trip_exactly(
    session: Session, extra: dict[str, Any], encoded: bool
) -> None:
    """Params and results go through pydantic-core's codec, and results through `encode_json`
    (orjson, pydantic-core for what orjson refuses) (finq_core.db): what is read back must
    equal what was written, floats to the last bit, on both databases."""
    result = {**documents(), **extra}
    stored = encode_json(result) if encoded else result
    task = new_task(session)
    assert transition(session, task.id, [TaskStatus.PENDING], TaskStatus.RUNNING, worker="w1")
    assert transition(session, task.id, [TaskStatus.RUNNING], TaskStatus.SUCCESS, result=stored)
    session.commit()
    session.expire_all()
    loaded = session.get(Task, task.id)
    assert loaded is not None and loaded.result == result
    assert loaded.params == {"principal": 1, "annual_rate": 0.1, "years": 1}


RESULT = {"payment": 53.68, "schedule": [{"period": i, "balance": 1e4 - i} for i in range(300)]}


def finished(session: Session, owner: str) -> uuid.UUID:
    """A SUCCESS task with RESULT stored as the worker stores it."""
    tid = uuid.uuid4()
    encoded = encode_json(RESULT)
    session.add(
        Task(
            id=tid,
            owner=owner,
            type="loan_amortization",
            params={"principal": 1e4, "annual_rate": 0.05, "years": 25, "note": "x" * 5000},
            status=TaskStatus.RUNNING.value,
        )
    )
    session.flush()
    assert store.transition(
        session,
        tid,
        [TaskStatus.RUNNING],
        TaskStatus.SUCCESS,
        result=encoded,
        result_bytes=len(encoded.data),
        result_summary=store.result_summary(RESULT),
    )
    session.commit()
    return tid


def test_the_result_columns_exist(engine: Engine) -> None:
    columns = {c["name"] for c in inspect(engine).get_columns("tasks")}
    assert {"result_bytes", "result_summary"} <= columns


def test_the_whole_result_reads_back_as_stored_and_the_view_links_it(session: Session) -> None:
    tid = finished(session, "alice")
    text = store.stored_result(session, tid)
    assert text is not None and json.loads(text) == RESULT
    task = session.get(Task, tid, options=store.WITHOUT_RESULT)
    assert task is not None and task.result_bytes == len(encode_json(RESULT).data)
    view = store.result_view(task)
    assert view["result"] == RESULT and not view["result_truncated"]  # under 256 KiB: inline
    assert view["result_url"] == f"/api/v1/tasks/{tid}/result"


def test_a_listing_reads_neither_params_nor_results(engine: Engine, session: Session) -> None:
    owner = f"lister-{uuid.uuid4().hex[:8]}"
    tid = finished(session, owner)
    statements: list[str] = []

    def record(_conn: object, _cur: object, statement: str, *_: object) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        page = listing.page_of_tasks(
            session, User(username=owner, role="user"), listing.TaskFilter(), 50, None
        )
        views = [store.summary_view(t) for t in page.tasks]
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert [v["id"] for v in views] == [tid]
    assert views[0]["result_bytes"] == len(encode_json(RESULT).data)
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 1, statements
    read = set(re.findall(r"\btasks\.(\w+)", selects[0]))
    assert not read & {"params", "result", "result_summary"}, selects[0]
    assert "result_bytes" in read


def test_the_migration_sizes_results_stored_before_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/old.db"
    upgrade(url, "0003")
    eng = make_engine(url)
    with eng.begin() as conn:
        for tid, result in ((uuid.uuid4(), '{"a": [1, 2]}'), (uuid.uuid4(), "null")):
            conn.execute(
                sa.text(
                    "INSERT INTO tasks (id, owner, type, params, status, priority, progress,"
                    " result, attempts, max_retries, created_at) VALUES (:id, 'old', 'x', '{}',"
                    " 'SUCCESS', 'normal', 1.0, :result, 1, 3, :at)"
                ),
                {"id": tid.hex, "result": result, "at": utcnow().isoformat()},
            )
    upgrade(url)
    with eng.connect() as conn:
        sizes = sorted(conn.execute(sa.text("SELECT result_bytes FROM tasks")).scalars(), key=str)
    eng.dispose()
    assert sizes == [13, None]


def test_migration_0005_keys_existing_usernames_and_refuses_case_clashes(tmp_path: Path) -> None:
    """Accounts made before usernames were unique ignoring case get their key (and version 0);
    a database holding `Alice` and `alice` is not migrated, and the message names them."""
    for name, users, clash in (
        ("kept", ["Alice", "bob"], False),
        ("clash", ["Alice", "alice"], True),
    ):
        url = f"sqlite:///{tmp_path}/{name}.db"
        upgrade(url, "0004")
        eng = make_engine(url)
        with eng.begin() as db:
            for username in users:
                db.execute(
                    sa.text(
                        "INSERT INTO users (username, password_hash, role, created_at) "
                        "VALUES (:u, 'x', 'user', '2026-01-01 00:00:00')"
                    ),
                    {"u": username},
                )
        if clash:
            with pytest.raises(RuntimeError, match="alice"):
                upgrade(url)
        else:
            upgrade(url)
            with eng.connect() as db:
                rows = db.execute(
                    sa.text("SELECT username, username_key, token_version, deleted_at FROM users")
                ).all()
            assert sorted(map(tuple, rows)) == [
                ("Alice", "alice", 0, None),
                ("bob", "bob", 0, None),
            ]
        eng.dispose()


def stored_bytes(session: Session, owner: str) -> int:
    session.expire_all()
    return int(session.scalar(select(User.result_bytes).where(User.username == owner)) or 0)


def new_user(session: Session) -> str:
    name = f"counted-{uuid.uuid4().hex[:8]}"
    session.add(User(username=name, password_hash="x"))
    session.commit()
    return name


def test_the_owner_counter_follows_results_stored_and_deleted(session: Session) -> None:
    """users.result_bytes is what the quota check reads: it grows with every stored result,
    shrinks with every deleted task, and a recount gives the same sum."""
    owner, other = new_user(session), new_user(session)
    size = len(encode_json(RESULT).data)
    first, second = finished(session, owner), finished(session, owner)
    finished(session, other)
    assert stored_bytes(session, owner) == 2 * size
    store.delete_finished(session, [first])
    session.commit()
    assert stored_bytes(session, owner) == size
    session.execute(update(User).where(User.username == owner).values(result_bytes=12345))
    store.recount_result_bytes(session)
    session.commit()
    assert (stored_bytes(session, owner), stored_bytes(session, other)) == (size, size)
    store.delete_finished(session, [second])
    session.commit()
    assert stored_bytes(session, owner) == 0


def test_migration_0008_counts_the_results_stored_before_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/counted.db"
    upgrade(url, "0007")
    eng = make_engine(url)
    with eng.begin() as db:
        db.execute(
            sa.text(
                "INSERT INTO users (username, username_key, password_hash, role, created_at) "
                "VALUES ('old', 'old', 'x', 'user', '2026-01-01 00:00:00')"
            )
        )
        for size in (100, 250, None):
            db.execute(
                sa.text(
                    "INSERT INTO tasks (id, owner, type, params, status, priority, progress,"
                    " result_bytes, attempts, max_retries, created_at) VALUES (:id, 'old', 'x',"
                    " '{}', 'SUCCESS', 'normal', 1.0, :size, 1, 3, '2026-01-01 00:00:00')"
                ),
                {"id": uuid.uuid4().hex, "size": size},
            )
    upgrade(url)
    with eng.connect() as db:
        counted = db.execute(sa.text("SELECT result_bytes FROM users")).scalar_one()
    eng.dispose()
    assert counted == 350


def _fill_wal(url: str, commits_checkpoint: bool) -> tuple[Engine, int, int]:
    """2,000 commits of 4 KB each (~2,000 WAL pages, twice SQLite's checkpoint mark): the
    engine, left open (the last connection to close copies the WAL back), and the sizes of the
    database file and its WAL."""
    eng = make_engine(url, commits_checkpoint=commits_checkpoint)
    path = Path(url.removeprefix("sqlite:///"))
    with eng.begin() as db:
        db.execute(sa.text("CREATE TABLE filler (id INTEGER PRIMARY KEY, data BLOB)"))
    for i in range(2000):
        with eng.begin() as db:
            db.execute(sa.text("INSERT INTO filler VALUES (:i, randomblob(4000))"), {"i": i})
    return eng, path.stat().st_size, Path(f"{path}-wal").stat().st_size


def test_a_process_that_checkpoints_in_the_background_commits_without_copying_the_wal(
    tmp_path: Path,
) -> None:
    """The API's commits leave SQLite's WAL to a thread (`background_checkpoints`): with
    checkpoints on commit the file takes the pages at once; without, they wait in the WAL
    until a `Checkpointer` copies them back."""
    usual, on_commit, _ = _fill_wal(f"sqlite:///{tmp_path}/commits.db", commits_checkpoint=True)
    usual.dispose()
    path = tmp_path / "background.db"
    eng, left, wal = _fill_wal(f"sqlite:///{path}", commits_checkpoint=False)
    checkpointer = Checkpointer(str(path), interval=0.05)
    try:
        assert on_commit > 4_000_000  # copied back each time the WAL passed 1,000 pages
        assert left < 1_000_000 < 8_000_000 < wal  # nothing copied back: all of it in the WAL
        checkpointer.start()
        wait_until(
            lambda: path.stat().st_size > 8_000_000,
            10,
            what="the background checkpoint to copy the WAL into the database file",
        )
    finally:
        checkpointer.stop()
        eng.dispose()
    assert not checkpointer.is_alive()
