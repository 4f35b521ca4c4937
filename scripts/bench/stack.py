"""The stack under test: start and stop, its workers, its database and its queues."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import redis
import sqlalchemy
from sqlalchemy.pool import NullPool

from .config import BLAS_ENV, FINAL, ROOT, SCRIPTS, VENV_BIN, pool_priority
from .cpu import process_role

_FINAL_SQL = "(" + ", ".join(f"'{status}'" for status in FINAL) + ")"


def worker_flags(env: dict[str, str]) -> list[str]:
    """The flags `deploy/finq-service worker` passes to `celery worker`, read from the script
    itself (with its ${VAR:-default} expanded from `env`), so the no-op workers of figure 1
    run exactly as finq's do."""
    text = (ROOT / "deploy" / "finq-service").read_text()
    m = re.search(r"exec celery -A \S+ worker((?:[^\n]*\\\n)*[^\n]*)", text)
    if m is None:
        raise RuntimeError("cannot find the worker command in deploy/finq-service")
    tokens = shlex.split(m.group(1).replace("\\\n", " "))

    def expand(token: str) -> str:
        return re.sub(
            r"\$\{(\w+)(?::-([^}]*))?\}", lambda v: env.get(v.group(1)) or v.group(2) or "", token
        )

    return [expand(t) for t in tokens if t not in ("$@", '"$@"')]


def count(reply: Any) -> int:
    """An integer reply of redis-py, whose synchronous client is typed as maybe awaitable."""
    return int(reply)


def queue_names(app: Any) -> list[str]:
    """Every queue of finq's Celery configuration (to purge and to measure depth)."""
    return [q.name for q in app.conf.task_queues]


