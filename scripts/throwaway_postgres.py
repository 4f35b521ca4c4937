"""A throwaway PostgreSQL cluster from the installed binaries: its own folder and free port,
fsync off, stopped and removed with the context. The tests' `postgres_url` fixture and the
benchmarks' `--postgres` start it; nothing here touches a server already running."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy
from _localstack_settings import free_port


class PostgresNotFoundError(RuntimeError):
    """No initdb under /usr/lib/postgresql (`make install` installs it)."""


def binaries() -> Path:
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not candidates:
        raise PostgresNotFoundError(
            "PostgreSQL binaries not found: run `make install` (installs postgresql)"
        )
    return candidates[-1].parent


def _run_as(data: Path) -> list[str]:
    """initdb refuses root: as root, the cluster runs as `postgres` (or `nobody`)."""
    if os.geteuid() != 0:
        return []
    try:
        user = pwd.getpwnam("postgres").pw_name
    except KeyError:
        user = "nobody"
    data.mkdir(mode=0o700)
    shutil.chown(data, user)
    os.chmod(data.parent, 0o755)
    return ["runuser", "-u", user, "--"]


def _wait_ready(url: str, timeout: float) -> None:
    engine = sqlalchemy.create_engine(url)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                with engine.connect() as conn:
                    conn.execute(sqlalchemy.text("SELECT 1"))
                return
            except sqlalchemy.exc.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    finally:
        engine.dispose()


@contextlib.contextmanager
def throwaway_postgres(parent: Path | None = None, timeout: float = 30) -> Iterator[str]:
    """Yield the SQLAlchemy URL of a fresh cluster (user `finq`, database `postgres`)."""
    bindir = binaries()
    owned = parent is None
    base = Path(tempfile.mkdtemp(prefix="finq-postgres-")) if parent is None else parent
    data = base / "pgdata"
    run_as = _run_as(data)
    port = free_port()
    try:
        subprocess.run(
            [*run_as, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "finq",
             "--no-sync"],
            check=True,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        proc = subprocess.Popen(
            [*run_as, str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-k",
             str(data), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            url = f"postgresql+psycopg://finq@127.0.0.1:{port}/postgres"
            _wait_ready(url, timeout)
            yield url
        finally:
            # pg_ctl stops the server itself: a signal to `runuser` does not always reach it.
            subprocess.run(
                [*run_as, str(bindir / "pg_ctl"), "-D", str(data), "stop", "-m", "fast"],
                check=False,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=60,
            )
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    finally:
        if owned:
            shutil.rmtree(base, ignore_errors=True)
