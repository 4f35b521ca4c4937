"""Locust load model of finq: users that submit a realistic mix of calculations and follow
each one to its end.

    scripts/loadtest.sh            (make loadtest)     headless, CSV + HTML under $RUN_DIR/loadtest
    scripts/loadtest.sh --ui       (make loadtest-ui)  the web UI on 127.0.0.1:8089

Each simulated user submits a task drawn from `MIX` (below), follows it to a final status over
Server-Sent Events (falling back to polling with backoff when a stream breaks), records how
long it took from submit to done, and submits the next one: a closed loop, so `--users` is the
number of tasks in flight and the test measures the stack's capacity rather than a fixed rate.

Besides Locust's per-request rows, every finished task is reported as its own entry,
request type `TASK`, name `<type> done`, response time = submit-to-done in ms (a FAILED task is
a failure of that row). At the end it prints, and writes as JSON next to the CSV files:
completed tasks/s, latency p50/p95/p99, failed tasks, and lost tasks (submitted but without a
final status when the test stopped plus the grace period `--stop-timeout`). The process exits
non-zero when any task failed, was lost or rejected (a 429 is not a rejection but throttling:
counted and shown, the stack's limits doing their job), another request failed, or completed
tasks/s fell below `--finq-min-tasks-per-sec` (MIN_TASKS_PER_SEC).

Credentials: FINQ_USERNAME / FINQ_PASSWORD, else the admin account of the stack in
$RUN_DIR/stack.json (`make run` writes it). With an admin, the run creates LOADTEST_ACCOUNTS
(8) throwaway accounts and deletes them at the end, users taking turns on them (see Accounts),
so the stack keeps its rate limits on; a 429 is reported as throttled. With the default limits
that caps what the test can submit at 8 x RATE_LIMIT_SUBMIT (120/minute) = 16 tasks/s.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import re
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent
from gevent.lock import Semaphore
from locust import FastHttpUser, constant, events, task
from locust.env import Environment
from locust.exception import StopUser

# ---------------------------------------------------------------------------------------------
# Inputs of the mix (fixed, generated once, deterministic).
_rng = random.Random(20240601)


def _ladder(low: float, high: float, n: int) -> list[float]:
    """n strikes evenly spaced from low to high (a strike ladder / smile slice)."""
    return [round(low + (high - low) * i / (n - 1), 4) for i in range(n)]


def _projects(scenarios: int, periods: int) -> list[list[float]]:
    """Capital-budgeting scenarios: an outlay, then uncertain yearly inflows."""
    return [
        [-round(_rng.uniform(800, 1200), 2)]
        + [round(_rng.uniform(60, 260), 2) for _ in range(periods - 1)]
        for _ in range(scenarios)
    ]


def _covariance(n: int, vol: float = 0.012, corr: float = 0.3) -> list[list[float]]:
    """Daily covariance of n assets with a common correlation (positive definite)."""
    return [[vol * vol * (1.0 if i == j else corr) for j in range(n)] for i in range(n)]


# ---------------------------------------------------------------------------------------------
# THE MIX: the one table to edit. `weight`: share of submissions. `params`: the request, sizes
# included. `cpu_ms`: cost of one task on one core (validation + calculation + JSON), measured
# in-process with BLAS threads 1 by `python loadtest/calibrate.py` (re-run it after editing a
# row; it prints the weighted mean, which is kept near 100 ms). A `seed` is replaced by a
# random one at each submission.
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Mix:
    type: str
    weight: int
    cpu_ms: float
    size: str
    params: dict[str, Any] = field(repr=False)


MIX: tuple[Mix, ...] = (
    #   type                   weight cpu_ms  size
    Mix(
        "loan_amortization",
        25,
        1.0,
        "30-year monthly mortgage, 360-row schedule",
        {"principal": 320_000, "annual_rate": 0.0475, "years": 30},
    ),
    Mix(
        "bond_analytics",
        20,
        0.05,
        "30-year semi-annual bond priced from its yield",
        {"face_value": 1000, "coupon_rate": 0.045, "maturity": 30, "frequency": 2, "yield": 0.0515},
    ),
    Mix(
        "cash_flow_analysis",
        15,
        2.3,
        "NPV/IRR/MIRR/payback of 100 scenarios x 25 years",
        {
            "cash_flows": _projects(100, 25),
            "discount_rate": 0.08,
            "finance_rate": 0.06,
            "reinvest_rate": 0.07,
        },
    ),
    Mix(
        "black_scholes",
        15,
        0.3,
        "price + Greeks of a 500-strike ladder",
        {
            "spot": 100.0,
            "strike": _ladder(50, 150, 500),
            "maturity": 0.5,
            "rate": 0.03,
            "volatility": 0.22,
            "dividend_yield": 0.01,
            "option_type": "call",
        },
    ),
    Mix(
        "portfolio_var",
        10,
        120.0,
        "Monte Carlo VaR/CVaR, 40 assets, 250k scenarios",
        {
            "weights": [1 / 40] * 40,
            "portfolio_value": 25_000_000,
            "confidence": 0.99,
            "horizon_days": 10,
            "method": "monte_carlo",
            "expected_returns": [0.0002] * 40,
            "covariance": _covariance(40),
            "simulations": 250_000,
            "seed": 1,
        },
    ),
    Mix(
        "monte_carlo_option",
        15,
        600.0,
        "arithmetic Asian call, 375k paths x 252 steps",
        {
            "spot": 100,
            "strike": 105,
            "maturity": 1,
            "rate": 0.03,
            "volatility": 0.2,
            "option_type": "call",
            "style": "asian_arithmetic",
            "paths": 375_000,
            "steps": 252,
            "seed": 1,
        },
    ),
)

# The size that a row's cost is proportional to. The table's `cpu_ms` was measured on one
# machine; on a slower or faster CPU the same sizes cost more or less, and "about 100 ms a task"
# no longer holds. With MIX_SCALE=auto (the default) the load test times these rows on this
# machine at start-up (loadtest/calibrate.py, one core) and scales each row's size so that it
# costs its `cpu_ms` here; a number scales them all by that factor; 1 keeps the table as is.
# The rows below these two are 1-9 ms and stay as they are.
SCALABLE: dict[str, str] = {"monte_carlo_option": "paths", "portfolio_var": "simulations"}
SCALE_LIMITS = (0.05, 20.0)

FINAL = frozenset({"SUCCESS", "FAILED", "CANCELLED"})
ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("finq.loadtest")


def scale_row(entry: Mix, factor: float) -> Mix:
    """The row with its scalable size multiplied by `factor` (same target `cpu_ms`)."""
    key = SCALABLE.get(entry.type)
    if key is None or factor == 1.0:
        return entry
    factor = min(max(factor, SCALE_LIMITS[0]), SCALE_LIMITS[1])
    size = max(1000, int(round(entry.params[key] * factor, -3)))
    return Mix(
        entry.type,
        entry.weight,
        entry.cpu_ms,
        f"{entry.size}; {key} x{factor:.2f} = {size:,}",
        {**entry.params, key: size},
    )


def machine_factors(
    measured_cpu_ms: dict[str, float], mix: tuple[Mix, ...] = MIX
) -> dict[str, float]:
    """Per scalable row: table cost / cost measured here, the factor that makes it cost its
    table `cpu_ms` on this machine (cost is proportional to the size)."""
    return {
        m.type: m.cpu_ms / measured_cpu_ms[m.type]
        for m in mix
        if m.type in SCALABLE and measured_cpu_ms.get(m.type)
    }


def measure_here(types: list[str]) -> dict[str, float]:
    """CPU ms of the table's rows of `types` on one core of this machine (calibrate.py in a
    child process: one BLAS thread, pinned, like a worker pool process)."""
    out = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).with_name("calibrate.py")),
            "--json",
            "--no-charts",
            "--repeats",
            "1",
            "--min-seconds",
            "0",
            "--types",
            ",".join(types),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    ).stdout
    return {r["type"]: r["cpu_ms"] for r in json.loads(out)["rows"] if r["cpu_ms"]}


def scaled_mix(scale: str, mix: tuple[Mix, ...] = MIX) -> tuple[Mix, ...]:
    """The mix sized for this machine. `scale` (MIX_SCALE): `auto`, one factor for every
    scalable row, or `type=factor,...` (what `scale_of` gives back, to size a mix the same way
    again); 1 keeps the table's sizes."""
    text = scale.strip().lower()
    if text == "auto":
        scalable = [m.type for m in mix if m.type in SCALABLE]
        if not scalable:
            return mix
        try:
            measured = measure_here(scalable)
        except (OSError, subprocess.SubprocessError, ValueError, KeyError) as exc:
            # Where the engine is not installed (compose's Locust image), say so and go on.
            log.warning(
                "MIX_SCALE=auto: could not time the mix on this machine (%s); using "
                "the table's sizes (set MIX_SCALE to a factor to change them)",
                str(exc)[:200],
            )
            return mix
        factors = machine_factors(measured, mix)
    elif "=" in text:
        factors = {k.strip(): float(v) for k, v in (p.split("=", 1) for p in text.split(","))}
    else:
        factors = {m.type: float(text) for m in mix}
    for type_, factor in factors.items():
        if not math.isfinite(factor) or factor <= 0:
            raise ValueError(f"MIX_SCALE: the factor of {type_} must be positive, not {factor}")
    return tuple(scale_row(m, factors.get(m.type, 1.0)) for m in mix)


