"""Locust event hooks: pick the mix, count what is left at the end, write the summary, exit code."""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.request
from pathlib import Path
from typing import Any

import gevent
from locust.env import Environment

from .accounts import ACCOUNTS
from .mix import MIX, mean_cpu_ms
from .sizing import SCALABLE, scaled_mix
from .state import RUN, RunState, TaskLost
from .summary import render_summary, request_errors, summarize
from .target import is_loopback, stack_info
from .user import FinqUser

log = logging.getLogger("finq.loadtest")


def on_init(environment: Environment, **_: Any) -> None:
    if not FinqUser.host and not environment.host:
        port = os.environ.get("HTTP_PORT") or stack_info().get("HTTP_PORT") or "8080"
        FinqUser.host = f"http://127.0.0.1:{port}"
    host = environment.host or FinqUser.host or ""
    if not is_loopback(host) and os.environ.get("FINQ_ALLOW_REMOTE") != "1":
        raise SystemExit(
            f"refusing to load {host}: only 127.0.0.1 (FINQ_ALLOW_REMOTE=1 to override)"
        )
    if not environment.stop_timeout:
        environment.stop_timeout = 30.0  # the grace period: in-flight tasks may finish
    # Sized once, when Locust starts: timing the rows takes a few seconds, which must not eat
    # into a run's --run-time (nor happen again at every start in the web UI).
    options = environment.parsed_options
    wanted = _wanted_types(environment)
    try:
        RUN.sized_mix = scaled_mix(
            str(options.finq_mix_scale or "auto") if options else "auto",
            tuple(m for m in MIX if not wanted or m.type in wanted),
        )
    except ValueError as exc:
        raise SystemExit(f"MIX_SCALE: {exc}") from None
    for m in RUN.sized_mix:
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
    mix = tuple(m for m in RUN.sized_mix if not wanted or m.type in wanted)
    registered = _registered_types(environment)
    if registered is not None:
        missing = [m.type for m in mix if m.type not in registered]
        if missing:
            log.warning("the server does not register %s; left out of the mix", missing)
        mix = tuple(m for m in mix if m.type in registered)
    if not mix:
        raise SystemExit("no task type of the mix is available")
    RUN.state.mix = mix
    RUN.state.weights = tuple(m.weight for m in mix)
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


def on_test_start(environment: Environment, **_: Any) -> None:
    previous = RUN.state
    RUN.state = RunState()
    try:
        _select_mix(environment)
        users = getattr(environment.parsed_options, "num_users", None) or 8
        ACCOUNTS.setup(
            environment.host or FinqUser.host or "",
            min(int(os.environ.get("LOADTEST_ACCOUNTS", "8")), users),
        )
    except SystemExit:
        RUN.state = previous
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


def on_test_stopping(environment: Environment, **_: Any) -> None:
    RUN.state.stop_requested = time.time()


def on_test_stop(environment: Environment, **_: Any) -> None:
    """Users had `stop_timeout` seconds to see their last task finish: what is still
    outstanding now is lost."""
    _count_lost(environment)
    ACCOUNTS.teardown(environment.host or FinqUser.host or "")
    summary = summarize(RUN.state, environment)
    # Decided before the summary is written, so that its verdict and the exit code agree.
    _judge_runner(environment, summary)
    path = _summary_path(environment)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(summary, indent=2) + "\n")
    _log_summary(summary)
    environment.process_exit_code = 1 if summary["problems"] else 0
    _cancel_ui_timers()


def _count_lost(environment: Environment) -> None:
    """Every task still outstanding becomes a lost one, and a failed TASK entry."""
    now = time.perf_counter()
    for task_id, (type_, _, t0) in list(RUN.state.outstanding.items()):
        RUN.state.lost.append((type_, task_id))
        environment.events.request.fire(
            request_type="TASK",
            name=f"{type_} done",
            response_time=(now - t0) * 1000.0,
            response_length=0,
            exception=TaskLost(f"{type_} {task_id} never finished"),
            context={"task_id": task_id},
        )
    RUN.state.outstanding.clear()


def _judge_runner(environment: Environment, summary: dict[str, Any]) -> None:
    """Errors in the locustfile and failed requests are problems of the run too."""
    runner = environment.runner
    if runner is not None and runner.exceptions:
        summary["problems"].append("errors in the locustfile (see the exceptions report)")
    if runner is not None and (errors := request_errors(runner.errors.values())):
        summary["problems"].append(f"{errors} failed request(s) (see the failures report)")


def _log_summary(summary: dict[str, Any]) -> None:
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


def on_quit(exit_code: int, **_: Any) -> None:
    if RUN.state.first_submit is not None:
        print(render_summary(summarize(RUN.state, None)), flush=True)


def _summary_path(environment: Environment) -> Path | None:
    options = environment.parsed_options
    if options is None:
        return None
    if options.finq_summary:
        return Path(options.finq_summary)
    if getattr(options, "csv_prefix", None):
        return Path(f"{options.csv_prefix}_tasks.json")
    return None
