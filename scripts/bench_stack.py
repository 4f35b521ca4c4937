#!/usr/bin/env python3
"""The full-stack benchmark (`make bench`): one fresh local stack, five figures, one table.

Starts its own stack (scripts/localstack.py, free ports, runtime folder .run/bench/stack, rate
limits off, nginx's per-address limit raised: every request comes from 127.0.0.1), measures,
and always stops it. All figures come from the same run:

  1. bare ceiling: no-op Celery tasks (scripts/bench_noop.py: finq's Celery configuration,
     workers started with finq-service's flags) sent straight into the stack's redis-server;
  2. the full stack with a no-op-sized task (a 1-year loan) submitted over HTTP through nginx
     with a bearer token, recorded in the database and completed by the workers; ratio to (1);
  3. the CPU-bound mix of loadtest/locustfile.py, sized for this machine like the load test
     (MIX_SCALE, default auto): completed tasks/s and efficiency = (sum of each task's CPU
     time measured alone on one core) / (wall time x cores);
  4. submit latency through nginx at a fixed offered rate (open loop), workers idle and busy;
  5. scaling: the mix with 1, 2, 3, 4 worker replicas (chart: docs/scaling.png).

Throughput is a batch: N tasks submitted as fast as the stack accepts them (a fixed number of
connections), rate = N / (first submit .. last `finished_at`), so submitting and running share
the machine as they do in production. Per-process CPU is sampled around every phase (what
limits each figure), and with py-spy installed the hottest API and worker processes are
profiled. Prints the table and writes it, with method and findings, to docs/performance.md
(section "Full stack (make bench)") and docs/scaling.png.

Options: --quick (small batches, for a smoke run), --repeats N, --no-docs; the stack's
environment passes through (GUNICORN_WORKERS, WORKER_CONCURRENCY, API_REPLICAS, LOG_LEVEL...).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import math
import os
import platform
import random
import re
import shlex
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import redis

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"
VENV_BIN = Path(sys.executable).parent
BENCH_DIR = ROOT / ".run" / "bench"
DOC = ROOT / "docs" / "performance.md"
CHART = ROOT / "docs" / "scaling.png"
SECTION = "## Full stack (make bench)"
BEGIN, END = "<!-- make bench: results begin -->", "<!-- make bench: results end -->"
FINAL = ("SUCCESS", "FAILED", "CANCELLED")
LIGHT_TYPE = "loan_amortization"
LIGHT_PARAMS = {"principal": 1000, "annual_rate": 0.05, "years": 1}
BLAS_ENV = {
    v: "1"
    for v in (
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "MKL_NUM_THREADS",
        "NUMEXPR_NUM_THREADS",
        "VECLIB_MAXIMUM_THREADS",
    )
}
TARGETS = {
    "mix_tasks_per_sec": 12.0,
    "efficiency": 0.85,
    "light_ratio": 0.5,
    "submit_p99_ms": 50.0,
    "offered_rate": 200.0,
}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def cores() -> int:
    return len(os.sched_getaffinity(0))


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


def queue_names(app: Any) -> list[str]:
    """Every queue of finq's Celery configuration (to purge and to measure depth)."""
    return [q.name for q in app.conf.task_queues]


# ---------------------------------------------------------------------------------------------
# Per-process CPU: what each part of the stack consumed during a phase.
def _group(proc: psutil.Process) -> str | None:
    """The role of a process of ours, from its command line; None for a stranger."""
    try:
        if proc.pid == os.getpid():
            return "client (bench)"
        cmd = " ".join(proc.cmdline())
        name = proc.name()
        parent = proc.parent()
        parent_cmd = " ".join(parent.cmdline()) if parent else ""
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None
    if "nginx" in name:
        return "nginx"
    if "redis-server" in cmd:
        return "redis"
    if "gunicorn" in cmd:
        return "api"
    if "bench_noop" in cmd:
        return "noop worker (pool)" if "bench_noop" in parent_cmd else "noop worker (main)"
    if "celery" in cmd and " worker" in cmd:
        is_pool = "celery" in parent_cmd and " worker" in parent_cmd
        return "worker (pool)" if is_pool else "worker (main)"
    if "celery" in cmd and " beat" in cmd:
        return "beat"
    if "flower" in cmd:
        return "flower"
    if "supervisord" in cmd:
        return "supervisor"
    if "py-spy" in cmd:
        return "profiler"
    return None


def _proc_cpu(proc: psutil.Process) -> float:
    try:
        t = proc.cpu_times()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return 0.0
    return float(t.user + t.system)


@dataclass
class CpuUse:
    """CPU seconds by role over a phase, and the whole machine's for comparison."""

    wall: float
    by_group: dict[str, float]
    machine_busy: float  # CPU seconds used by everything on the machine
    steal: float

    @property
    def ours(self) -> float:
        return sum(v for k, v in self.by_group.items() if k != "profiler")

    @property
    def others(self) -> float:
        return max(0.0, self.machine_busy - self.ours - self.by_group.get("profiler", 0.0))

    def shares(self) -> str:
        """`api 41%, worker (pool) 35%, ...` of the machine's capacity (wall x cores)."""
        cap = self.wall * cores()
        parts = [
            f"{k} {v / cap:.0%}"
            for k, v in sorted(self.by_group.items(), key=lambda kv: -kv[1])
            if v / cap >= 0.01
        ]
        parts.append(f"other processes {self.others / cap:.0%}")
        if self.steal / cap >= 0.01:
            parts.append(f"stolen by the hypervisor {self.steal / cap:.0%}")
        return ", ".join(parts)


class CpuMeter:
    """Samples every process of ours (the stack's tree, extra workers, this process)."""

    def __init__(self, roots: Callable[[], list[int]]) -> None:
        self.roots = roots

    def _ours(self) -> dict[int, tuple[str, float]]:
        seen: dict[int, tuple[str, float]] = {}
        procs: list[psutil.Process] = [psutil.Process()]
        for pid in self.roots():
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(pid)
                procs += [root, *root.children(recursive=True)]
        for proc in procs:
            group = _group(proc)
            if group is not None and proc.pid not in seen:
                seen[proc.pid] = (group, _proc_cpu(proc))
        return seen

    @contextlib.contextmanager
    def measure(self) -> Iterator[dict[str, CpuUse]]:
        out: dict[str, CpuUse] = {}
        before, m0, w0 = self._ours(), psutil.cpu_times(), time.perf_counter()
        yield out
        after, m1, w1 = self._ours(), psutil.cpu_times(), time.perf_counter()
        groups: dict[str, float] = defaultdict(float)
        for pid, (group, cpu) in after.items():
            groups[group] += cpu - (before[pid][1] if pid in before else 0.0)

        def busy(t: Any) -> float:
            return float(sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "steal", 0.0))

        out["cpu"] = CpuUse(
            w1 - w0,
            dict(groups),
            busy(m1) - busy(m0),
            getattr(m1, "steal", 0.0) - getattr(m0, "steal", 0.0),
        )


