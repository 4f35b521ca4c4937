"""`migrate` is safe from several places at once (Swarm may start it on more than one node):
on PostgreSQL an upgrade waits on the migration's advisory lock, then finds the schema at head.
A real PostgreSQL (the `postgres_url` fixture) and real `python -m finq_core.migrate` runs."""

import os
import subprocess
import sys
from pathlib import Path

import sqlalchemy
from alembic.script import ScriptDirectory
from sqlalchemy import text

from finq_core.migrate import LOCK_KEY, alembic_config
from tests.helpers import wait_until


def start_migrate(url: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DATABASE_URL": url, "APP_ENV": "test"}
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "finq_core.migrate"], env=env, stdout=out, stderr=out
        )


def revisions(url: str) -> set[str]:
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as conn:
            return {row[0] for row in conn.execute(text("SELECT version_num FROM alembic_version"))}
    finally:
        engine.dispose()


def test_a_migration_waits_for_one_in_progress_then_finds_the_schema_current(
    fresh_database: str, tmp_path: Path
) -> None:
    heads = set(ScriptDirectory.from_config(alembic_config(fresh_database)).get_heads())
    holder = sqlalchemy.create_engine(fresh_database).connect()
    # Stand in for a runner mid-upgrade: hold the lock the migration takes.
    holder.execute(text("SELECT pg_advisory_lock(:k)"), {"k": LOCK_KEY})
    log = tmp_path / "migrate.log"
    waiting = start_migrate(fresh_database, log)
    try:
        wait_until(
            lambda: "another migration is running" in log.read_text(),
            60,
            what="the migration to report that it waits for the lock",
        )
        assert waiting.poll() is None, "it went ahead while the lock was held"
        tables = sqlalchemy.inspect(holder).get_table_names()
        assert "alembic_version" not in tables
        # A second runner arrives meanwhile.
        second = start_migrate(fresh_database, tmp_path / "second.log")
        holder.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_KEY})
        holder.commit()
        assert waiting.wait(120) == 0, log.read_text()
        assert second.wait(120) == 0, (tmp_path / "second.log").read_text()
    finally:
        for proc in (waiting,):
            if proc.poll() is None:
                proc.kill()
        holder.close()
    assert revisions(fresh_database) == heads
    assert "finished after" in log.read_text()
