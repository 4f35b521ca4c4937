"""One SQLAlchemy engine per process and a session factory; SQLite tuned for many writers."""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson
import pydantic_core
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from finq_core.config import get_settings
from finq_engine.jsonsafe import to_json

# The API runs sync endpoints on AnyIO's thread pool (40 threads); a pool smaller than that
# opens and closes overflow connections per request under load.
SQLITE_POOL_SIZE = 40


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


def make_engine(url: str) -> Engine:
    # JSON columns go through pydantic-core's codec, much cheaper than the json module; it
    # accepts NaN/Infinity like json.dumps and reads back the same floats (test_store.py).
    kwargs: dict[str, Any] = {
        "json_serializer": _json_text,
        "json_deserializer": pydantic_core.from_json,
    }
    if url.startswith("sqlite"):
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
            cur.close()

        return engine
    kwargs.update(pool_pre_ping=True, pool_size=5, max_overflow=10, pool_recycle=1800)
    return create_engine(url, **kwargs)


@lru_cache
def get_engine() -> Engine:
    return make_engine(get_settings().database_url)


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
