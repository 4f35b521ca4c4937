"""Wait for what a service needs before it starts: `python -m finq_core.dependencies redis
database schema` (deploy/finq-service runs it for each role). Docker Swarm starts a stack's
services in no order and compose's `depends_on` conditions do not exist there, so each process
waits by itself: each check is retried, with a logged line per attempt, until it passes or
DEPENDENCY_WAIT_SECONDS have gone by (exit 3: the orchestrator restarts the container).

  redis     Redis answers PING
  database  the database answers SELECT 1
  schema    the database's migration is at the head revision (`migrate` has run)
"""

import sys
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import redis
from alembic.script import ScriptDirectory
from sqlalchemy import text

from finq_core.config import get_settings
from finq_core.db import make_engine
from finq_core.errors import DependencyNotReady
from finq_core.migrate import alembic_config

FIRST_DELAY = 0.5
MAX_DELAY = 5.0


def where(url: str) -> str:
    """host:port of a URL, never its password: what a log line may show."""
    parts = urlsplit(url)
    if parts.hostname is None:
        return parts.scheme or "?"
    return f"{parts.hostname}:{parts.port}" if parts.port else parts.hostname


def redis_answers() -> None:
    client = redis.Redis.from_url(
        get_settings().redis_url, socket_timeout=3, socket_connect_timeout=3
    )
    try:
        client.ping()
    finally:
        client.close()


def database_answers() -> None:
    engine = make_engine(get_settings().database_url)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    finally:
        engine.dispose()


def schema_is_current() -> None:
    url = get_settings().database_url
    heads = set(ScriptDirectory.from_config(alembic_config(url)).get_heads())
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            found = {
                row[0] for row in conn.execute(text("SELECT version_num FROM alembic_version"))
            }
    except Exception as exc:  # no alembic_version table yet: not migrated
        raise DependencyNotReady("not migrated yet") from exc
    finally:
        engine.dispose()
    if found != heads:
        raise DependencyNotReady(
            f"at {sorted(found) or 'no revision'}, waiting for {sorted(heads)}"
        )


CHECKS: dict[str, tuple[Callable[[], None], Callable[[], str]]] = {
    "redis": (redis_answers, lambda: where(get_settings().redis_url)),
    "database": (database_answers, lambda: where(get_settings().database_url)),
    "schema": (schema_is_current, lambda: where(get_settings().database_url)),
}


def wait_for(
    name: str,
    check: Callable[[], None],
    place: str,
    budget: float,
    log: Callable[[str], None],
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> bool:
    """Run CHECK until it passes or BUDGET seconds are spent; one log line per failure."""
    started = clock()
    delay = FIRST_DELAY
    attempt = 0
    while True:
        attempt += 1
        try:
            check()
        except Exception as exc:  # any failure is "not yet"; the message says which
            spent = clock() - started
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if spent + delay > budget:
                log(
                    f"finq: giving up on {name} ({place}) after {attempt} attempts "
                    f"in {spent:.0f} s: {reason}"
                )
                return False
            log(
                f"finq: waiting for {name} ({place}): {reason} "
                f"(attempt {attempt}, {spent:.0f} s of {budget:.0f} s)"
            )
            sleep(delay)
            delay = min(MAX_DELAY, delay * 2)
            continue
        if attempt > 1:
            log(f"finq: {name} ({place}) ready after {clock() - started:.1f} s")
        return True


def main(names: list[str]) -> int:
    unknown = [name for name in names if name not in CHECKS]
    if unknown:
        print(f"finq: unknown dependency {unknown} (one of {sorted(CHECKS)})", file=sys.stderr)
        return 2
    budget = float(get_settings().dependency_wait_seconds)
    deadline = time.monotonic() + budget

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    for name in names:
        check, place = CHECKS[name]
        if not wait_for(name, check, place(), max(0.0, deadline - time.monotonic()), log):
            return 3
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
