"""The local stack's settings: its ports, its generated secrets and the services' environment,
resolved once by `localstack.py up` and kept in the runtime folder's stack.json."""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import string
import sys
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent

# Finq settings passed through to the services when the caller exported them (.env.example).
PASSED_THROUGH_ENV = (
    "ACCESS_TOKEN_EXPIRE_MINUTES",
    "LOG_JSON",
    "DEFAULT_TASK_TIMEOUT",
    "MAX_RETRY_ATTEMPTS",
    "RESULT_TTL_DAYS",
    "PROGRESS_INTERVAL_SECONDS",
    "CORS_ORIGINS",
    "TRUSTED_PROXIES",
    "RATE_LIMIT_SUBMIT",
    "RATE_LIMIT_LOGIN",
    "RATE_LIMIT_GLOBAL",
    "RATE_LIMIT_ENABLED",
    "QUOTA_QUEUED_TASKS",
    "QUOTA_SCHEDULES",
    "QUOTA_RUNNING_TASKS",
    "SCHEDULE_MIN_INTERVAL",
    "HIGH_PRIORITY_ROLES",
    "TASK_EVENTS",
    "BROKER_REPAIR_GRACE_SECONDS",
    "BROKER_REPAIR_INTERVAL_SECONDS",
    "BROKER_REPAIR_SCAN_BUDGET",
    "WORKER_QUEUES",
    "UPLOAD_MAX_BYTES",
    "BATCH_MAX_ITEMS",
    "QUOTA_BATCH_ITEMS",
    "BATCH_CHUNK_SECONDS",
    "BATCH_CHUNKS_IN_FLIGHT",
    "UPLOAD_MAX_ASSETS",
    "UPLOAD_MAX_ROWS",
    "WEBHOOK_ALLOW_PRIVATE",
    "NOTIFY_TIMEOUT_SECONDS",
    "NOTIFY_MAX_ATTEMPTS",
    "SMTP_HOST",
    "SMTP_PORT",
    "SMTP_TLS",
    "SMTP_USERNAME",
    "SMTP_PASSWORD",
    "SMTP_FROM",
    "SMTP_CA_FILE",
    "RESULT_MAX_BYTES",
    "RESULT_INLINE_MAX_BYTES",
    "QUOTA_RESULT_BYTES",
    "STREAMS_PER_USER",
    "STREAM_MAX_SECONDS",
    "STREAM_TICKET_SECONDS",
)
# What each service process is given (plus PATH), as compose does for its containers.
SERVICE_ENV = (
    "APP_ENV",
    "APP_SECRET_KEY",
    "ADMIN_USERNAME",
    "ADMIN_PASSWORD",
    "DATABASE_URL",
    "REDIS_URL",
    "FLOWER_BASIC_AUTH",
    "LOG_LEVEL",
    "MAX_BODY_BYTES",
    "TASK_BODY_MAX_BYTES",
    "BATCH_BODY_MAX_BYTES",
    "WORKER_CONCURRENCY",
    "WORKER_NICE",
    "WORKER_SCHED_IDLE",
    "GUNICORN_WORKERS",
    "API_MAX_IN_FLIGHT",
    "WEBHOOK_SECRET",
    *PASSED_THROUGH_ENV,
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _secret(run_dir: Path, name: str, length: int = 24) -> str:
    """A random secret generated once per runtime folder and kept there (mode 600)."""
    path = run_dir / "secrets" / name
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    alphabet = string.ascii_letters + string.digits
    value = "".join(secrets.choice(alphabet) for _ in range(length))
    path.write_text(value + "\n")
    path.chmod(0o600)
    return value


def resolve(run_dir: Path, args: argparse.Namespace) -> dict[str, str]:
    """The stack's settings from the command line, the caller's environment and defaults."""
    env = os.environ
    rd = run_dir
    http_port = args.http_port or int(env.get("HTTP_PORT", "8080"))
    redis_port = args.redis_port or int(env.get("REDIS_PORT", "6380"))
    api_base = args.api_base_port or int(env.get("API_BASE_PORT", "8001"))
    flower_port = args.flower_port or int(env.get("FLOWER_PORT", "5555"))
    if args.free_ports:
        http_port, redis_port, flower_port = free_port(), free_port(), free_port()
        api_base = 0
    api_replicas = args.api_replicas or int(env.get("API_REPLICAS", "3"))
    worker_replicas = args.worker_replicas or int(env.get("WORKER_REPLICAS", "3"))
    api_ports = (
        [free_port() for _ in range(api_replicas)]
        if api_base == 0
        else [api_base + i for i in range(api_replicas)]
    )
    metrics_base = int(env.get("WORKER_METRICS_BASE_PORT", "9808"))
    metrics_ports = (
        [free_port() for _ in range(worker_replicas)]
        if args.free_ports
        else [metrics_base + i for i in range(worker_replicas)]
    )
    beat_metrics_port = free_port() if args.free_ports else metrics_base + worker_replicas
    admin_user = env.get("ADMIN_USERNAME") or "admin"
    s = {
        "RUN_DIR": str(rd),
        "HTTP_PORT": str(http_port),
        "REDIS_PORT": str(redis_port),
        "FLOWER_PORT": str(flower_port),
        "API_PORTS": ",".join(map(str, api_ports)),
        "WORKER_METRICS_PORTS": ",".join(map(str, metrics_ports)),
        "BEAT_METRICS_PORT": str(beat_metrics_port),
        "API_REPLICAS": str(api_replicas),
        "WORKER_REPLICAS": str(worker_replicas),
        # The service environment: the same variables compose passes to its containers.
        "APP_ENV": env.get("APP_ENV", "development"),
        "APP_SECRET_KEY": env.get("APP_SECRET_KEY") or _secret(rd, "app_secret_key", 48),
        "ADMIN_USERNAME": admin_user,
        "ADMIN_PASSWORD": env.get("ADMIN_PASSWORD") or _secret(rd, "admin_password"),
        "DATABASE_URL": env.get("DATABASE_URL") or f"sqlite:///{rd}/data/finq.db",
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "FLOWER_BASIC_AUTH": env.get("FLOWER_BASIC_AUTH")
        or f"admin:{_secret(rd, 'flower_password')}",
        "LOG_LEVEL": env.get("LOG_LEVEL", "INFO"),
        "MAX_BODY_BYTES": env.get("MAX_BODY_BYTES", "65536"),
        "TASK_BODY_MAX_BYTES": env.get("TASK_BODY_MAX_BYTES", "16777216"),
        "BATCH_BODY_MAX_BYTES": env.get("BATCH_BODY_MAX_BYTES", "33554432"),
        "NGINX_RATE_PER_IP": env.get("NGINX_RATE_PER_IP", "300r/s"),
        "WORKER_CONCURRENCY": env.get("WORKER_CONCURRENCY", "4"),
        "WORKER_NICE": env.get("WORKER_NICE", "10"),
        "WORKER_SCHED_IDLE": env.get("WORKER_SCHED_IDLE", "true"),
        "GUNICORN_WORKERS": env.get("GUNICORN_WORKERS", "1"),
        "API_MAX_IN_FLIGHT": env.get("API_MAX_IN_FLIGHT", "64"),
        # Signs webhook notifications; generated once per runtime folder like the others.
        "WEBHOOK_SECRET": env.get("WEBHOOK_SECRET") or _secret(rd, "webhook_secret", 48),
    }
    s.update(_tls(env, args))
    for key in PASSED_THROUGH_ENV:
        if key in env:
            s[key] = env[key]
    return s


def _tls(env: Mapping[str, str], args: argparse.Namespace) -> dict[str, str]:
    """HTTPS at nginx when both a certificate and its key are given (kept as absolute paths), on
    HTTPS_PORT (8443; a free one with --free-ports); else nothing: plain HTTP as before."""
    cert, key = env.get("TLS_CERT_FILE", ""), env.get("TLS_KEY_FILE", "")
    if not cert and not key:
        return {}
    if not (cert and key):
        raise SystemExit("TLS_CERT_FILE and TLS_KEY_FILE go together: set both or neither")
    for name, path in (("TLS_CERT_FILE", cert), ("TLS_KEY_FILE", key)):
        if not Path(path).is_file():
            raise SystemExit(f"{name}: no such file: {path}")
    port = free_port() if args.free_ports else int(env.get("HTTPS_PORT", "8443"))
    return {
        "TLS_CERT_FILE": str(Path(cert).resolve()),
        "TLS_KEY_FILE": str(Path(key).resolve()),
        "HTTPS_PORT": str(port),
    }


def public_url(s: dict[str, str]) -> str:
    """Where clients reach nginx: HTTPS when the stack has a certificate, else plain HTTP."""
    if "HTTPS_PORT" in s:
        return f"https://127.0.0.1:{s['HTTPS_PORT']}"
    return f"http://127.0.0.1:{s['HTTP_PORT']}"


def service_env(s: dict[str, str]) -> dict[str, str]:
    """The environment every service process of the stack starts with."""
    env = {k: s[k] for k in SERVICE_ENV if k in s}
    env["PATH"] = f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}"
    env["PYTHONUNBUFFERED"] = "1"
    return env