# ---------------------------------------------------------------------------------------------
# A minimal HTTP/1.1 keep-alive client: the load generator must not be what we measure
# (httpx costs ~10x the CPU per request, which on 2 cores is taken from the stack).
class HttpConn:
    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: bytes = b""
    ) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        try:
            self.writer.write(
                f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Content-Length: {len(body)}\r\n".encode()
                + headers
                + b"\r\n"
                + body
            )
            head = await self.reader.readuntil(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            status = int(lines[0].split()[1])
            hdrs = {}
            for line in lines[1:]:
                if b":" in line:
                    k, v = line.split(b":", 1)
                    hdrs[k.strip().lower()] = v.strip().lower()
            if b"content-length" in hdrs:
                data = await self.reader.readexactly(int(hdrs[b"content-length"]))
            elif hdrs.get(b"transfer-encoding") == b"chunked":
                data = await self._chunked()
            else:
                data = await self.reader.read()
                self.close()
            if hdrs.get(b"connection") == b"close":
                self.close()
            return status, data
        except BaseException:
            self.close()
            raise

    async def _chunked(self) -> bytes:
        assert self.reader is not None
        parts = []
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await self.reader.readuntil(b"\r\n")
                return b"".join(parts)
            parts.append((await self.reader.readexactly(size + 2))[:-2])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def login(base: str, username: str, password: str) -> str:
    data = urllib.parse.urlencode({"username": username, "password": password}).encode()
    with urllib.request.urlopen(f"{base}/api/v1/auth/token", data=data, timeout=30) as resp:
        token: str = json.load(resp)["access_token"]
    return token


def auth_headers(token: str) -> bytes:
    return f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n".encode()


async def submit_closed(
    port: int, token: str, bodies: list[bytes], concurrency: int
) -> tuple[float, Counter[int]]:
    """POST every body over `concurrency` keep-alive connections, as fast as answered.
    Returns the time of the first send and the count of answers by status."""
    statuses: Counter[int] = Counter()
    headers = auth_headers(token)
    pending = iter(bodies)
    started = time.time()

    async def lane() -> None:
        conn = HttpConn(port)
        for body in pending:
            try:
                status, _ = await conn.request("POST", "/api/v1/tasks", body, headers)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                status = 0
            statuses[status] += 1
        conn.close()

    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return started, statuses


async def submit_open(
    port: int,
    token: str,
    body: bytes,
    rate: float,
    seconds: float,
    warmup: float,
    timeout: float = 10.0,
) -> tuple[list[float], Counter[int], int]:
    """Open loop: request i leaves at t0 + i/rate whatever the answers before it; latency is
    counted from that scheduled time (no coordinated omission). Requests in the first `warmup`
    seconds are not counted; one unanswered after `timeout` s counts as status -1 (and its
    latency as the timeout). Returns latencies (ms), statuses, connections opened."""
    headers = auth_headers(token)
    idle: list[HttpConn] = []
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    opened = 0

    async def one(at: float, counted: bool) -> None:
        nonlocal opened
        if idle:
            conn = idle.pop()
        else:
            conn = HttpConn(port)
            opened += 1
        try:
            status, _ = await asyncio.wait_for(
                conn.request("POST", "/api/v1/tasks", body, headers), timeout
            )
        except TimeoutError:
            status = -1
            conn.close()
        except (OSError, asyncio.IncompleteReadError, ValueError):
            status = 0
        else:
            idle.append(conn)
        if counted:
            statuses[status] += 1
            latencies.append((time.perf_counter() - at) * 1000.0)

    t0 = time.perf_counter() + 0.05
    total = int((seconds + warmup) * rate)
    running = []
    for i in range(total):
        at = t0 + i / rate
        delay = at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        running.append(asyncio.create_task(one(at, i >= warmup * rate)))
    await asyncio.gather(*running)
    for conn in idle:
        conn.close()
    return latencies, statuses, opened


def pct(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    s = sorted(values)
    pos = (len(s) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


# ---------------------------------------------------------------------------------------------
# The stack under test.
class BenchStack:
    def __init__(self, run_dir: Path, api_replicas: int, max_workers: int) -> None:
        self.run_dir = run_dir
        self.api_replicas = api_replicas
        self.max_workers = max_workers
        self.info: dict[str, str] = {}
        self.noop_procs: list[subprocess.Popen[bytes]] = []
        # Records below this rowid were purged from the queues on purpose (figure 4): ignored.
        self.floor = 0
        self._control: dict[int, Any] = {}
        self._queues: list[str] = []

    # lifecycle
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
            "NGINX_RATE_PER_IP": os.environ.get("NGINX_RATE_PER_IP", "100000r/s"),
        }
        for k in ("REDIS_URL", "DATABASE_URL", "HTTP_PORT", "REDIS_PORT", "FLOWER_PORT"):
            env.pop(k, None)
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
        if self.info or (self.run_dir / "supervisor" / "supervisord.pid").exists():
            self._localstack("down", check=False)

    @property
    def port(self) -> int:
        return int(self.info["HTTP_PORT"])

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def db_path(self) -> Path:
        return Path(self.info["DATABASE_URL"].split("///", 1)[1])

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
                    if _group(proc) == group:
                        pids.append(proc.pid)
        return pids

    # workers
    def online(self, db: int) -> set[str]:
        """Hostnames of the Celery workers answering a ping on database `db` (counting
        Redis clients is not enough: Celery opens several blocking connections per worker)."""
        if db not in self._control:
            self._control[db] = _bench_noop(self.noop_broker).make_app(
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

    def start_noop_workers(self, replicas: int) -> None:
        env = {
            **os.environ,
            **BLAS_ENV,
            "BENCH_BROKER_URL": self.noop_broker,
            "PYTHONPATH": f"{SCRIPTS}:{ROOT / 'lib'}",
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
    def sql(self, query: str, *args: Any) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(self.db_path, timeout=30)
        try:
            return conn.execute(query, args).fetchall()
        finally:
            conn.close()

    def watermark(self) -> int:
        return int(self.sql("SELECT coalesce(max(rowid), 0) FROM tasks")[0][0])

    def wait_done(self, after: int, expected: int, timeout: float) -> int:
        """Wait until `expected` tasks created after rowid `after` are final."""
        deadline = time.monotonic() + timeout
        done = 0
        while time.monotonic() < deadline:
            done = int(
                self.sql(
                    "SELECT count(*) FROM tasks WHERE rowid > ? AND status IN (?, ?, ?)",
                    after,
                    *FINAL,
                )[0][0]
            )
            if done >= expected:
                return done
            time.sleep(0.2)
        return done

    def rows(self, after: int) -> list[dict[str, Any]]:
        out = []
        for type_, status, created, started, finished in self.sql(
            "SELECT type, status, created_at, started_at, finished_at FROM tasks WHERE rowid > ?",
            after,
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
            self._queues = queue_names(_bench_noop(self.noop_broker).make_app(self.noop_broker))
        return [
            key
            for q in self._queues
            for key in r.scan_iter(match=f"{q}*")
            if r.type(key) == b"list"
        ]

    def queue_depth(self) -> int:
        r = self.redis()
        return sum(int(r.llen(key)) for key in self._queue_keys())

    def purge_queues(self) -> int:
        r = self.redis()
        keys = self._queue_keys()
        n = sum(int(r.llen(k)) for k in keys)
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
        return self.queue_depth() + int(self.redis().hlen("unacked"))

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
                self.sql(
                    "SELECT count(*) FROM tasks WHERE rowid > ? AND status NOT IN (?, ?, ?)",
                    self.floor,
                    *FINAL,
                )[0][0]
            )
            if busy == 0 and self.in_flight() == 0:
                return
            time.sleep(0.3)
        raise RuntimeError("the stack did not become idle")


def _ts(value: str | None) -> float | None:
    if value is None:
        return None
    dt = datetime.fromisoformat(value)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


# ---------------------------------------------------------------------------------------------
# Measurements.
@dataclass
class Batch:
    """One batch of tasks submitted over HTTP and run to the end."""

    n: int
    accepted: int
    errors: dict[int, int]
    wall: float
    statuses: dict[str, int]
    cpu: CpuUse
    latencies_ms: list[float] = field(repr=False, default_factory=list)
    by_type: dict[str, int] = field(default_factory=dict)
    drained: float = math.inf  # first submit .. no message left (deferred work included)
    # (type, started_at, finished_at) of every task that succeeded, epoch seconds.
    spans: list[tuple[str, float, float]] = field(repr=False, default_factory=list)

    @property
    def rate(self) -> float:
        return self.statuses.get("SUCCESS", 0) / self.wall if self.wall > 0 else 0.0

    @property
    def drained_rate(self) -> float:
        return self.statuses.get("SUCCESS", 0) / self.drained if self.drained > 0 else 0.0

    @property
    def failed(self) -> int:
        return sum(v for k, v in self.statuses.items() if k != "SUCCESS")

    @property
    def lost(self) -> int:
        return self.accepted - sum(self.statuses.values())


def run_batch(
    stack: BenchStack,
    meter: CpuMeter,
    token: str,
    bodies: list[bytes],
    concurrency: int,
    timeout: float,
) -> Batch:
    stack.wait_idle()
    mark = stack.watermark()
    with meter.measure() as m:
        started, statuses = asyncio.run(submit_closed(stack.port, token, bodies, concurrency))
        accepted = statuses.get(202, 0)
        stack.wait_done(mark, accepted, timeout)
        drained = stack.wait_drained(timeout)  # CPU counted until the follow-up work is done
    rows = stack.rows(mark)
    finished = [r["finished"] for r in rows if r["finished"] is not None]
    wall = (max(finished) - started) if finished else math.inf
    return Batch(
        n=len(bodies),
        accepted=accepted,
        errors={k: v for k, v in statuses.items() if k != 202},
        wall=wall,
        statuses=dict(Counter(r["status"] for r in rows)),
        cpu=m["cpu"],
        latencies_ms=[(r["finished"] - r["created"]) * 1000 for r in rows if r["finished"]],
        by_type=dict(Counter(r["type"] for r in rows)),
        drained=drained - started,
        spans=[
            (r["type"], r["started"], r["finished"])
            for r in rows
            if r["status"] == "SUCCESS" and r["started"] and r["finished"]
        ],
    )


def steady_efficiency(
    spans: list[tuple[str, float, float]], alone_s: dict[str, float], slots: int, n_cores: int
) -> float | None:
    """Efficiency while every worker process has a task: from the first moment `slots` tasks
    run at once to the last start. Outside that window the cores idle for want of work, not
    for what the platform costs: a batch opens with submissions only and ends with its last
    long tasks on fewer processes than cores (a Monte Carlo run alone on one core), which a
    sustained load (the load test, production) never sees. None when the window is under a
    second.

    Each task is credited with the share of its CPU alone that it did inside the window, as a
    fair scheduler hands it out: at any moment a running task advances at min(1, cores /
    tasks running), so a task that ends in the drain, where it has a core to itself, did less
    of its work inside the window than its share of wall time there (crediting by wall time
    reads ~2 points high on the bench's mix)."""
    edges = sorted([(s, 1) for _, s, _ in spans] + [(f, -1) for _, _, f in spans])
    # Piecewise-constant speed of one task: (start, end, speed) between consecutive edges.
    pieces: list[tuple[float, float, float]] = []
    running, w0 = 0, None
    for (at, step), (nxt, _) in zip(edges, [*edges[1:], (math.inf, 0)], strict=True):
        running += step  # at a tie the end sorts first: a slot freed and refilled is busy
        if w0 is None and running >= slots:
            w0 = at
        if nxt > at and running > 0:
            pieces.append((at, nxt, min(1.0, n_cores / running)))
    w1 = max((s for _, s, _ in spans), default=None)
    if w0 is None or w1 is None or w1 - w0 < 1.0:
        return None
    starts = [p[0] for p in pieces]

    def advance(lo: float, hi: float) -> float:
        """Work one running task does between lo and hi (in seconds of a whole core)."""
        done = 0.0
        for start, end, speed in pieces[max(0, bisect.bisect_right(starts, lo) - 1) :]:
            if start >= hi:
                break
            done += speed * max(0.0, min(end, hi) - max(start, lo))
        return done

    credit = 0.0
    for type_, s, f in spans:
        if f <= s:
            credit += alone_s[type_] if w0 <= s < w1 else 0.0
            continue
        inside = advance(max(s, w0), min(f, w1)) if min(f, w1) > max(s, w0) else 0.0
        if inside:
            credit += alone_s[type_] * inside / advance(s, f)
    return credit / ((w1 - w0) * n_cores)


_IMPORTED_NOOP: list[Any] = []


def _bench_noop(broker_url: str) -> Any:
    """scripts/bench_noop.py, imported once (it reads BENCH_BROKER_URL at import)."""
    if not _IMPORTED_NOOP:
        os.environ["BENCH_BROKER_URL"] = broker_url
        sys.path.insert(0, str(SCRIPTS))
        import bench_noop

        _IMPORTED_NOOP.append(bench_noop)
    return _IMPORTED_NOOP[0]


def measure_noop(
    stack: BenchStack, meter: CpuMeter, n: int, timeout: float
) -> tuple[float, CpuUse]:
    """Send n no-op tasks through Celery's own producer, wait for n INCRs."""
    bench_noop = _bench_noop(stack.noop_broker)
    app = bench_noop.make_app(stack.noop_broker)
    counter = stack.redis(1)
    counter.delete(bench_noop.COUNTER_KEY)
    with meter.measure() as m:
        t0 = time.perf_counter()
        with app.producer_or_acquire() as producer:
            for _ in range(n):
                app.send_task(bench_noop.NOOP_TASK, queue="normal", producer=producer)
        deadline = time.monotonic() + timeout
        while int(counter.get(bench_noop.COUNTER_KEY) or 0) < n:
            if time.monotonic() > deadline:
                raise RuntimeError("no-op tasks did not finish")
            time.sleep(0.01)
        wall = time.perf_counter() - t0
    app.close()
    return n / wall, m["cpu"]


def calibrate(cpu: int | None = None, scale: str = "1") -> dict[str, Any]:
    """CPU per task of the mix, sized by `scale` (MIX_SCALE, as the load test sizes it);
    without charts: they are drawn only when someone asks."""
    cmd = [
        sys.executable,
        str(ROOT / "loadtest" / "calibrate.py"),
        "--json",
        "--no-charts",
        "--scale",
        scale,
    ]
    if cpu is not None:
        cmd += ["--cpu", str(cpu)]
    out = subprocess.run(
        cmd, check=True, capture_output=True, text=True, env={**os.environ, **BLAS_ENV}, cwd=ROOT
    ).stdout
    result: dict[str, Any] = json.loads(out)
    return result


def calibrate_parallel(scale: str) -> list[dict[str, Any]]:
    """One calibration per core at the same time: what running side by side costs the
    calculations themselves (shared caches, memory bandwidth, frequency)."""
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "loadtest" / "calibrate.py"),
                "--json",
                "--no-charts",
                "--scale",
                scale,
                "--cpu",
                str(c),
            ],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, **BLAS_ENV},
            cwd=ROOT,
        )
        for c in sorted(os.sched_getaffinity(0))
    ]
    return [json.loads(p.communicate()[0]) for p in procs]


