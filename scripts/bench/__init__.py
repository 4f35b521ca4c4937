"""The full-stack benchmark (`make bench`): one fresh local stack, five figures, one table.

Starts its own stack (scripts/localstack.py, free ports, runtime folder .run/bench/stack, rate
limits off, nginx's per-address limit raised: every request comes from 127.0.0.1), measures,
and always stops it. All figures come from the same run:

  1. bare ceiling: no-op Celery tasks (scripts/bench_noop.py: finq's Celery configuration,
     workers started with finq-service's flags) sent straight into the stack's redis-server;
  2. the full stack with a no-op-sized task (a 1-year loan) submitted over HTTP through nginx
     with a bearer token, recorded in the database and completed by the workers; ratio to (1);
  3. the CPU-bound mix of loadtest/finq_load/mix.py, sized for this machine like the load test
     (MIX_SCALE, default auto): completed tasks/s and efficiency = (sum of each task's CPU
     time measured alone on one core) / (wall time x cores);
  4. submit latency through nginx at a fixed offered rate (open loop), with GET and readiness
     probes beside it: workers busy (pool at nice 0, the baseline, at WORKER_NICE and under
     SCHED_IDLE) and stopped (scripts/bench/latency.py);
  5. scaling: the mix with 1, 2, 3, 4 worker replicas (chart: docs/scaling.png).

Throughput is a batch: N tasks submitted as fast as the stack accepts them (a fixed number of
connections), rate = N / (first submit .. last `finished_at`), so submitting and running share
the machine as they do in production. Per-process CPU is sampled around every phase (what
limits each figure), and with py-spy installed the hottest API and worker processes are
profiled. Prints the table and writes it, with its method, to docs/performance.md
(section "Full stack (make bench)") and docs/scaling.png.

Options: --quick (small batches, for a smoke run), --repeats N, --no-docs, --latency-only
(figure 4 alone, printed only), --postgres (a throwaway PostgreSQL cluster instead of SQLite)
or --database-url; the stack's environment passes through (GUNICORN_WORKERS,
WORKER_CONCURRENCY, WORKER_NICE, WORKER_SCHED_IDLE, API_REPLICAS, LOG_LEVEL...).
"""
