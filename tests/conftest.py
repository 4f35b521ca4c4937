"""Fixtures that start real services: redis-server, PostgreSQL, Celery workers, the stack.

Nothing here is a mock. Each service runs on a free port with its data in a temporary folder
and is stopped at the end, so the tests never touch a service already running on the machine.
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
from throwaway_postgres import PostgresNotFoundError, throwaway_postgres

from tests.helpers import free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent

# The test process's own services; set before any finq module reads its settings.
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="finq-tests-"))
REDIS_PORT = free_port()
os.environ["REDIS_URL"] = f"redis://127.0.0.1:{REDIS_PORT}/0"
os.environ["DATABASE_URL"] = f"sqlite:///{_SESSION_DIR}/test.db"
os.environ["APP_ENV"] = "test"
os.environ["APP_SECRET_KEY"] = "test-secret-key-that-is-long-enough-for-hs256"
os.environ["LOG_JSON"] = "false"
for _name in ("ADMIN_USERNAME", "ADMIN_PASSWORD"):
    os.environ.pop(_name, None)

# Environment of subprocesses that start their own stack (never the test process's URLs).
STACK_ENV_DROP = ("REDIS_URL", "DATABASE_URL", "APP_ENV", "APP_SECRET_KEY", "LOG_JSON")


def start_redis(port: int, data_dir: Path) -> subprocess.Popen[bytes]:
    data_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(data_dir),
            "--appendonly",
            "yes",
            "--save",
            "",
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
        ],
        stdout=subprocess.DEVNULL,
    )
    import redis

    client = redis.Redis(port=port)
    wait_until(client.ping, 10, what=f"redis-server on {port}")
    client.close()
    return proc


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    proc = start_redis(REDIS_PORT, _SESSION_DIR / "redis")
    yield os.environ["REDIS_URL"]
    stop_process(proc)


@pytest.fixture(scope="session")
def migrated_db() -> str:
    from finq_core.migrate import upgrade

    upgrade(os.environ["DATABASE_URL"])
    return os.environ["DATABASE_URL"]


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """TEST_DATABASE_URL, or a throwaway cluster started from the installed binaries."""
    if os.environ.get("TEST_DATABASE_URL"):
        yield os.environ["TEST_DATABASE_URL"]
        return
    try:
        with throwaway_postgres(_SESSION_DIR) as url:
            yield url
    except PostgresNotFoundError as e:
        pytest.fail(f"{e}, or set TEST_DATABASE_URL")


@pytest.fixture(scope="session")
def worker_log() -> Path:
    """Where the `celery_worker` fixture's worker writes its log."""
    return _SESSION_DIR / "worker.log"


@pytest.fixture(scope="session")
def celery_worker(
    redis_server: str, migrated_db: str, worker_log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """A real Celery worker (2 processes) started by the same command as the stack's."""
    log = open(worker_log, "wb")  # noqa: SIM115
    env = {
        **os.environ,
        "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
        "WORKER_CONCURRENCY": "2",
        "WORKER_NAME": "testworker@%h",
        "LOG_LEVEL": "INFO",
        "WORKER_METRICS_PORT": str(free_port()),
        "WORKER_METRICS_ADDRESS": "127.0.0.1",
        # finq-service's default is a folder in /tmp that outlives the worker.
        "PROMETHEUS_MULTIPROC_DIR": str(_SESSION_DIR / "metrics-testworker"),
    }
    proc = subprocess.Popen(
        [str(ROOT / "deploy" / "finq-service"), "worker"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    import redis

    client = redis.Redis.from_url(redis_server)
    wait_until(
        lambda: any(
            c.get("cmd") == "brpop" for c in cast(list[dict[str, str]], client.client_list())
        ),
        60,
        0.2,
        what="the Celery worker to consume",
    )
    yield proc
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    log.close()


class LocalStack:
    """A running local stack started by scripts/localstack.py (the `make run` script)."""

    def __init__(self, run_dir: Path, info: dict[str, str]) -> None:
        self.run_dir = run_dir
        self.info = info
        # nginx's public address: HTTPS when the stack was given a certificate (TLS_CERT_FILE).
        self.url = (
            f"https://127.0.0.1:{info['HTTPS_PORT']}"
            if "HTTPS_PORT" in info
            else f"http://127.0.0.1:{info['HTTP_PORT']}"
        )
        self.admin = (info["ADMIN_USERNAME"], info["ADMIN_PASSWORD"])
        self.flower_auth = cast(tuple[str, str], tuple(info["FLOWER_BASIC_AUTH"].split(":", 1)))

    def supervisorctl(self, *args: str) -> str:
        out = subprocess.run(
            [
                str(VENV_BIN / "supervisorctl"),
                "-c",
                str(self.run_dir / "supervisor" / "supervisord.conf"),
                *args,
            ],
            capture_output=True,
            text=True,
        )
        return out.stdout

    def pid_of(self, program: str) -> int:
        return int(self.supervisorctl("pid", program).strip())


def start_stack(run_dir: Path, *extra: str, env: dict[str, str] | None = None) -> LocalStack:
    import json

    base_env = {k: v for k, v in os.environ.items() if k not in STACK_ENV_DROP}
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "localstack.py"),
            "up",
            "--run-dir",
            str(run_dir),
            "--free-ports",
            *extra,
        ],
        check=True,
        env={**base_env, **(env or {})},
        stdout=subprocess.DEVNULL,
    )
    info = json.loads((run_dir / "stack.json").read_text())
    return LocalStack(run_dir, info)


def stop_stack(stack: LocalStack) -> None:
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "localstack.py"),
            "down",
            "--run-dir",
            str(stack.run_dir),
        ],
        check=False,
        stdout=subprocess.DEVNULL,
    )


@pytest.fixture(scope="session")
def stack() -> Iterator[LocalStack]:
    """One real local stack (3 API replicas, 2 workers) shared by the end-to-end tests."""
    run_dir = _SESSION_DIR / "stack"
    s = start_stack(
        run_dir,
        "--api-replicas",
        "3",
        "--worker-replicas",
        "2",
        env={
            "WORKER_CONCURRENCY": "2",
            "GUNICORN_WORKERS": "1",
            "RATE_LIMIT_ENABLED": "false",
            "DEFAULT_TASK_TIMEOUT": "20",
            # The admin queues 300 tasks at once (test_high_priority_overtakes_...).
            "QUOTA_QUEUED_TASKS": "1000",
            "SCHEDULE_MIN_INTERVAL": "1",  # schedules run every 2 s
        },
    )
    yield s
    stop_stack(s)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if exitstatus == 0:
        shutil.rmtree(_SESSION_DIR, ignore_errors=True)
    else:
        print(f"\nfinq test services' logs and data kept in {_SESSION_DIR}")