def mix_bodies(rows: list[dict[str, Any]], n: int, seed: int = 7) -> tuple[list[bytes], float]:
    """n submissions in the mix's proportions (largest remainder), shuffled; and the sum of
    their CPU times measured alone (seconds)."""
    usable = [r for r in rows if r["cpu_ms"] is not None]
    total_w = sum(r["weight"] for r in usable)
    exact = [n * r["weight"] / total_w for r in usable]
    counts = [math.floor(x) for x in exact]
    for i in sorted(range(len(usable)), key=lambda i: counts[i] - exact[i])[: n - sum(counts)]:
        counts[i] += 1
    chosen = [r for r, c in zip(usable, counts, strict=True) for _ in range(c)]
    random.Random(seed).shuffle(chosen)
    bodies = [json.dumps({"type": r["type"], "params": r["params"]}).encode() for r in chosen]
    return bodies, sum(r["cpu_ms"] for r in chosen) / 1000.0


# ---------------------------------------------------------------------------------------------
# Profiles (py-spy, when installed): where the hottest processes spend their time.
def find_py_spy() -> str | None:
    return shutil.which("py-spy", path=f"{VENV_BIN}:{os.environ.get('PATH', '')}")


def hottest(stack: BenchStack, group: str, seconds: float = 1.5) -> int | None:
    pids = stack.pids_of(group)
    if not pids:
        return None
    procs = {pid: psutil.Process(pid) for pid in pids}
    first = {pid: _proc_cpu(p) for pid, p in procs.items()}
    time.sleep(seconds)
    return max(pids, key=lambda pid: _proc_cpu(procs[pid]) - first[pid])