def scale_of(mix: tuple[Mix, ...]) -> str:
    """The `type=factor,...` that sizes the table's rows like `mix` (for `scaled_mix`)."""
    table = {m.type: m for m in MIX}
    return ",".join(
        f"{m.type}={m.params[SCALABLE[m.type]] / table[m.type].params[key]:.6g}"
        for m in mix
        if (key := SCALABLE.get(m.type)) and m.type in table
    )


def mean_cpu_ms(mix: tuple[Mix, ...] = MIX) -> float:
    """Weighted mean cost of one task of the mix, from the table's `cpu_ms`."""
    return sum(m.weight * m.cpu_ms for m in mix) / sum(m.weight for m in mix)


def request_params(entry: Mix) -> dict[str, Any]:
    """The params of one submission: the row's, with a fresh seed where the type takes one
    (so no two simulations are the same, as with real users)."""
    if "seed" not in entry.params:
        return entry.params
    return {**entry.params, "seed": random.randrange(2**62)}


def stack_info() -> dict[str, str]:
    """$RUN_DIR/stack.json of the running local stack ({} when absent)."""
    run_dir = Path(os.environ.get("RUN_DIR") or ROOT / ".run")
    try:
        info: dict[str, str] = json.loads((run_dir / "stack.json").read_text())
    except (OSError, ValueError):
        return {}
    return info


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of an ascending list; nan when empty."""
    if not sorted_values:
        return math.nan
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


# ---------------------------------------------------------------------------------------------
# Command-line options (also shown in the web UI).
@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument(
        "--finq-follow",
        choices=["sse", "poll"],
        default="sse",
        env_var="FINQ_FOLLOW",
        help="follow tasks over SSE (default) or by polling GET /tasks/{id} with backoff",
    )
    parser.add_argument(
        "--finq-min-tasks-per-sec",
        type=float,
        default=0.0,
        env_var="MIN_TASKS_PER_SEC",
        help="exit non-zero below this many completed tasks/s (0: no minimum)",
    )
    parser.add_argument(
        "--finq-summary",
        default="",
        env_var="FINQ_SUMMARY",
        help="write the task summary (JSON) here; default: next to the CSVs",
    )
    parser.add_argument(
        "--finq-task-timeout",
        type=float,
        default=330.0,
        env_var="FINQ_TASK_TIMEOUT",
        help="give up following one task after this many seconds (lost)",
    )
    parser.add_argument(
        "--finq-types",
        default="",
        env_var="FINQ_TYPES",
        help="comma-separated subset of the mix's types (default: all)",
    )
    parser.add_argument(
        "--finq-mix-scale",
        default="auto",
        env_var="MIX_SCALE",
        help="size the heavy rows for this machine: auto (time them here at "
        "start-up), a factor, or 1 (the table's sizes)",
    )


# ---------------------------------------------------------------------------------------------
# Shared state of one test run (one Locust process; gevent makes these updates atomic).
class TaskFailed(Exception):  # noqa: N818 - Locust shows the class name in its error report
    """A task that ended FAILED or CANCELLED."""


class TaskLost(Exception):  # noqa: N818
    """A task without a final status when the test (and its grace period) ended."""


@dataclass
class RunState:
    first_submit: float | None = None
    stop_requested: float | None = None
    outstanding: dict[str, tuple[str, float, float]] = field(default_factory=dict)
    done: list[tuple[str, float, float]] = field(default_factory=list)  # type, at, ms
    failed: list[tuple[str, str]] = field(default_factory=list)
    lost: list[tuple[str, str]] = field(default_factory=list)
    rejected: dict[str, int] = field(default_factory=dict)
    submitted: int = 0
    mix: tuple[Mix, ...] = MIX
    weights: tuple[int, ...] = tuple(m.weight for m in MIX)


STATE = RunState()


class Accounts:
    """The accounts the simulated users submit as.

    With admin credentials (the stack's admin, or FINQ_USERNAME/FINQ_PASSWORD of an admin),
    LOADTEST_ACCOUNTS throwaway accounts (default 8) are created when a test starts and deleted
    when it stops, and the users take turns on them: the server's per-account limits
    (RATE_LIMIT_SUBMIT, RATE_LIMIT_GLOBAL) then apply to a few users each, as to real people,
    and the stack runs with its limits on. 8 accounts + the admin's login stay within the
    default login limit (10/minute per address; a 429 there is waited out). With an ordinary
    account, every user shares it. One token per account, fetched once and again on a 401.
    """

    def __init__(self) -> None:
        self.accounts: list[tuple[str, str]] = []
        self.created: list[str] = []
        self.admin_token: str | None = None
        self.tokens: dict[str, str] = {}
        self._locks: dict[str, Semaphore] = {}
        self._next = 0

    @staticmethod
    def credentials() -> tuple[str, str]:
        user, password = os.environ.get("FINQ_USERNAME"), os.environ.get("FINQ_PASSWORD")
        if user and password:
            return user, password
        info = stack_info()
        if info.get("ADMIN_USERNAME") and info.get("ADMIN_PASSWORD"):
            return info["ADMIN_USERNAME"], info["ADMIN_PASSWORD"]
        raise SystemExit("no credentials: set FINQ_USERNAME/FINQ_PASSWORD or RUN_DIR")

    def setup(self, host: str, count: int) -> None:
        """Create the run's accounts (admin only); otherwise use the given account."""
        name, password = self.credentials()
        self.accounts = [(name, password)]
        self.tokens.clear()
        if count <= 0:
            return
        try:
            self.admin_token = login(host, name, password)
        except LoginFailed as exc:
            raise SystemExit(str(exc)) from None
        self.tokens[name] = self.admin_token
        run = secrets.token_hex(3)
        made: list[tuple[str, str]] = []
        for i in range(count):
            account = (f"locust-{run}-{i + 1}", secrets.token_urlsafe(18))
            status = _call(
                host,
                "POST",
                "/api/v1/users",
                self.admin_token,
                {"username": account[0], "password": account[1], "role": "user"},
            )
            if status == 403:
                log.info("%s is not an admin: every user submits as %s", name, name)
                return
            if status != 201:
                raise SystemExit(f"could not create load-test account {account[0]}: {status}")
            made.append(account)
            self.created.append(account[0])
        self.accounts = made
        log.info("%d load-test accounts created (locust-%s-*), deleted at the end", count, run)

    def teardown(self, host: str) -> None:
        for name in self.created:
            if self.admin_token is not None:
                _call(host, "DELETE", f"/api/v1/users/{name}", self.admin_token)
        self.created.clear()

    def pick(self) -> str:
        """The account of the next user (round robin)."""
        name = self.accounts[self._next % len(self.accounts)][0]
        self._next += 1
        return name

    def token(self, user: FastHttpUser, name: str, stale: str | None = None) -> str:
        lock = self._locks.setdefault(name, Semaphore())
        with lock:
            if self.tokens.get(name) is None or self.tokens.get(name) == stale:
                password = dict(self.accounts)[name]
                try:
                    self.tokens[name] = login(user.host or FinqUser.host or "", name, password)
                except LoginFailed as exc:
                    raise StopUser(str(exc)) from None
            return self.tokens[name]


def _call(host: str, method: str, path: str, token: str, body: dict[str, Any] | None = None) -> int:
    """One request outside Locust's statistics (account set-up); the HTTP status."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        host + path,
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


class LoginFailed(Exception):  # noqa: N818 - shown to the user as "could not log in ..."
    pass


def login(host: str, name: str, password: str) -> str:
    """A bearer token; the login limit (429) and a restarting replica (502/503) are waited
    out, up to ten tries. Outside Locust's statistics: a login is set-up, not load."""
    body = urllib.parse.urlencode({"username": name, "password": password}).encode()
    for _ in range(10):
        try:
            with urllib.request.urlopen(host + "/api/v1/auth/token", data=body, timeout=30) as resp:
                token: str = json.load(resp)["access_token"]
                return token
        except urllib.error.HTTPError as exc:
            if exc.code not in (429, 502, 503):
                raise LoginFailed(f"could not log in as {name}: {exc.code}") from None
            time.sleep(min(float(exc.headers.get("Retry-After") or 2), 30.0))
    raise LoginFailed(f"could not log in as {name}: still refused after ten tries")


ACCOUNTS = Accounts()


# ---------------------------------------------------------------------------------------------
class FinqUser(FastHttpUser):
    """Submit one task of the mix, follow it to its end, repeat (no think time)."""

    wait_time = constant(0)
    connection_timeout = 10.0
    network_timeout = 90.0  # SSE sends a heartbeat every 15 s while a task runs

    def on_start(self) -> None:
        self.account = ACCOUNTS.pick()
        self.client.auth_header = f"Bearer {ACCOUNTS.token(self, self.account)}"

    @task
    def submit_and_follow(self) -> None:
        entry = random.choices(STATE.mix, weights=STATE.weights)[0]
        body = {"type": entry.type, "params": request_params(entry), "priority": "normal"}
        submitted_at = time.time()
        t0 = time.perf_counter()
        with self.client.post(
            "/api/v1/tasks", json=body, name="POST /api/v1/tasks", catch_response=True
        ) as resp:
            if resp.status_code == 202:
                task_id = str(resp.json()["id"])
            else:
                resp.failure(f"{resp.status_code}: {(resp.text or '')[:200]}")
                self._rejected(resp.status_code, resp.headers or {})
                return
        if STATE.first_submit is None:
            STATE.first_submit = submitted_at
        STATE.submitted += 1
        STATE.outstanding[task_id] = (entry.type, submitted_at, t0)
        deadline = time.monotonic() + self.environment.parsed_options.finq_task_timeout
        status: str | None = None
        if self.environment.parsed_options.finq_follow == "sse":
            status = self._follow_sse(task_id, deadline)
        if status is None:
            status = self._follow_poll(task_id, deadline)
        if status is None:
            return  # still outstanding: counted as lost when the test ends
        elapsed_ms = (time.perf_counter() - t0) * 1000.0
        del STATE.outstanding[task_id]
        exception: Exception | None = None
        if status == "SUCCESS":
            STATE.done.append((entry.type, time.time(), elapsed_ms))
        else:
            reason = f"{status}: {self._error_of(task_id)}"
            STATE.failed.append((entry.type, reason))
            exception = TaskFailed(f"{entry.type} {task_id} {reason}")
        self.environment.events.request.fire(
            request_type="TASK",
            name=f"{entry.type} done",
            response_time=elapsed_ms,
            response_length=0,
            exception=exception,
            context={"task_id": task_id},
        )

    def _rejected(self, status_code: int, headers: Any) -> None:
        STATE.rejected[str(status_code)] = STATE.rejected.get(str(status_code), 0) + 1
        if status_code == 401:
            self.client.auth_header = (
                f"Bearer {ACCOUNTS.token(self, self.account, stale=self._token())}"
            )
        elif status_code in (429, 503):
            gevent.sleep(min(float(headers.get("Retry-After") or 1), 10.0))

    def _token(self) -> str:
        return (self.client.auth_header or "").removeprefix("Bearer ")

    def _follow_sse(self, task_id: str, deadline: float) -> str | None:
        """Read `event: task` frames until the stream ends; the server ends it right after a
        final status. None when the stream broke first (then we poll)."""
        status: str | None = None
        try:
            for line in self.client.iter_lines(
                f"/api/v1/tasks/{task_id}/events",
                name="GET /api/v1/tasks/[id]/events",
                headers={"Accept": "text/event-stream"},
            ):
                if line.startswith("data:"):
                    status = json.loads(line[5:]).get("status", status)
                if time.monotonic() > deadline:
                    return None
        except Exception as exc:  # a broken stream, a 5xx: fall back to polling
            log.debug("SSE of %s broke: %r", task_id, exc)
            return None
        return status if status in FINAL else None

    def _follow_poll(self, task_id: str, deadline: float) -> str | None:
        """GET the record with exponential backoff (50 ms x 1.5, at most 2 s)."""
        delay = 0.05
        while time.monotonic() < deadline:
            with self.client.get(
                f"/api/v1/tasks/{task_id}", name="GET /api/v1/tasks/[id]", catch_response=True
            ) as resp:
                if resp.status_code == 200:
                    status = resp.json().get("status")
                    if status in FINAL:
                        return str(status)
                elif resp.status_code == 401:
                    resp.failure("401")
                    self.client.auth_header = (
                        f"Bearer {ACCOUNTS.token(self, self.account, stale=self._token())}"
                    )
                else:
                    resp.failure(f"{resp.status_code}")
            gevent.sleep(delay)
            delay = min(delay * 1.5, 2.0)
        return None

    def _error_of(self, task_id: str) -> str:
        with self.client.get(
            f"/api/v1/tasks/{task_id}", name="GET /api/v1/tasks/[id]", catch_response=True
        ) as resp:
            if resp.status_code != 200:
                resp.failure(f"{resp.status_code}")
                return "(record unavailable)"
            error = resp.json().get("error") or {}
            return f"{error.get('type', '?')}: {error.get('message', '')}"[:300]


# ---------------------------------------------------------------------------------------------
# Test lifecycle: pick the mix, count what is left at the end, write the summary, exit code.
def _loopback(host: str) -> bool:
    return urllib.parse.urlsplit(host).hostname in ("127.0.0.1", "localhost", "::1")


SIZED_MIX: tuple[Mix, ...] = MIX  # MIX with its heavy rows sized for this machine (_on_init)


@events.init.add_listener
def _on_init(environment: Environment, **_: Any) -> None:
    if not FinqUser.host and not environment.host:
        port = os.environ.get("HTTP_PORT") or stack_info().get("HTTP_PORT") or "8080"
        FinqUser.host = f"http://127.0.0.1:{port}"
    host = environment.host or FinqUser.host or ""
    if not _loopback(host) and os.environ.get("FINQ_ALLOW_REMOTE") != "1":
        raise SystemExit(
            f"refusing to load {host}: only 127.0.0.1 (FINQ_ALLOW_REMOTE=1 to override)"
        )
    if not environment.stop_timeout:
        environment.stop_timeout = 30.0  # the grace period: in-flight tasks may finish
    # Sized once, when Locust starts: timing the rows takes a few seconds, which must not eat
    # into a run's --run-time (nor happen again at every start in the web UI).
    global SIZED_MIX
    options = environment.parsed_options
    wanted = _wanted_types(environment)
    try:
        SIZED_MIX = scaled_mix(
            str(options.finq_mix_scale or "auto") if options else "auto",
            tuple(m for m in MIX if not wanted or m.type in wanted),
        )
    except ValueError as exc:
        raise SystemExit(f"MIX_SCALE: {exc}") from None
    for m in SIZED_MIX:
        if m.type in SCALABLE:
            log.info("mix row %s: %s", m.type, m.size)


def _wanted_types(environment: Environment) -> set[str]:
    """--finq-types (FINQ_TYPES) as a set; empty means the whole mix."""
    options = environment.parsed_options
    return {t.strip() for t in (getattr(options, "finq_types", None) or "").split(",") if t.strip()}


def _select_mix(environment: Environment) -> None:
    """Restrict the mix to --finq-types and to the types the server registers (only the rows
    wanted were sized, at start-up)."""
    wanted = _wanted_types(environment)
    mix = tuple(m for m in SIZED_MIX if not wanted or m.type in wanted)
    registered = _registered_types(environment)
    if registered is not None:
        missing = [m.type for m in mix if m.type not in registered]
        if missing:
            log.warning("the server does not register %s; left out of the mix", missing)
        mix = tuple(m for m in mix if m.type in registered)
    if not mix:
        raise SystemExit("no task type of the mix is available")
    STATE.mix = mix
    STATE.weights = tuple(m.weight for m in mix)
    log.info(
        "mix: %s (mean %.0f ms of CPU per task)",
        ", ".join(f"{m.type} x{m.weight}" for m in mix),
        mean_cpu_ms(mix),
    )


def _registered_types(environment: Environment) -> set[str] | None:
    host = environment.host or FinqUser.host or ""
    try:
        with urllib.request.urlopen(f"{host}/api/v1/task-types", timeout=10) as resp:
            return {t["name"] for t in json.load(resp)}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("could not list task types (%r); using the whole mix", exc)
        return None


_UI_TIMERS: list[gevent.Greenlet] = []


@events.test_start.add_listener
def _on_test_start(environment: Environment, **_: Any) -> None:
    global STATE
    previous = STATE
    STATE = RunState()
    try:
        _select_mix(environment)
        users = getattr(environment.parsed_options, "num_users", None) or 8
        ACCOUNTS.setup(
            environment.host or FinqUser.host or "",
            min(int(os.environ.get("LOADTEST_ACCOUNTS", "8")), users),
        )
    except SystemExit:
        STATE = previous
        raise
    # Bounded in time in the web UI too, even when a run is started without a run time:
    # --run-time (the script's DURATION) stops it.
    options = environment.parsed_options
    if (
        options is not None
        and not options.headless
        and options.run_time
        and environment.runner is not None
    ):
        _UI_TIMERS.append(gevent.spawn_later(options.run_time, environment.runner.stop))


def _cancel_ui_timers() -> None:
    for timer in _UI_TIMERS:
        if timer is not gevent.getcurrent():
            timer.kill(block=False)
    _UI_TIMERS.clear()


@events.test_stopping.add_listener
def _on_test_stopping(environment: Environment, **_: Any) -> None:
    STATE.stop_requested = time.time()


@events.test_stop.add_listener
def _on_test_stop(environment: Environment, **_: Any) -> None:
    """Users had `stop_timeout` seconds to see their last task finish: what is still
    outstanding now is lost."""
    now = time.perf_counter()
    for task_id, (type_, _, t0) in list(STATE.outstanding.items()):
        STATE.lost.append((type_, task_id))
        environment.events.request.fire(
            request_type="TASK",
            name=f"{type_} done",
            response_time=(now - t0) * 1000.0,
            response_length=0,
            exception=TaskLost(f"{type_} {task_id} never finished"),
            context={"task_id": task_id},
        )
    STATE.outstanding.clear()
    ACCOUNTS.teardown(environment.host or FinqUser.host or "")
    summary = summarize(STATE, environment)
    # Decided before the summary is written, so that its verdict and the exit code agree.
    runner = environment.runner
    if runner is not None and runner.exceptions:
        summary["problems"].append("errors in the locustfile (see the exceptions report)")
    if runner is not None and (errors := request_errors(runner.errors.values())):
        summary["problems"].append(f"{errors} failed request(s) (see the failures report)")
    path = _summary_path(environment)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(summary, indent=2) + "\n")

    def num(key: str, spec: str) -> str:  # "-" when nothing finished (no rate, no latency)
        return "-" if summary[key] is None else format(summary[key], spec)

    log.info(
        "tasks: %s completed (%s/s), %s failed, %s lost, %s rejected (%s throttled); "
        "latency p50 %s ms p95 %s ms p99 %s ms",
        summary["completed"],
        num("tasks_per_sec", ".2f"),
        summary["failed"],
        summary["lost"],
        summary["rejected"],
        summary["throttled"],
        num("p50_ms", ".0f"),
        num("p95_ms", ".0f"),
        num("p99_ms", ".0f"),
    )
    environment.process_exit_code = 1 if summary["problems"] else 0
    _cancel_ui_timers()


