"""Gunicorn settings for one API replica, from `ApiServerSettings` (finq_core.config)."""

import os
import signal

from finq_core.config import get_api_server_settings, get_settings

_server = get_api_server_settings()

bind = _server.api_bind
workers = _server.gunicorn_workers
worker_class = "uvicorn.workers.UvicornWorker"
# nginx keeps connections to us open; hold them a little longer than nginx does so that
# nginx, not gunicorn, closes an idle keepalive connection (avoids a race that yields 502).
keepalive = _server.gunicorn_keepalive
timeout = _server.gunicorn_timeout
graceful_timeout = _server.gunicorn_graceful_timeout
max_requests = _server.gunicorn_max_requests
max_requests_jitter = 100
accesslog = None  # nginx writes the access log; the app logs errors as JSON
errorlog = "-"
loglevel = get_settings().log_level.lower()
proc_name = _server.api_name or "finq-api"
forwarded_allow_ips = _server.forwarded_allow_ips


def child_exit(server: object, worker: object) -> None:
    """Drop a dead worker's live gauges from the replica's multiprocess metrics."""
    from finq_core.metrics import mark_process_dead

    mark_process_dead(worker.pid)  # type: ignore[attr-defined]


def post_worker_init(worker: object) -> None:
    """Under the test suite's coverage, save this worker's data before a SIGTERM ends it
    (uvicorn re-raises the signal after its shutdown, with the default handler in place)."""
    try:
        import coverage
    except ImportError:
        return
    measuring = coverage.Coverage.current()
    if measuring is None:
        return

    def _save_then_exit(signum: int, _frame: object) -> None:
        measuring.stop()
        measuring.save()
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    signal.signal(signal.SIGTERM, _save_then_exit)