class BenchStack:
    def __init__(
        self, run_dir: Path, api_replicas: int, max_workers: int, database_url: str | None = None
    ) -> None:
        self.run_dir = run_dir
        self.api_replicas = api_replicas
        self.max_workers = max_workers
        self.database_url = database_url  # None: the local stack's SQLite file
        self._db: sqlalchemy.Engine | None = None
        self.info: dict[str, str] = {}
        self.noop_procs: list[subprocess.Popen[bytes]] = []
        self._control: dict[int, Any] = {}
        self._queues: list[str] = []

    # start and stop
    def _localstack(
        self, *args: str, env: dict[str, str] | None = None, check: bool = True
    ) -> None:
        subprocess.run(
            [sys.executable, str(SCRIPTS / "localstack.py"), *args, "--run-dir", str(self.run_dir)],
            check=check,
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )

    def up(self) -> None:
        if (self.run_dir / "supervisor" / "supervisord.pid").exists():
            self._localstack("down", check=False)  # a previous bench that was killed
        shutil.rmtree(self.run_dir, ignore_errors=True)
        env = {
            **os.environ,
            "RATE_LIMIT_ENABLED": "false",
            "QUOTA_QUEUED_TASKS": "1000000",  # batches of thousands queued at once
            "QUOTA_RUNNING_TASKS": "100000",  # one account fills every worker
            "NGINX_RATE_PER_IP": os.environ.get("NGINX_RATE_PER_IP", "100000r/s"),
        }
        for k in ("REDIS_URL", "DATABASE_URL", "HTTP_PORT", "REDIS_PORT", "FLOWER_PORT"):
            env.pop(k, None)
        if self.database_url:
            env["DATABASE_URL"] = self.database_url
        self._localstack(
            "up",
            "--free-ports",
            "--api-replicas",
            str(self.api_replicas),
            "--worker-replicas",
            str(self.max_workers),
            "--timeout",
            "180",
            env=env,
        )
        self.info = json.loads((self.run_dir / "stack.json").read_text())

    def down(self) -> None:
        self.stop_noop_workers()
        for app in self._control.values():
            app.close()
        if self._db is not None:
            self._db.dispose()
        if self.info or (self.run_dir / "supervisor" / "supervisord.pid").exists():
            self._localstack("down", check=False)

    @property
    def port(self) -> int:
        return int(self.info["HTTP_PORT"])

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def redis(self, db: int = 0) -> redis.Redis:
        return redis.Redis(port=int(self.info["REDIS_PORT"]), db=db, socket_timeout=10)

    def supervisorctl(self, *args: str) -> str:
        return subprocess.run(
            [
                str(VENV_BIN / "supervisorctl"),
                "-c",
                str(self.run_dir / "supervisor" / "supervisord.conf"),
                *args,
            ],
            capture_output=True,
            text=True,
            check=False,
        ).stdout

    def roots(self) -> list[int]:
        pids = [p.pid for p in self.noop_procs if p.poll() is None]
        with contextlib.suppress(OSError, ValueError):
            pids.append(int((self.run_dir / "supervisor" / "supervisord.pid").read_text()))
        return pids

    def pids_of(self, group: str) -> list[int]:
        pids = []
        for pid in self.roots():
            with contextlib.suppress(psutil.Error):
                for proc in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]:
                    if process_role(proc) == group:
                        pids.append(proc.pid)
        return pids

    # workers
    def online(self, db: int) -> set[str]:
        """Hostnames of the Celery workers answering a ping on database `db` (counting
        Redis clients is not enough: Celery opens several blocking connections per worker)."""
        if db not in self._control:
            self._control[db] = noop_module(self.noop_broker).make_app(
                f"redis://127.0.0.1:{self.info['REDIS_PORT']}/{db}"
            )
        replies = self._control[db].control.ping(timeout=1.0) or []
        return {name for reply in replies for name in reply}

    def wait_consumers(self, db: int, want: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while len(have := self.online(db)) != want:
            if time.monotonic() > deadline:
                raise RuntimeError(f"expected {want} workers on db {db}, have {sorted(have)}")
            time.sleep(0.3)

    def set_workers(self, n: int) -> None:
        """Exactly workers 1..n running (supervisorctl), and consuming."""
        names = [f"workers:worker-{i}" for i in range(1, self.max_workers + 1)]
        stop = names[n:]
        if stop:
            self.supervisorctl("stop", *stop)
        if n:
            self.supervisorctl("start", *names[:n])
        self.wait_consumers(0, n)
        time.sleep(1.0)  # pool processes forked and idle

    @property
    def worker_nice(self) -> int:
        """The niceness the stack's workers were started with (WORKER_NICE)."""
        return int(self.info.get("WORKER_NICE", "10"))

    @property
    def pool_priority(self) -> str:
        """The priority the stack's pool runs at: "idle" (WORKER_SCHED_IDLE) or "nice N"."""
        return pool_priority(self.info)

    def set_pool_priority(self, priority: str) -> list[str]:
        """Every worker process at `priority`: "nice N" (main and pool, normal policy; lowering
        a niceness needs root or CAP_SYS_NICE) or "idle" (the main at WORKER_NICE, the pool
        under SCHED_IDLE, as the stack starts them); what each pool process reads back."""
        idle = priority == "idle"
        nice = self.worker_nice if idle else int(priority.removeprefix("nice "))
        pool = set(self.pids_of("worker (pool)"))
        seen = []
        for pid in self.pids_of("worker (main)") + sorted(pool):
            with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError):
                policy = os.SCHED_IDLE if idle and pid in pool else os.SCHED_OTHER
                os.sched_setscheduler(pid, policy, os.sched_param(0))
                psutil.Process(pid).nice(nice)
                if pid in pool:
                    idle_now = os.sched_getscheduler(pid) == os.SCHED_IDLE
                    seen.append("idle" if idle_now else f"nice {psutil.Process(pid).nice()}")
        return seen

    def start_noop_workers(self, replicas: int) -> None:
        env = {
            **os.environ,
            **BLAS_ENV,
            "BENCH_BROKER_URL": self.noop_broker,
            "PYTHONPATH": str(SCRIPTS),
            "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}",
        }
        for key in ("REDIS_URL", "DATABASE_URL"):
            env[key] = self.info[key]
        for k in ("DEFAULT_TASK_TIMEOUT", "LOG_LEVEL", "WORKER_CONCURRENCY"):
            if k in self.info:
                env[k] = self.info[k]
        self.redis(1).flushdb()
        logs = self.run_dir / "logs"
        for i in range(1, replicas + 1):
            out = open(logs / f"noop-{i}.log", "wb")  # noqa: SIM115 - handed to the child
            flags = worker_flags({**env, "WORKER_NAME": f"noop{i}@%h"})
            self.noop_procs.append(
                subprocess.Popen(
                    [str(VENV_BIN / "celery"), "-A", "bench_noop", "worker", *flags],
                    cwd=SCRIPTS,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
            out.close()
        self.wait_consumers(1, replicas)
        time.sleep(1.0)

    def stop_noop_workers(self) -> None:
        for proc in self.noop_procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.noop_procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.noop_procs.clear()

    @property
    def noop_broker(self) -> str:
        return f"redis://127.0.0.1:{self.info['REDIS_PORT']}/1"

    # the database (read only: the bench never writes a record)
    def sql(self, query: str, **params: Any) -> list[Any]:
        if self._db is None:
            self._db = sqlalchemy.create_engine(self.info["DATABASE_URL"], poolclass=NullPool)
        with self._db.connect() as conn:
            return list(conn.execute(sqlalchemy.text(query), params).all())

    @property
    def _order(self) -> str:
        """The column that orders records by insertion: SQLite's rowid; on PostgreSQL the
        creation time (microseconds)."""
        return "rowid" if self.info["DATABASE_URL"].startswith("sqlite") else "created_at"

    def watermark(self) -> Any:
        """A mark of the records created so far (compared with `_order`)."""
        mark = self.sql(f"SELECT max({self._order}) FROM tasks")[0][0]
        return 0 if mark is None and self._order == "rowid" else mark

    def _after(self, mark: Any) -> str:
        """A condition: created after `mark` (every record when there is none)."""
        return "true" if mark is None else f"{self._order} > :mark"

    def wait_done(self, after: Any, expected: int, timeout: float) -> int:
        """Wait until `expected` tasks created after the mark `after` are final."""
        deadline = time.monotonic() + timeout
        done = 0
        while time.monotonic() < deadline:
            done = int(
                self.sql(
                    f"SELECT count(*) FROM tasks WHERE {self._after(after)} "
                    f"AND status IN {_FINAL_SQL}",
                    mark=after,
                )[0][0]
            )
            if done >= expected:
                return done
            time.sleep(0.2)
        return done

    def rows(self, after: Any) -> list[dict[str, Any]]:
        out = []
        for type_, status, created, started, finished in self.sql(
            "SELECT type, status, created_at, started_at, finished_at FROM tasks WHERE "
            + self._after(after),
            mark=after,
        ):
            out.append(
                {
                    "type": type_,
                    "status": status,
                    "created": _ts(created),
                    "started": _ts(started),
                    "finished": _ts(finished),
                }
            )
        return out

    def _queue_keys(self) -> list[bytes]:
        """The Redis lists holding finq's queues (kombu adds priority-suffixed ones)."""
        r = self.redis()
        if not self._queues:
            self._queues = queue_names(noop_module(self.noop_broker).make_app(self.noop_broker))
        return [
            key
            for q in self._queues
            for key in r.scan_iter(match=f"{q}*")
            if r.type(key) == b"list"
        ]

    def queue_depth(self, queue: str = "") -> int:
        """Messages waiting in every queue, or in those named `queue`."""
        r = self.redis()
        keys = [k for k in self._queue_keys() if k.startswith(queue.encode())]
        return sum(count(r.llen(key)) for key in keys)

    def purge_queues(self) -> int:
        r = self.redis()
        keys = self._queue_keys()
        n = sum(count(r.llen(k)) for k in keys)
        if keys:
            r.delete(*keys)
        return n

    def wait_quiet(self, still: float = 2.0, timeout: float = 120) -> None:
        """Until no record was created for `still` seconds (requests the client gave up on
        may still be running in the API)."""
        deadline = time.monotonic() + timeout
        last, since = self.watermark(), time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - since < still:
            time.sleep(0.25)
            now = self.watermark()
            if now != last:
                last, since = now, time.monotonic()

    def in_flight(self) -> int:
        """Messages queued or taken but not acknowledged (acks late: running), in every queue
        including follow-up work a task leaves behind (e.g. drawing its chart)."""
        return self.queue_depth() + count(self.redis().hlen("unacked"))

    def wait_drained(self, timeout: float = 600) -> float:
        """Until no message is queued or running; returns the time (epoch) it happened."""
        deadline = time.monotonic() + timeout
        while self.in_flight():
            if time.monotonic() > deadline:
                raise RuntimeError("the queues did not drain")
            time.sleep(0.2)
        return time.time()

    def wait_idle(self, timeout: float = 600) -> None:
        """No message queued or running and no record unfinished (except purged ones)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            busy = int(
                self.sql(f"SELECT count(*) FROM tasks WHERE status NOT IN {_FINAL_SQL}")[0][0]
            )
            if busy == 0 and self.in_flight() == 0:
                return
            time.sleep(0.3)
        raise RuntimeError("the stack did not become idle")


def _ts(value: str | datetime | None) -> float | None:
    """A timestamp read back as SQLite's text or PostgreSQL's datetime (UTC)."""
    if value is None:
        return None
    dt = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def noop_module(broker_url: str) -> Any:
    """scripts/bench_noop.py, imported once (it reads BENCH_BROKER_URL at import)."""
    if "bench_noop" not in sys.modules:
        os.environ["BENCH_BROKER_URL"] = broker_url
    import bench_noop

    return bench_noop
