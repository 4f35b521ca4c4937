#!/usr/bin/env python3
"""The local stack: the compose topology as plain processes under supervisor.

    localstack.py up [--api-replicas N] [--worker-replicas N] [--http-port P] ...
    localstack.py down | status | logs | env

Same nginx configuration (nginx/finq.conf.template), same service commands
(deploy/finq-service), same environment variables as docker-compose.yml; its own redis-server
(AOF on) and SQLite database, everything under one runtime folder (default .run/). The tests
start throwaway stacks on free ports through this same script.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import string
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _envsubst(template: Path, values: dict[str, str]) -> str:
    """Substitute exactly the given names, like `envsubst` with a variable list."""
    text = template.read_text()
    for key, value in values.items():
        text = text.replace("${" + key + "}", value)
    return text


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


def _running(pid: int) -> bool:
    """A process of ours with this pid exists (another user's is a reused pid, not ours)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


class Stack:
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir.resolve()
        self.state_file = self.run_dir / "stack.json"

    # -- configuration ------------------------------------------------------------------
    def settings(self, args: argparse.Namespace) -> dict[str, str]:
        env = os.environ
        rd = self.run_dir
        http_port = args.http_port or int(env.get("HTTP_PORT", "8080"))
        redis_port = args.redis_port or int(env.get("REDIS_PORT", "6380"))
        api_base = args.api_base_port or int(env.get("API_BASE_PORT", "8001"))
        flower_port = args.flower_port or int(env.get("FLOWER_PORT", "5555"))
        if args.free_ports:
            http_port, redis_port, flower_port = _free_port(), _free_port(), _free_port()
            api_base = 0
        api_replicas = args.api_replicas or int(env.get("API_REPLICAS", "3"))
        worker_replicas = args.worker_replicas or int(env.get("WORKER_REPLICAS", "3"))
        api_ports = (
            [_free_port() for _ in range(api_replicas)]
            if api_base == 0
            else [api_base + i for i in range(api_replicas)]
        )
        metrics_base = int(env.get("WORKER_METRICS_BASE_PORT", "9808"))
        metrics_ports = (
            [_free_port() for _ in range(worker_replicas)]
            if args.free_ports
            else [metrics_base + i for i in range(worker_replicas)]
        )
        admin_user = env.get("ADMIN_USERNAME") or "admin"
        s = {
            "RUN_DIR": str(rd),
            "HTTP_PORT": str(http_port),
            "REDIS_PORT": str(redis_port),
            "FLOWER_PORT": str(flower_port),
            "API_PORTS": ",".join(map(str, api_ports)),
            "WORKER_METRICS_PORTS": ",".join(map(str, metrics_ports)),
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
            "MAX_BODY_BYTES": env.get("MAX_BODY_BYTES", "16777216"),
            "NGINX_RATE_PER_IP": env.get("NGINX_RATE_PER_IP", "300r/s"),
            "WORKER_CONCURRENCY": env.get("WORKER_CONCURRENCY", "4"),
            "GUNICORN_WORKERS": env.get("GUNICORN_WORKERS", "1"),
            # Signs webhook notifications; generated once per runtime folder like the others.
            "WEBHOOK_SECRET": env.get("WEBHOOK_SECRET") or _secret(rd, "webhook_secret", 48),
        }
        # Pass through every other finq setting the caller exported (see .env.example).
        for key in (
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
            "TASK_EVENTS",
            "WORKER_QUEUES",
            *self.NOTIFY_AND_UPLOAD_ENV,
        ):
            if key in env:
                s[key] = env[key]
        return s

    NOTIFY_AND_UPLOAD_ENV = (
        "UPLOAD_MAX_BYTES",
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
    )
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
        "WORKER_CONCURRENCY",
        "GUNICORN_WORKERS",
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
        "WEBHOOK_SECRET",
        "TASK_EVENTS",
        "WORKER_QUEUES",
        *NOTIFY_AND_UPLOAD_ENV,
    )

    def service_env(self, s: dict[str, str]) -> dict[str, str]:
        env = {k: s[k] for k in self.SERVICE_ENV if k in s}
        env["PATH"] = f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}"
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def render(self, s: dict[str, str]) -> None:
        rd = self.run_dir
        for sub in ("logs", "data", "redis", "nginx", "nginx/client_temp", "supervisor"):
            (rd / sub).mkdir(parents=True, exist_ok=True)
        (rd / "redis" / "redis.conf").write_text(
            "\n".join(
                [
                    "bind 127.0.0.1",
                    f"port {s['REDIS_PORT']}",
                    f"dir {rd / 'redis'}",
                    "appendonly yes",
                    "appendfsync everysec",
                    'save ""',
                    "daemonize no",
                    "protected-mode yes",
                    "loglevel notice",
                    "",
                ]
            )
        )
        servers = "\n".join(
            f"  server 127.0.0.1:{p} max_fails=1 fail_timeout=2s;"
            for p in s["API_PORTS"].split(",")
        )
        (rd / "nginx" / "upstream.conf").write_text(
            _envsubst(ROOT / "nginx" / "upstream.static.template", {"SERVERS": servers})
        )
        max_body = int(s["MAX_BODY_BYTES"])
        (rd / "nginx" / "finq.conf").write_text(
            _envsubst(
                ROOT / "nginx" / "finq.conf.template",
                {
                    "LISTEN_PORT": f"127.0.0.1:{s['HTTP_PORT']}",
                    "UPSTREAM_CONF": str(rd / "nginx" / "upstream.conf"),
                    "FLOWER_UPSTREAM": f"127.0.0.1:{s['FLOWER_PORT']}",
                    "ACCESS_LOG": str(rd / "logs" / "nginx-access.log"),
                    "BODY_LIMIT": f"{max(1, max_body // 1024)}k",
                    "RATE_PER_IP": s["NGINX_RATE_PER_IP"],
                },
            )
        )
        (rd / "nginx" / "nginx.conf").write_text(
            _envsubst(
                ROOT / "nginx" / "nginx.local.conf.template",
                {"RUN_DIR": str(rd), "NGINX_USER": "user root;" if os.geteuid() == 0 else ""},
            )
        )
        self._render_supervisor(s)

    def _render_supervisor(self, s: dict[str, str]) -> None:
        rd = self.run_dir
        svc = ROOT / "deploy" / "finq-service"
        env = self.service_env(s)

        def env_line(extra: dict[str, str]) -> str:
            merged = {**env, **extra}
            return ",".join(
                f'{k}="{v.replace("%", "%%").replace(chr(34), "")}"' for k, v in merged.items()
            )

        def program(
            name: str, command: str, extra: dict[str, str], stopwait: int = 20, priority: int = 100
        ) -> str:
            return "\n".join(
                [
                    f"[program:{name}]",
                    f"command={command}",
                    f"directory={ROOT}",
                    f"environment={env_line(extra)}",
                    "autostart=true",
                    "autorestart=true",
                    "startsecs=2",
                    "startretries=10",
                    "stopasgroup=true",
                    "killasgroup=true",
                    f"stopwaitsecs={stopwait}",
                    f"priority={priority}",
                    "redirect_stderr=true",
                    f"stdout_logfile={rd / 'logs' / (name + '.log')}",
                    "stdout_logfile_maxbytes=20MB",
                    "stdout_logfile_backups=2",
                    "",
                ]
            )

        blocks = [
            "[unix_http_server]",
            f"file={rd / 'supervisor' / 'supervisor.sock'}",
            "chmod=0700",
            "",
            "[supervisord]",
            f"logfile={rd / 'logs' / 'supervisord.log'}",
            f"pidfile={rd / 'supervisor' / 'supervisord.pid'}",
            f"directory={ROOT}",
            "minfds=4096",
            "",
            "[rpcinterface:supervisor]",
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
            "",
            "[supervisorctl]",
            f"serverurl=unix://{rd / 'supervisor' / 'supervisor.sock'}",
            "",
            program("redis", f"redis-server {rd / 'redis' / 'redis.conf'}", {}, 30, 10),
        ]
        api_names, worker_names = [], []
        for i, port in enumerate(s["API_PORTS"].split(","), start=1):
            name = f"api-{i}"
            api_names.append(name)
            blocks.append(
                program(
                    name, f"{svc} api", {"API_BIND": f"127.0.0.1:{port}", "API_NAME": name}, 25, 50
                )
            )
        for i, mport in enumerate(s["WORKER_METRICS_PORTS"].split(","), start=1):
            name = f"worker-{i}"
            worker_names.append(name)
            blocks.append(
                program(
                    name,
                    f"{svc} worker",
                    {
                        "WORKER_NAME": f"worker{i}@%h",
                        "WORKER_METRICS_PORT": mport,
                        "WORKER_METRICS_ADDRESS": "127.0.0.1",
                    },
                    90,
                    60,
                )
            )
        blocks.append(program("beat", f"{svc} beat", {}, 10, 70))
        blocks.append(
            program(
                "flower",
                f"{svc} flower",
                {"FLOWER_ADDRESS": "127.0.0.1", "FLOWER_PORT": s["FLOWER_PORT"]},
                10,
                80,
            )
        )
        nginx_bin = shutil.which("nginx") or "/usr/sbin/nginx"
        blocks.append(
            program(
                "nginx",
                f"{nginx_bin} -c {rd / 'nginx' / 'nginx.conf'} -p {rd / 'nginx'}/",
                {},
                10,
                90,
            )
        )
        blocks += [
            "[group:api]",
            f"programs={','.join(api_names)}",
            "",
            "[group:workers]",
            f"programs={','.join(worker_names)}",
            "",
        ]
        path = rd / "supervisor" / "supervisord.conf"
        path.write_text("\n".join(blocks))
        path.chmod(0o600)

    # -- lifecycle ------------------------------------------------------------------------
    def supervisorctl(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                str(VENV_BIN / "supervisorctl"),
                "-c",
                str(self.run_dir / "supervisor" / "supervisord.conf"),
                *args,
            ],
            capture_output=True,
            text=True,
            check=check,
        )

    def running(self) -> bool:
        pidfile = self.run_dir / "supervisor" / "supervisord.pid"
        if not pidfile.exists():
            return False
        try:
            return _running(int(pidfile.read_text().strip()))
        except ValueError:
            return False

    def up(self, args: argparse.Namespace) -> dict[str, str]:
        if self.running():
            raise SystemExit(f"a stack is already running from {self.run_dir}; `make stop` first")
        s = self.settings(args)
        busy = [
            p
            for p in (
                s["HTTP_PORT"],
                s["REDIS_PORT"],
                s["FLOWER_PORT"],
                *s["API_PORTS"].split(","),
                *s["WORKER_METRICS_PORTS"].split(","),
            )
            if not _port_free(int(p))
        ]
        if busy:
            raise SystemExit(
                f"ports in use: {', '.join(busy)} (set HTTP_PORT, REDIS_PORT, "
                "API_BASE_PORT, FLOWER_PORT, WORKER_METRICS_BASE_PORT or stop "
                "what holds them)"
            )
        self.render(s)
        self.state_file.write_text(json.dumps(s, indent=2))
        self.state_file.chmod(0o600)
        started = time.monotonic()
        # Migrations first (one-shot, like compose's `migrate` service).
        subprocess.run(
            [str(ROOT / "deploy" / "finq-service"), "migrate"],
            check=True,
            env={**os.environ, **self.service_env(s)},
            cwd=ROOT,
        )
        subprocess.run(
            [
                str(VENV_BIN / "supervisord"),
                "-c",
                str(self.run_dir / "supervisor" / "supervisord.conf"),
            ],
            check=True,
            cwd=ROOT,
        )
        self.wait_ready(s, timeout=args.timeout)
        s["STARTUP_SECONDS"] = f"{time.monotonic() - started:.1f}"
        self.state_file.write_text(json.dumps(s, indent=2))
        return s

    def wait_ready(self, s: dict[str, str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        base = f"http://127.0.0.1:{s['HTTP_PORT']}"
        want = [f"http://127.0.0.1:{p}/health/ready" for p in s["API_PORTS"].split(",")]
        want.append(base + "/health/ready")
        pending = list(want)
        while pending and time.monotonic() < deadline:
            url = pending[0]
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status == 200:
                        pending.pop(0)
                        continue
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.3)
        if pending:
            print(self.supervisorctl("status").stdout, file=sys.stderr)
            raise SystemExit(f"stack not ready after {timeout:.0f}s: {pending[0]}")
        # Workers: every worker process group reports RUNNING and beats (finq_core.presence).
        while time.monotonic() < deadline:
            if self._workers_online(s) >= int(s["WORKER_REPLICAS"]):
                return
            time.sleep(0.5)
        raise SystemExit(f"workers not online after {timeout:.0f}s")

    def _workers_online(self, s: dict[str, str]) -> int:
        """Workers with a live heartbeat (the count the API reports, finq_core.presence) whose
        process is running: Redis keeps its data across restarts (AOF), and a worker killed by
        the last `down` would count for a few seconds more."""
        import redis  # the venv has them

        from finq_core import presence

        try:
            alive = presence.online(redis.Redis.from_url(s["REDIS_URL"], socket_timeout=2))
        except redis.RedisError:
            return 0
        return sum(1 for info in alive.values() if _running(int(info.get("pid", 0))))

    def down(self, timeout: float = 120) -> None:
        if not self.running():
            print(f"no stack running from {self.run_dir}")
            return
        pid = int((self.run_dir / "supervisor" / "supervisord.pid").read_text().strip())
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _running(pid):
                print("stack stopped")
                return
            time.sleep(0.2)
        raise SystemExit(f"supervisord {pid} did not stop within {timeout:.0f}s")


def _print_urls(s: dict[str, str]) -> None:
    base = f"http://127.0.0.1:{s['HTTP_PORT']}"
    flower_user, _, flower_pw = s["FLOWER_BASIC_AUTH"].partition(":")
    print(f"""
finq is up in {s.get("STARTUP_SECONDS", "?")} s ({s["API_REPLICAS"]} API replicas, \
{s["WORKER_REPLICAS"]} workers x {s["WORKER_CONCURRENCY"]} processes)
  web page / API   {base}/
  Swagger UI       {base}/docs
  health           {base}/health/ready
  Flower           {base}/flower/  and  http://127.0.0.1:{s["FLOWER_PORT"]}/flower/ \
(user {flower_user}, password {flower_pw})
  admin account    {s["ADMIN_USERNAME"]} / {s["ADMIN_PASSWORD"]}
  runtime folder   {s["RUN_DIR"]}   (logs: make logs, processes: make status)
""")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["up", "down", "status", "logs", "env"])
    parser.add_argument("--run-dir", default=os.environ.get("RUN_DIR", str(ROOT / ".run")))
    parser.add_argument("--api-replicas", type=int)
    parser.add_argument("--worker-replicas", type=int)
    parser.add_argument("--http-port", type=int)
    parser.add_argument("--redis-port", type=int)
    parser.add_argument("--api-base-port", type=int)
    parser.add_argument("--flower-port", type=int)
    parser.add_argument("--free-ports", action="store_true", help="pick free ports (tests)")
    parser.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args()
    stack = Stack(Path(args.run_dir))
    if args.command == "up":
        _print_urls(stack.up(args))
    elif args.command == "down":
        stack.down()
    elif args.command == "status":
        if not stack.running():
            print(f"no stack running from {stack.run_dir}")
            return 3
        out = stack.supervisorctl("status")
        print(out.stdout, end="")
    elif args.command == "logs":
        logs = sorted((stack.run_dir / "logs").glob("*.log"))
        os.execvp("tail", ["tail", "-n", "20", "-F", *map(str, logs)])
    elif args.command == "env":
        print(stack.state_file.read_text() if stack.state_file.exists() else "{}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