def request_errors(errors: Any) -> int:
    """Failed requests that the summary does not judge already: not the TASK entries (failed
    and lost tasks), not refused submissions (rejected ones are problems of their own) and no
    429 anywhere (the stack's rate limits doing their job: a throttled submission is counted
    as such, a throttled poll is simply tried again)."""
    return sum(
        e.occurrences
        for e in errors
        if e.method != "TASK"
        and e.name != "POST /api/v1/tasks"
        and not re.search(r"\b429\b", str(e.error))
    )


@events.quit.add_listener
def _on_quit(exit_code: int, **_: Any) -> None:
    if STATE.first_submit is not None:
        print(render_summary(summarize(STATE, None)), flush=True)


def _summary_path(environment: Environment) -> Path | None:
    options = environment.parsed_options
    if options is None:
        return None
    if options.finq_summary:
        return Path(options.finq_summary)
    if getattr(options, "csv_prefix", None):
        return Path(f"{options.csv_prefix}_tasks.json")
    return None


def summarize(state: RunState, environment: Environment | None) -> dict[str, Any]:
    """Completed tasks/s over [first submit, stop], latencies over every completed task."""
    end = state.stop_requested or time.time()
    window = max(1e-9, end - (state.first_submit or end))
    in_window = sum(1 for _, at, _ in state.done if at <= end)
    by_type: dict[str, dict[str, Any]] = {}
    for m in state.mix:
        lat = sorted(ms for t, _, ms in state.done if t == m.type)
        by_type[m.type] = {
            "completed": len(lat),
            "failed": sum(1 for t, _ in state.failed if t == m.type),
            "lost": sum(1 for t, _ in state.lost if t == m.type),
            "p50_ms": percentile(lat, 50),
            "p95_ms": percentile(lat, 95),
            "p99_ms": percentile(lat, 99),
        }
    lat = sorted(ms for _, _, ms in state.done)
    rate = in_window / window
    summary: dict[str, Any] = {
        "window_s": round(window, 3),
        "submitted": state.submitted,
        "completed": len(state.done),
        "completed_in_window": in_window,
        "tasks_per_sec": rate,
        "failed": len(state.failed),
        "lost": len(state.lost),
        "rejected": sum(state.rejected.values()),
        "rejected_by_status": state.rejected,
        "p50_ms": percentile(lat, 50),
        "p95_ms": percentile(lat, 95),
        "p99_ms": percentile(lat, 99),
        "max_ms": lat[-1] if lat else math.nan,
        "mean_cpu_ms_of_mix": mean_cpu_ms(state.mix),
        "mix_scale": scale_of(state.mix),
        "by_type": by_type,
        "failures": [f"{t}: {r}" for t, r in state.failed[:20]],
        "lost_ids": [i for _, i in state.lost[:50]],
        "problems": [],
    }
    minimum = environment.parsed_options.finq_min_tasks_per_sec if environment else 0.0
    summary["min_tasks_per_sec"] = minimum
    if state.failed:
        summary["problems"].append(f"{len(state.failed)} task(s) failed")
    if state.lost:
        summary["problems"].append(f"{len(state.lost)} task(s) lost")
    refused = {code: n for code, n in state.rejected.items() if code != "429"}
    summary["throttled"] = state.rejected.get("429", 0)
    if refused:
        summary["problems"].append(f"{sum(refused.values())} submission(s) rejected {refused}")
    if minimum and rate < minimum:
        summary["problems"].append(f"{rate:.2f} completed tasks/s < {minimum:g}")
    if not state.done:
        summary["problems"].append("no task completed")
    return _finite(summary)


