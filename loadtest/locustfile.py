"""Locust load model of finq: users that submit a realistic mix of calculations and follow
each one to its end.

    scripts/loadtest.sh            (make loadtest)     headless, CSV + HTML under $RUN_DIR/loadtest
    scripts/loadtest.sh --ui       (make loadtest-ui)  the web UI on 127.0.0.1:8089

Each simulated user submits a task drawn from `MIX` (finq_load/mix.py), follows it to a final
status over Server-Sent Events (falling back to polling with backoff when a stream breaks),
records how long it took from submit to done, and submits the next one: a closed loop, so
`--users` is the number of tasks in flight and the test measures the stack's capacity rather
than a fixed rate.

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

from finq_load import hooks
from finq_load.options import add_options
from finq_load.user import FinqUser
from locust import events

__all__ = ["FinqUser"]  # the user class Locust runs, found in this module's namespace

events.init_command_line_parser.add_listener(add_options)
events.init.add_listener(hooks.on_init)
events.test_start.add_listener(hooks.on_test_start)
events.test_stopping.add_listener(hooks.on_test_stopping)
events.test_stop.add_listener(hooks.on_test_stop)
events.quit.add_listener(hooks.on_quit)
