"""The benchmark's section of docs/performance.md: its method, and its results block."""

from __future__ import annotations

from .config import BEGIN, DOC, END, SECTION

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
- (3) the Locust mix (`loadtest/finq_load/mix.py`, one table), each row's CPU time measured
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
- (4) open loop (scripts/bench/openloop.py): requests leave at fixed times whatever the answers
  (latency counted from the scheduled time, so a stall cannot hide the requests queued behind
  it), 1-year loan submits at 100 and 200 req/s, and beside them `GET /api/v1/tasks/{id}` and
  `/health/ready` at a tenth of that rate each (at least 5/s), sent from an account made for
  the step (a submit counts its caller's queued tasks, so one account would make every later
  step dearer); the first second is discarded, an answer later than 5 s counts as unanswered.
  Workers busy: a backlog of the mix's CPU-bound
  rows (Monte Carlo option and VaR, priority `high`) is topped up before every step so that
  every pool process has a task throughout (the "backlog left" in the log stays above zero;
  the light submits wait on `normal` behind it), and each step runs once per pool priority:
  nice 0 (the baseline: the pool at the API's priority), the stack's `WORKER_NICE`, and
  `SCHED_IDLE` when the stack sets `WORKER_SCHED_IDLE` (the default), each going first in
  turn, so their ratios compare moments of the same run. Then the workers
  stopped (the submit path alone). Each step notes the 1-minute load average when it began:
  on a shared machine that says how far to trust it. `--latency-only` runs just this figure.
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
