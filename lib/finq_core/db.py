"""One SQLAlchemy engine per process and a session factory; SQLite tuned for many writers."""

import logging
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson
import pydantic_core
from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.orm import Session, sessionmaker

from finq_core.config import get_settings
from finq_engine.jsonsafe import to_json

# The API runs sync endpoints on AnyIO's thread pool (40 threads); a pool smaller than that
# opens and closes overflow connections per request under load.
SQLITE_POOL_SIZE = 40
CHECKPOINT_SECONDS = 1.0  # how often a background checkpoint copies SQLite's WAL back

log = logging.getLogger("finq.db")

# False in a process that checkpoints in the background (`background_checkpoints`).
_commits_checkpoint = True


@dataclass(frozen=True)
class EncodedJSON:
    """A document already encoded by `encode_json`, written to a JSON column as it is: a
    result is encoded once, to be measured and stored."""

    data: bytes


def encode_json(value: Any) -> EncodedJSON:
    """A result as compact JSON. orjson encodes big float arrays in about half pydantic-core's
    time (a 100,000-option grid: 31 ms against 56 ms), and float64 NumPy arrays left in the
    result (`to_json(keep_arrays=True)`) straight from their memory, NaN and Infinity as null,
    in the bytes the lists would give; what orjson refuses (an int beyond 64 bits, a
    non-string key) goes through pydantic-core, arrays turned into lists first."""
    try:
        return EncodedJSON(orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY))
    except orjson.JSONEncodeError:
        return EncodedJSON(pydantic_core.to_json(to_json(value)))


def _json_text(value: Any) -> str:
    if isinstance(value, EncodedJSON):
        return value.data.decode()
    return pydantic_core.to_json(value).decode()


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def make_engine(url: str, commits_checkpoint: bool = True) -> Engine:
    """`commits_checkpoint=False` (SQLite): no commit of this engine copies the WAL back into
    the database file; something else must (`Checkpointer`)."""
    # JSON columns go through pydantic-core's codec, much cheaper than the json module; it
    # accepts NaN/Infinity like json.dumps and reads back the same floats (test_store.py).
    kwargs: dict[str, Any] = {
        "json_serializer": _json_text,
        "json_deserializer": pydantic_core.from_json,
    }
    if is_sqlite(url):
        db_path = url.split("///", 1)[-1]
        if db_path and db_path != ":memory:":
            Path(db_path).parent.mkdir(parents=True, exist_ok=True)
        # Many processes share one file: WAL lets readers run beside the writer and the busy
        # timeout queues writers instead of failing them. No pre-ping: a file cannot go away
        # like a server connection; connections open lazily, so a worker process holds one.
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        kwargs.update(pool_size=SQLITE_POOL_SIZE, max_overflow=10)
        engine = create_engine(url, **kwargs)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            if not commits_checkpoint:
                cur.execute("PRAGMA wal_autocheckpoint=0")
            cur.close()

        return engine
    kwargs.update(pool_pre_ping=True, pool_size=5, max_overflow=10, pool_recycle=1800)
    return create_engine(url, **kwargs)


@lru_cache
def get_engine() -> Engine:
    return make_engine(get_settings().database_url, _commits_checkpoint)


@lru_cache
def get_sessionmaker() -> sessionmaker[Session]:
    return sessionmaker(get_engine(), expire_on_commit=False)


@contextmanager
def session_scope() -> Iterator[Session]:
    """A session that commits on success and rolls back on any error."""
    session = get_sessionmaker()()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def reset_engine() -> None:
    """Forget the engine (after fork, or when tests switch databases)."""
    if get_engine.cache_info().currsize:
        get_engine().dispose(close=False)
    get_engine.cache_clear()
    get_sessionmaker.cache_clear()


class Checkpointer(threading.Thread):
    """Copies a SQLite database's WAL back into its file every `interval` seconds (a PASSIVE
    checkpoint: it waits for no reader or writer, and none waits for it)."""

    def __init__(self, path: str, interval: float = CHECKPOINT_SECONDS) -> None:
        super().__init__(name="sqlite-checkpoint", daemon=True)
        self.path = path
        self.interval = interval
        self._stopping = threading.Event()

    def run(self) -> None:
        conn = sqlite3.connect(self.path, timeout=0)
        try:
            while not self._stopping.wait(self.interval):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:  # the next round tries again
                    log.warning("WAL checkpoint failed: %s", exc)
        finally:
            conn.close()

    def stop(self) -> None:
        self._stopping.set()
        self.join(5)


@contextmanager
def background_checkpoints() -> Iterator[None]:
    """SQLite: while inside, this process's commits leave the WAL to a thread of its own. A
    commit that crossed SQLite's 1,000-page mark copied the WAL back and synced the file
    inside the commit: a request then waited ~3-8 ms for it. Enter before the process opens a
    connection; on other databases nothing changes."""
    global _commits_checkpoint
    database_url = get_settings().database_url
    path = make_url(database_url).database if is_sqlite(database_url) else None
    if path in (None, "", ":memory:"):
        yield
        return
    _commits_checkpoint = False
    reset_engine()
    checkpointer = Checkpointer(str(path))
    checkpointer.start()
    try:
        yield
    finally:
        checkpointer.stop()
        _commits_checkpoint = True
        reset_engine()