def _finite(value: Any) -> Any:
    """JSON has no NaN: empty percentiles become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def render_summary(s: dict[str, Any]) -> str:
    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:,.0f}"

    lines = [
        f"{'task type':<22}{'done':>7}{'failed':>8}{'lost':>6}{'p50 ms':>9}"
        f"{'p95 ms':>9}{'p99 ms':>9}"
    ]
    for name, t in s["by_type"].items():
        lines.append(
            f"{name:<22}{t['completed']:>7}{t['failed']:>8}{t['lost']:>6}"
            f"{ms(t['p50_ms']):>9}{ms(t['p95_ms']):>9}{ms(t['p99_ms']):>9}"
        )
    lines.append(
        f"{'all':<22}{s['completed']:>7}{s['failed']:>8}{s['lost']:>6}"
        f"{ms(s['p50_ms']):>9}{ms(s['p95_ms']):>9}{ms(s['p99_ms']):>9}"
    )
    lines.append(
        f"completed tasks/s: {s['tasks_per_sec']:.2f} over {s['window_s']:.1f} s "
        f"(first submit to stop); submitted {s['submitted']}, rejected {s['rejected']}"
        f" (of which throttled by the rate limits, 429: {s.get('throttled', 0)})"
    )
    if s.get("mix_scale"):
        lines.append(f"mix sized for this machine (MIX_SCALE): {s['mix_scale']}")
    return "\n".join(lines)
