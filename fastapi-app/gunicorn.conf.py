"""Gunicorn settings for one API replica; every value can be overridden from the environment."""

import os

bind = os.environ.get("API_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", "1"))
worker_class = "uvicorn.workers.UvicornWorker"
# nginx keeps connections to us open; hold them a little longer than nginx does so that
# nginx, not gunicorn, closes an idle keepalive connection (avoids a race that yields 502).
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "75"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "60"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "20"))
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "0"))
max_requests_jitter = 100
accesslog = None  # nginx writes the access log; the app logs errors as JSON
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
proc_name = os.environ.get("API_NAME", "finq-api")
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")


def child_exit(server: object, worker: object) -> None:
    """Drop a dead worker's live gauges from the replica's multiprocess metrics."""
    from finq_core.metrics import mark_process_dead

    mark_process_dead(worker.pid)  # type: ignore[attr-defined]
