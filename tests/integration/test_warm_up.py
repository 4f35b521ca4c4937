"""What a process does while it starts: an API process loads the broker's send path (not inside
its first submit), and API and pool processes leave what start-up built out of later garbage
collections."""

import os
import socket
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.integration

SEND_PATH = ("celery", "kombu", "billiard", "encodings")


def fresh_interpreter(code: str, redis_url: str) -> str:
    """Run `code` in a new interpreter (nothing imported yet) against `redis_url`; its output."""
    env = {**os.environ, "REDIS_URL": redis_url}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_first_submit_after_start_up_imports_nothing_of_the_send_path(
    redis_server: str, migrated_db: str
) -> None:
    # A database of its own on the session's redis-server: no test worker sees the message.
    url = redis_server.rsplit("/", 1)[0] + "/9"
    out = fresh_interpreter(
        f"""
        import sys, uuid
        from fastapi.testclient import TestClient
        from finq_api.main import create_app
        from finq_core import broker
        with TestClient(create_app()):
            before = set(sys.modules)
            broker.enqueue(str(uuid.uuid4()), "normal")
            new = sorted(m for m in set(sys.modules) - before if m.startswith({SEND_PATH!r}))
            print(",".join(new) or "none")
        """,
        url,
    )
    assert out == "none"


def test_warming_up_opens_no_connection_to_redis() -> None:
    """Redis may still be down while the API starts: the warm-up only loads code."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        port = listener.getsockname()[1]
        out = fresh_interpreter(
            """
            import sys
            from finq_core import broker
            broker.warm_up()
            print("kombu.transport.redis" in sys.modules)
            """,
            f"redis://127.0.0.1:{port}/0",
        )
        assert out == "True"
        with pytest.raises(BlockingIOError):  # nobody knocked
            listener.accept()


def test_after_start_up_a_full_collection_walks_only_what_came_since(
    redis_server: str, migrated_db: str
) -> None:
    out = fresh_interpreter(
        """
        import gc
        from fastapi.testclient import TestClient
        from finq_api.main import create_app
        with TestClient(create_app()):
            print(gc.get_freeze_count(), len(gc.get_objects()))
        """,
        redis_server,
    )
    frozen, tracked = map(int, out.split())
    assert frozen > 50_000  # FastAPI, SQLAlchemy and Celery's objects, frozen at start-up
    assert tracked < frozen / 10


def test_a_pool_process_freezes_its_start_up_heap_when_forked(redis_server: str) -> None:
    out = fresh_interpreter(
        """
        import gc
        from celery.signals import worker_process_init
        import finq_worker.app
        worker_process_init.send(sender=None)
        print(gc.get_freeze_count(), len(gc.get_objects()))
        """,
        redis_server,
    )
    frozen, tracked = map(int, out.split())
    assert frozen > 50_000 and tracked < frozen / 10


def test_an_api_process_on_sqlite_leaves_wal_checkpoints_to_a_thread_of_its_own(
    redis_server: str, migrated_db: str
) -> None:
    """No request's commit copies SQLite's WAL back (a commit that did waited 3-8 ms); the
    process's own thread does, from start-up to shutdown (finq_core.db.background_checkpoints)."""
    out = fresh_interpreter(
        """
        import threading
        from fastapi.testclient import TestClient
        from sqlalchemy import text
        from finq_api.main import create_app
        from finq_core.db import session_scope

        def checkpointers():
            return sum(t.name == "sqlite-checkpoint" for t in threading.enumerate())

        with TestClient(create_app()):
            with session_scope() as s:
                during = s.execute(text("PRAGMA wal_autocheckpoint")).scalar()
            print(checkpointers(), during)
        with session_scope() as s:
            after = s.execute(text("PRAGMA wal_autocheckpoint")).scalar()
        print(checkpointers(), after)
        """,
        redis_server,
    )
    assert out.split("\n") == ["1 0", "0 1000"]
