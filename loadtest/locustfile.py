"""Locust load model of finq: users that submit a realistic mix of calculations and follow
each one to its end.

    scripts/loadtest.sh            (make loadtest)     headless, CSV + HTML under $RUN_DIR/loadtest
    scripts/loadtest.sh --ui       (make loadtest-ui)  the web UI on 127.0.0.1:8089

A closed loop: each user submits a task drawn from the mix (finq_load/mix.py), follows it to
its end and submits the next. The model lives in the finq_load package; this file wires it into
Locust. What a run reports and when it fails: docs/performance.md, "Load test".
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