def start_profiles(
    py_spy: str, pids: dict[str, int], seconds: int, out_dir: Path
) -> list[tuple[str, Path, subprocess.Popen[bytes]]]:
    out = []
    for label, pid in pids.items():
        path = out_dir / f"profile-{label.replace(' ', '_').strip('()')}-{pid}.txt"
        proc = subprocess.Popen(
            [
                py_spy,
                "record",
                "--pid",
                str(pid),
                "--rate",
                "100",
                "--full-filenames",
                "--nolineno",
                "--duration",
                str(seconds),
                "--format",
                "raw",
                "--nonblocking",
                "--output",
                str(path),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        out.append((label, path, proc))
    return out


# Leaf frames of threads that wait for work (thread pools, event loops): not load.
_IDLE = (
    "Condition.wait",
    "Runner.run (",
    "select (",
    "_wait_for_tstate_lock",
    "Event.wait",
    "Queue.get (",
    "poll (",
    "epoll",
)
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]*)(?::\d+)?\)$")


def _module(path: str) -> str:
    """A readable owner of a source file: a package name, a finq module, or a stdlib module."""
    p = path.replace("\\", "/")
    if "site-packages/" in p:
        return p.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    for pkg in ("finq_api", "finq_core", "finq_worker", "finq_engine"):
        if f"/{pkg}/" in p:
            return f"{pkg}.{p.split(f'/{pkg}/', 1)[1].removesuffix('.py').replace('/', '.')}"
    name = p.rsplit("/", 1)[-1].removesuffix(".py")
    parent = p.rsplit("/", 2)[-2] if p.count("/") >= 2 else ""
    return (
        f"{parent}.{name}"
        if parent and parent not in ("lib", "python3.11") and not parent.startswith("python3")
        else name
    )


def summarize_profile(path: Path, top: int = 8) -> dict[str, Any]:
    """Self time by module (where the CPU actually goes) and the heaviest finq/library
    functions including what they call."""
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    if not path.exists():
        return {"samples": 0}
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        frames = [f for f in stack.split(";") if f]
        if not frames or any(idle in frames[-1] for idle in _IDLE):
            continue
        total += count
        leaf = _FRAME.match(frames[-1])
        self_time[_module(leaf.group("file")) if leaf else frames[-1]] += count
        seen = set()
        for f in frames:
            m = _FRAME.match(f)
            if not m:
                continue
            key = f"{_module(m.group('file'))}:{m.group('func')}"
            if key not in seen:
                seen.add(key)
                inclusive[key] += count
    if not total:
        return {"samples": 0}
    # Frames every request or task goes through (servers, pools, the task tracer): not news.
    plumbing = (
        "threading",
        "runpy",
        "celery",
        "billiard",
        "gunicorn",
        "uvicorn",
        "asyncio",
        "bin",
        "starlette",
        "anyio",
        "click",
        "fastapi",
        "<frozen",
        "concurrent",
    )
    heavy = [
        (k, v)
        for k, v in inclusive.most_common(120)
        if k.split(":", 1)[0].split(".", 1)[0] not in plumbing
        and not k.split(":", 1)[0].startswith(plumbing)
        and v < 0.995 * total
    ][:top]
    return {
        "samples": total,
        "self": [(k, v / total) for k, v in self_time.most_common(top)],
        "inclusive": [(k, v / total) for k, v in heavy],
    }


