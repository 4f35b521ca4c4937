"""Apply the database migrations: `python -m finq_core.migrate` (what `finq-service migrate`,
`make run`, the compose `migrate` service and the tests run). Safe to run again, and from
several places at once: on PostgreSQL the upgrade holds a transaction-level advisory lock
(migrations/env.py takes it), so a second runner waits, then finds the schema at head."""

import logging
import sys
import time
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text

from finq_core.config import get_settings

MIGRATIONS = Path(__file__).parent / "migrations"
# pg_advisory_xact_lock's key: any 64-bit number no other finq lock uses ("finq-mig").
LOCK_KEY = 0x66696E712D6D6967
log = logging.getLogger("finq.migrate")


def hold_migration_lock(connection: Connection) -> None:
    """Inside the migration's transaction: wait for any other runner's upgrade to commit.
    SQLite needs none (its writers queue on the file lock)."""
    if connection.dialect.name != "postgresql":
        return
    if connection.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": LOCK_KEY}).scalar():
        return
    log.warning("another migration is running: waiting for it to finish")
    started = time.monotonic()
    connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": LOCK_KEY})
    log.warning("the other migration finished after %.1f s: continuing", time.monotonic() - started)


def alembic_config(url: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", (url or get_settings().database_url).replace("%", "%%"))
    return cfg


def upgrade(url: str | None = None, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def main(argv: list[str]) -> int:
    if len(argv) > 1 and argv[1] == "revision":
        command.revision(alembic_config(), message=argv[2], autogenerate=True)
        return 0
    upgrade()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