# ---------------------------------------------------------------------------------------------
# Report: the table, the chart, the doc section.
def versions() -> dict[str, str]:
    import celery
    import fastapi
    import kombu
    import numpy
    import uvicorn

    def cmd_version(cmd: list[str], pattern: str) -> str:
        try:
            text = subprocess.run(cmd, capture_output=True, text=True, check=False)
        except OSError:
            return "?"
        m = re.search(pattern, text.stdout + text.stderr)
        return m.group(1) if m else "?"

    import gunicorn

    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": f"{cores()} cores, {cpu}",
        "python": platform.python_version(),
        "celery": celery.__version__,
        "kombu": kombu.__version__,
        "redis-server": cmd_version(["redis-server", "--version"], r"v=([\d.]+)"),
        "nginx": cmd_version([shutil.which("nginx") or "/usr/sbin/nginx", "-v"], r"nginx/([\d.]+)"),
        "fastapi": fastapi.__version__,
        "uvicorn": uvicorn.__version__,
        "gunicorn": gunicorn.__version__,
        "numpy": numpy.__version__,
        "sqlite": sqlite3.sqlite_version,
    }


def draw_chart(
    points: list[tuple[int, float, float]], ideal: float, hw_ideal: float, path: Path, title: str
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    ax.plot(xs, ys, "o-", color="#1f77b4", lw=2, label="completed tasks/s (mix)")
    for x, y, eff in points:
        ax.annotate(
            f"{y:.1f}/s\neff {eff:.2f}",
            (x, y),
            textcoords="offset points",
            xytext=(0, 8),
            ha="center",
            fontsize=8,
        )
    ax.axhline(
        ideal,
        color="#2ca02c",
        ls="--",
        lw=1,
        label=f"ideal: {cores()} cores / mean task CPU = {ideal:.1f}/s",
    )
    ax.axhline(
        hw_ideal,
        color="#ff7f0e",
        ls=":",
        lw=1,
        label=f"calculations alone, side by side: {hw_ideal:.1f}/s",
    )
    ax.axhline(
        TARGETS["mix_tasks_per_sec"],
        color="#d62728",
        ls="-.",
        lw=1,
        label=f"target {TARGETS['mix_tasks_per_sec']:g}/s",
    )
    ax.set_xticks(xs)
    ax.set_xlabel(f"worker replicas (x {os.environ.get('WORKER_CONCURRENCY', '4')} processes)")
    ax.set_ylabel("completed tasks / s")
    ax.set_ylim(0, max([*ys, ideal, hw_ideal]) * 1.75)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper center", ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


METHOD = """\
`make bench` (scripts/bench_stack.py) starts a fresh local stack of its own (the `make run`
topology: nginx, 3 API replicas of `GUNICORN_WORKERS` processes, worker replicas of 4
processes, redis-server, SQLite) on free ports under `.run/bench/stack`, with the rate limits
off and nginx's per-address limit raised (every request comes from 127.0.0.1), measures, and
stops it. Everything below comes from one run; throughputs are medians of repeats.

- Throughput is measured on a batch: N tasks submitted as fast as the stack accepts them
  (16 keep-alive connections through nginx, bearer token, a minimal asyncio HTTP client so
  that the load generator costs little CPU), rate = tasks that ended SUCCESS / (first submit ..
  last `finished_at` in the database). Submitting and running share the machine, as in
  production. Work a task leaves behind is waited for too (every queue drained), and the CPU
  of every phase is sampled until then. No chart is drawn: nobody asks for one here (a chart
  is drawn when first requested, docs/api.md).
- (1) bare ceiling: `scripts/bench_noop.py` builds a Celery app with `make_celery` (finq's exact
  configuration) and a task that only INCRs a counter; as many workers as the stack has are
  started with finq-service's flags on another database of the stack's redis-server, and N
  messages are sent with Celery's producer (what the API does).
- (2) the same path a real task takes, with a task that costs nothing (a 1-year loan).
- (3) the Locust mix (`loadtest/locustfile.py`, one table), each row's CPU time measured
  in-process on one pinned core with BLAS threads 1 (`loadtest/calibrate.py`) in the same
  run; efficiency = sum of those CPU times / (wall time x cores). "Own-CPU efficiency" divides
  by the CPU our processes actually used instead, which other load on the machine does not
  distort. The calibration is also run on every core at once: the side-by-side figure is the
  best any scheduler could do on this hardware. "Steady state" is the same ratio over the part
  of the batch where every worker process has a task (from the first moment all of them run
  one to the last start), each task credited with its CPU alone in proportion to the part of
  its run inside that window, at the speed a fair scheduler gives it (a running task advances
  at min(1, cores / tasks running): one that ends in the drain with a core to itself did less
  of its work inside the window than its share of wall time there). It leaves out the opening
  (submissions only) and the drain (the last long tasks on fewer processes than cores), which a
  sustained load never has; on a simulated perfect platform it reads 1.00.
- (4) open loop: requests leave at fixed times whatever the answers (latency counted from the
  scheduled time), 1-year loans, first second discarded, an answer later than 5 s counted as
  an error; the workers are stopped (the submit path alone; the queued messages are purged
  afterwards) and the rate rises to the target in three steps. Measured last: an overloaded
  step leaves a backlog in the API.
- (5) the mix with 1..4 worker replicas (`supervisorctl start/stop worker-N`).
- CPU by process is sampled around every phase (`psutil`): the shares below say what each
  figure is made of. With py-spy installed, the hottest worker pool process is profiled during
  an extra light batch and an extra mix batch, and the hottest API process during extra
  submits at a quarter of the target rate.
"""


def write_doc(block: str) -> None:
    """Replace only the results block of our section; create section or file if missing."""
    text = DOC.read_text() if DOC.exists() else "# Performance\n"
    new_block = f"{BEGIN}\n{block.rstrip()}\n{END}"
    start = text.find(SECTION)
    if start < 0:
        section = f"{SECTION}\n\n{METHOD}\n{new_block}\n"
        text = text.rstrip() + "\n\n" + section
    else:
        nxt = text.find("\n## ", start + len(SECTION))
        end = len(text) if nxt < 0 else nxt + 1
        section = text[start:end]
        if BEGIN in section and END in section:
            b, e = section.index(BEGIN), section.index(END) + len(END)
            section = section[:b] + new_block + section[e:]
        else:
            section = section.rstrip() + "\n\n" + new_block + "\n"
        if not section.endswith("\n\n") and nxt >= 0:
            section = section.rstrip("\n") + "\n\n"
        text = text[:start] + section + text[end:]
    DOC.write_text(text)


# ---------------------------------------------------------------------------------------------
def fmt_eff(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def fmt_rate(values: list[float]) -> str:
    med = statistics.median(values)
    spread = f" (runs: {', '.join(f'{v:.1f}' for v in values)})" if len(values) > 1 else ""
    return f"{med:.1f}/s{spread}"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small batches (a smoke run)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--api-replicas", type=int, default=int(os.environ.get("API_REPLICAS", "3"))
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("WORKER_REPLICAS", "3")),
        help="worker replicas for figures 1-4 (scaling goes 1..max(4, this))",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=TARGETS["offered_rate"],
        help="offered submit rate of figure 4, requests/s",
    )
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--no-docs", action="store_true", help="print only")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--skip-scaling", action="store_true")
    args = parser.parse_args()
    q = args.quick
    n_noop = 1000 if q else 5000
    target_s = 4.0 if q else 12.0  # seconds of work per batch (sizes follow the measured costs)
    repeats = 1 if q else args.repeats
    latency_s = 3.0 if q else 10.0
    max_workers = max(4, args.workers)

    started = time.monotonic()
    ver = versions()
    load0 = os.getloadavg()
    log(
        f"{ver['cpu']}; Python {ver['python']}, celery {ver['celery']}, kombu {ver['kombu']}, "
        f"redis {ver['redis-server']}, nginx {ver['nginx']}, FastAPI {ver['fastapi']}, "
        f"uvicorn {ver['uvicorn']}, gunicorn {ver['gunicorn']}, NumPy {ver['numpy']}, "
        f"SQLite {ver['sqlite']}; load average {load0[0]:.1f}"
    )

    log("calibrating the mix on one core, then on every core at once")
    # Sized for this machine as `make loadtest` sizes it (MIX_SCALE, default auto), then timed
    # again at exactly those sizes side by side.
    cal = calibrate(min(os.sched_getaffinity(0)), os.environ.get("MIX_SCALE") or "auto")
    par = calibrate_parallel(cal["scale"] or "1")
    mean_ms = float(cal["mean_cpu_ms"])
    par_means = [float(p["mean_cpu_ms"]) for p in par]
    side_by_side = mean_ms / statistics.mean(par_means)  # <1: slower when run together
    for r in cal["rows"]:
        log(
            f"  {r['type']:<20} weight {r['weight']:>3}  "
            + (f"{r['cpu_ms']:8.2f} ms" if r["cpu_ms"] is not None else f"  {r.get('error')}")
        )
    log(
        f"  weighted mean {mean_ms:.1f} ms alone; {statistics.mean(par_means):.1f} ms with "
        f"every core busy (x{1 / side_by_side:.2f})"
    )

    stack = BenchStack(BENCH_DIR / "stack", args.api_replicas, max_workers)
    meter = CpuMeter(stack.roots)
    results: dict[str, Any] = {
        "versions": ver,
        "load_start": load0,
        "calibration": cal,
        "parallel_calibration_means": par_means,
    }
    py_spy = None if args.no_profile else find_py_spy()
    profiles: dict[str, dict[str, Any]] = {}

    def on_term(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    try:
        log(
            f"starting a fresh stack: {args.api_replicas} API replicas x "
            f"{os.environ.get('GUNICORN_WORKERS', '1')} gunicorn workers, {max_workers} worker "
            f"replicas x {os.environ.get('WORKER_CONCURRENCY', '4')} processes"
        )
        stack.up()
        stack.set_workers(args.workers)
        token = login(stack.base, stack.info["ADMIN_USERNAME"], stack.info["ADMIN_PASSWORD"])
        log(f"stack up on {stack.base} in {stack.info.get('STARTUP_SECONDS', '?')} s")

        # (1) bare Celery ceiling -----------------------------------------------------------
        stack.start_noop_workers(args.workers)
        noop_rates, noop_cpu = [], []
        for i in range(repeats):
            rate, cpu = measure_noop(stack, meter, n_noop, timeout=300)
            noop_rates.append(rate)
            noop_cpu.append(cpu)
            log(f"(1) no-op Celery run {i + 1}: {rate:.0f} tasks/s  [{cpu.shares()}]")
        stack.stop_noop_workers()
        results["noop"] = noop_rates

        # (2) light tasks through the whole stack --------------------------------------------
        light_body = json.dumps({"type": LIGHT_TYPE, "params": LIGHT_PARAMS}).encode()
        probe = run_batch(stack, meter, token, [light_body] * 40, args.concurrency, 300)
        # Sized on what the stack sustains, follow-up work included.
        n_light = int(min(3000, max(60, probe.drained_rate * target_s)))
        log(
            f"(2) probe: {probe.rate:.0f} tasks/s ({probe.drained_rate:.0f}/s until every "
            f"queue drained); batches of {n_light}"
        )
        light: list[Batch] = []
        for i in range(repeats):
            b = run_batch(stack, meter, token, [light_body] * n_light, args.concurrency, 300)
            light.append(b)
            log(
                f"(2) light run {i + 1}: {b.rate:.0f} tasks/s ({b.drained_rate:.0f}/s until "
                f"every queue drained), {b.failed} failed, {b.lost} "
                f"lost, errors {b.errors}  [{b.cpu.shares()}]"
            )
        if py_spy:
            with tempfile.TemporaryDirectory() as tmp:
                profiles.update(
                    profile_batch(
                        stack,
                        token,
                        [light_body] * n_light,
                        args.concurrency,
                        py_spy,
                        Path(tmp),
                        "light",
                    )
                )

        # (3) the CPU-bound mix -------------------------------------------------------------
        # Sized on what a worker spends per task.
        per_task_s = mean_ms / 1000.0
        alone_by_type = {
            r["type"]: r["cpu_ms"] / 1000.0 for r in cal["rows"] if r["cpu_ms"] is not None
        }
        slots = args.workers * int(os.environ.get("WORKER_CONCURRENCY", "4"))
        n_mix = max(20, round(target_s * cores() / per_task_s * 0.8))
        bodies, alone_s = mix_bodies(cal["rows"], n_mix)
        mix: list[Batch] = []
        steadies: list[float] = []
        for i in range(repeats):
            b = run_batch(stack, meter, token, bodies, args.concurrency, 600)
            mix.append(b)
            steady = steady_efficiency(b.spans, alone_by_type, slots, cores())
            if steady is not None:
                steadies.append(steady)
            log(
                f"(3) mix run {i + 1}: {n_mix} tasks, {b.rate:.2f} tasks/s ({b.drained_rate:.2f}/s "
                f"until every queue drained), efficiency "
                f"{alone_s / (b.wall * cores()):.2f} (steady state {fmt_eff(steady)}), "
                f"{b.failed} failed, {b.lost} lost  [{b.cpu.shares()}]"
            )
        if py_spy:
            with tempfile.TemporaryDirectory() as tmp:
                profiles.update(
                    profile_batch(stack, token, bodies, args.concurrency, py_spy, Path(tmp), "mix")
                )

        # (5) scaling ---------------------------------------------------------------------------
        scaling: list[tuple[int, Batch]] = []
        if not args.skip_scaling:
            for k in range(1, max_workers + 1):
                stack.set_workers(k)
                n_scale = max(20, round(n_mix * (0.75 if not q else 1.0)))
                sbodies, s_alone = mix_bodies(cal["rows"], n_scale, seed=100 + k)
                b = run_batch(stack, meter, token, sbodies, args.concurrency, 600)
                scaling.append((k, b))
                log(
                    f"(5) {k} worker replica(s): {b.rate:.2f} tasks/s, efficiency "
                    f"{s_alone / (b.wall * cores()):.2f}, {b.failed} failed, {b.lost} lost  "
                    f"[{b.cpu.shares()}]"
                )
                results.setdefault("scaling_alone_s", {})[k] = s_alone
        # (4) submit latency, open loop, last: an overloaded step leaves a backlog behind ------
        # The submit path alone (workers stopped; what they would run is purged afterwards),
        # at rising offered rates up to the target, so the table also shows where it bends.
        latency: dict[float, dict[str, Any]] = {}
        stack.wait_idle()
        stack.set_workers(0)
        if py_spy:  # the API is only busy here: profile it at a rate it sustains (not counted)
            with tempfile.TemporaryDirectory() as tmp:
                profiles.update(
                    profile_during(
                        stack,
                        lambda: asyncio.run(
                            submit_open(stack.port, token, light_body, args.rate / 4, 8.0, 0.0)
                        ),
                        ("api",),
                        py_spy,
                        Path(tmp),
                        f"submits at {args.rate / 4:.0f} req/s",
                    )
                )
        for rate in sorted({args.rate / 4, args.rate / 2, args.rate}):
            stack.wait_quiet()
            with meter.measure() as m:
                lats, statuses, opened = asyncio.run(
                    submit_open(
                        stack.port, token, light_body, rate, latency_s, warmup=1.0, timeout=5.0
                    )
                )
            latency[rate] = {
                "p50": pct(lats, 50),
                "p95": pct(lats, 95),
                "p99": pct(lats, 99),
                "max": max(lats) if lats else math.nan,
                "n": len(lats),
                "errors": {k: v for k, v in statuses.items() if k != 202},
                "connections": opened,
                "cpu": m["cpu"],
            }
            lat = latency[rate]
            log(
                f"(4) {rate:.0f} req/s: p50 {lat['p50']:.1f} ms, p95 {lat['p95']:.1f}, p99 "
                f"{lat['p99']:.1f}, max {lat['max']:.0f} ({len(lats)} requests, errors "
                f"{lat['errors']} (-1: no answer within 5 s), {opened} connections)  "
                f"[{m['cpu'].shares()}]"
            )
        results["latency"] = {
            r: {k: v for k, v in d.items() if k != "cpu"} for r, d in latency.items()
        }

    finally:
        log("stopping the stack")
        stack.down()

    # ---- the report --------------------------------------------------------------------------
    noop_med = statistics.median(noop_rates)
    light_rates = [b.rate for b in light]
    light_med = statistics.median(light_rates)
    mix_rates = [b.rate for b in mix]
    mix_med = statistics.median(mix_rates)
    effs = [alone_s / (b.wall * cores()) for b in mix]
    own_effs = [alone_s / b.cpu.ours for b in mix]
    eff_med = statistics.median(effs)
    steady_med = statistics.median(steadies) if steadies else None
    ideal = cores() * 1000.0 / mean_ms
    hw_ideal = ideal * side_by_side
    mix_lost = sum(b.lost for b in mix)
    mix_failed = sum(b.failed for b in mix)

    def ok(flag: bool) -> str:
        return "met" if flag else "**missed**"

    rows = [
        (
            "1",
            f"bare Celery ceiling: no-op task, {args.workers} workers x "
            f"{os.environ.get('WORKER_CONCURRENCY', '4')}, enqueued straight into Redis",
            fmt_rate(noop_rates),
            "",
        ),
        (
            "2",
            f"full stack, no-op-sized task ({LIGHT_TYPE}, 1 year) over HTTP via nginx",
            fmt_rate(light_rates) + f"; {light_med / noop_med:.2f} x (1)" + drained_note(light),
            f"{ok(light_med / noop_med >= TARGETS['light_ratio'])} (>= 0.5 x (1))",
        ),
        (
            "3",
            f"CPU-bound mix ({n_mix} tasks, mean {mean_ms:.0f} ms alone on one core)",
            fmt_rate(mix_rates) + f"; {mix_failed} failed, {mix_lost} lost" + drained_note(mix),
            f"{ok(mix_med >= TARGETS['mix_tasks_per_sec'] and not mix_lost and not mix_failed)}"
            f" (>= 12/s, none failed/lost)",
        ),
        (
            "3",
            "efficiency = sum(CPU alone) / (wall x cores)",
            f"{eff_med:.2f} (runs: {', '.join(f'{e:.2f}' for e in effs)}); own-CPU "
            f"{statistics.median(own_effs):.2f}; side-by-side ceiling {side_by_side:.2f}",
            f"{ok(eff_med >= TARGETS['efficiency'])} (>= 0.85)",
        ),
        (
            "3",
            "efficiency in steady state (every worker process busy; opening and drain left out)",
            f"{fmt_eff(steady_med)} (runs: {', '.join(f'{e:.2f}' for e in steadies)})",
            f"{ok(steady_med is not None and steady_med >= TARGETS['efficiency'])} (>= 0.85)",
        ),
        *(
            (
                "4",
                f"submit latency, {rate:.0f} req/s offered (open loop), workers stopped",
                f"p50 {d['p50']:.1f} ms, p95 {d['p95']:.1f} ms, p99 {d['p99']:.1f} ms (max "
                f"{d['max']:.0f} ms; {d['n']} requests, {sum(d['errors'].values())} errors)",
                f"{ok(d['p99'] < TARGETS['submit_p99_ms'])} (p99 < 50 ms)"
                if rate == args.rate
                else "",
            )
            for rate, d in sorted(latency.items())
        ),
    ]
    if scaling:
        rows.append(
            (
                "5",
                "mix with 1 / 2 / 3 / 4 worker replicas",
                " / ".join(f"{b.rate:.1f}" for _, b in scaling) + " tasks/s",
                "docs/scaling.png",
            )
        )
    header = ("| # | measure | result | target |", "|---|---|---|---|")
    table = "\n".join([*header, *(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows)])
    env_line = (
        f"{ver['cpu']}; Python {ver['python']}, Celery {ver['celery']}, kombu "
        f"{ver['kombu']}, redis-server {ver['redis-server']}, nginx {ver['nginx']}, "
        f"FastAPI {ver['fastapi']}, uvicorn {ver['uvicorn']}, gunicorn "
        f"{ver['gunicorn']}, NumPy {ver['numpy']}, SQLite {ver['sqlite']}"
    )
    config_line = (
        f"{args.api_replicas} API replicas x GUNICORN_WORKERS="
        f"{os.environ.get('GUNICORN_WORKERS', '1')}, {args.workers} worker replicas "
        f"x WORKER_CONCURRENCY={os.environ.get('WORKER_CONCURRENCY', '4')}, "
        f"LOG_LEVEL={os.environ.get('LOG_LEVEL', 'INFO')}, SQLite; load average "
        f"{load0[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end; "
        f"{time.monotonic() - started:.0f} s in all"
    )

    limits = [
        f"- (1) CPU during the no-op batches: {noop_cpu[len(noop_cpu) // 2].shares()}.",
        f"- (2) CPU during the light batches: {light[len(light) // 2].cpu.shares()}; "
        f"per task: {cpu_per_task(light[len(light) // 2])}.",
        f"- (3) CPU during the mix: {mix[len(mix) // 2].cpu.shares()}; the calculations alone "
        f"needed {alone_s:.1f} CPU-s of the {mix[len(mix) // 2].cpu.ours:.1f} CPU-s our "
        f"processes used; running on every core at once costs them x{1 / side_by_side:.2f}.",
        "- (4) CPU with the workers stopped: "
        + "; ".join(
            f"at {rate:.0f} req/s {d['cpu'].shares()}" for rate, d in sorted(latency.items())
        )
        + ".",
    ]
    if scaling:
        limits.append(
            "- (5) " + "; ".join(f"{k} replica(s): {b.cpu.shares()}" for k, b in scaling) + "."
        )
    prof_lines = (
        render_profiles(profiles)
        if profiles
        else ["py-spy is not installed: no profiles (`.venv/bin/pip install py-spy` to get them)."]
    )

    print()
    print(f"finq full-stack benchmark: {env_line}")
    print(config_line)
    print()
    print(table)
    print()
    print("What each figure is made of (share of wall time x cores):")
    print("\n".join(limits))
    print()
    print("\n".join(prof_lines))

    if scaling:
        draw_chart(
            [(k, b.rate, results["scaling_alone_s"][k] / (b.wall * cores())) for k, b in scaling],
            ideal,
            hw_ideal,
            CHART,
            f"finq mix on {cores()} cores: completed tasks/s by worker replicas "
            f"(mean task {mean_ms:.0f} ms)",
        )
        log(f"chart written to {CHART.relative_to(ROOT)}")
    if not args.no_docs and not q:
        block = "\n".join(
            [
                f"Measured {time.strftime('%Y-%m-%d %H:%M')} on {env_line}.",
                "",
                f"Configuration: {config_line}.",
                "",
                table,
                "",
                "![completed tasks/s by worker replicas](scaling.png)" if scaling else "",
                "",
                "Mix (loadtest/locustfile.py), CPU per task measured alone on one core"
                " in this run:",
                "",
                "| type | weight | size | CPU ms |",
                "|---|---|---|---|",
                *(
                    f"| {r['type']} | {r['weight']} | {r['size']} | "
                    + (f"{r['cpu_ms']:.2f}" if r["cpu_ms"] is not None else "n/a")
                    + " |"
                    for r in cal["rows"]
                ),
                f"| **weighted mean** | | | **{mean_ms:.1f}** |",
                "",
                "What each figure is made of (CPU seconds by process role, as a share of wall time"
                " x cores):",
                "",
                *limits,
                "",
                "Profiles (py-spy, 100 Hz, an extra batch of each kind):",
                "",
                *prof_lines,
            ]
        )
        write_doc(block)
        log(f"results written to {DOC.relative_to(ROOT)} (section '{SECTION[3:]}')")
    return 0


def drained_note(batches: list[Batch]) -> str:
    """When tasks leave work behind (a notification, say), the rate at which the
    stack also finishes that: what it can sustain."""
    done = statistics.median(b.rate for b in batches)
    drained = statistics.median(b.drained_rate for b in batches)
    if drained >= 0.95 * done:
        return ""
    return f"; {drained:.1f}/s counting until the deferred work is done too"


def cpu_per_task(b: Batch) -> str:
    n = max(1, b.statuses.get("SUCCESS", 0))
    parts = sorted(b.cpu.by_group.items(), key=lambda kv: -kv[1])
    return ", ".join(f"{k} {v / n * 1000:.1f} ms" for k, v in parts if v / n >= 0.0001)


def profile_during(
    stack: BenchStack,
    load: Callable[[], Any],
    groups: tuple[str, ...],
    py_spy: str,
    out_dir: Path,
    label: str,
) -> dict[str, dict[str, Any]]:
    """Run `load` in a thread while py-spy samples, for 6 s, the process of each role that
    burns the most CPU."""
    import threading

    runner = threading.Thread(target=load, daemon=True)
    runner.start()
    picked: dict[str, int] = {}
    for group in groups:
        pid = hottest(stack, group, 1.0)
        if pid is not None:
            picked[group] = pid
    recs = start_profiles(py_spy, picked, 6, out_dir)
    for _, _, proc in recs:
        proc.wait(60)
    runner.join(600)
    return {f"{label}: {group}": summarize_profile(path) for group, path, _ in recs}


def profile_batch(
    stack: BenchStack,
    token: str,
    bodies: list[bytes],
    concurrency: int,
    py_spy: str,
    out_dir: Path,
    label: str,
) -> dict[str, dict[str, Any]]:
    """One more batch (not counted) while the hottest worker pool process is profiled."""
    stack.wait_idle()
    mark = stack.watermark()
    out = profile_during(
        stack,
        lambda: asyncio.run(submit_closed(stack.port, token, bodies, concurrency)),
        ("worker (pool)",),
        py_spy,
        out_dir,
        label,
    )
    stack.wait_done(mark, len(bodies), 600)
    return out


def render_profiles(profiles: dict[str, dict[str, Any]]) -> list[str]:
    lines = []
    for name, p in profiles.items():
        if not p.get("samples"):
            lines.append(f"- {name}: no samples")
            continue
        lines.append(
            f"- {name} ({p['samples']} samples). Self time by module: "
            + ", ".join(f"{k} {v:.0%}" for k, v in p["self"])
            + ". Heaviest calls "
            "(inclusive): " + ", ".join(f"`{k}` {v:.0%}" for k, v in p["inclusive"]) + "."
        )
    return lines


if __name__ == "__main__":
    sys.exit(main())
