"""The local stack's configuration files, written into its runtime folder from its settings:
redis.conf, nginx's configuration (the compose templates) and supervisord.conf."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from _localstack_settings import ROOT, service_env

# Every file the stack's processes create (logs above all) is 0640: no access for others.
LOG_UMASK = 0o027
# Redis' client ceiling; the same number is in docker-compose.yml.
REDIS_MAXCLIENTS = 2000


def _envsubst(template: Path, values: dict[str, str]) -> str:
    """Substitute exactly the given names, like `envsubst` with a variable list."""
    text = template.read_text()
    for key, value in values.items():
        text = text.replace("${" + key + "}", value)
    return text


def render(run_dir: Path, s: dict[str, str]) -> None:
    rd = run_dir
    for sub in ("logs", "data", "redis", "nginx", "nginx/client_temp", "supervisor"):
        (rd / sub).mkdir(parents=True, exist_ok=True)
    # Logs may hold addresses and request ids: readable by the owner and its group only. New
    # ones get it from supervisord's umask (LOG_UMASK); these are from an earlier run.
    (rd / "logs").chmod(0o750)
    for log in (rd / "logs").iterdir():
        if log.is_file():
            log.chmod(0o640)
    _render_redis(rd, s)
    _render_nginx(rd, s)
    _render_supervisor(rd, s)


def _render_redis(rd: Path, s: dict[str, str]) -> None:
    (rd / "redis" / "redis.conf").write_text(
        "\n".join(
            [
                "bind 127.0.0.1",
                f"port {s['REDIS_PORT']}",
                f"dir {rd / 'redis'}",
                "appendonly yes",
                "appendfsync everysec",
                "maxmemory-policy noeviction",
                # Deliberate, as in compose (docs/security.md): ~20x what the stack holds (streams
                # take no connection of their own), below the descriptors supervisord gives.
                f"maxclients {REDIS_MAXCLIENTS}",
                'save ""',
                "daemonize no",
                "protected-mode yes",
                "loglevel notice",
                "",
            ]
        )
    )


def _render_nginx(rd: Path, s: dict[str, str]) -> None:
    servers = "\n".join(
        f"  server 127.0.0.1:{p} max_fails=1 fail_timeout=2s;" for p in s["API_PORTS"].split(",")
    )
    (rd / "nginx" / "upstream.conf").write_text(
        _envsubst(ROOT / "nginx" / "upstream.static.template", {"SERVERS": servers})
    )
    # nginx's ceiling is the largest route limit; the app applies each route's own
    # (fastapi-app/finq_api/guard.py: uploads take their file plus 64 KiB of multipart).
    max_body = max(
        int(s["MAX_BODY_BYTES"]),
        int(s["TASK_BODY_MAX_BYTES"]),
        int(s.get("UPLOAD_MAX_BYTES", "5242880")) + 64 * 1024,
    )
    _render_edge(rd, s)
    (rd / "nginx" / "finq.conf").write_text(
        _envsubst(
            ROOT / "nginx" / "finq.conf.template",
            {
                "LISTEN_CONF": str(rd / "nginx" / "listen.conf"),
                "REDIRECT_CONF": str(rd / "nginx" / "redirect.conf"),
                "UPSTREAM_CONF": str(rd / "nginx" / "upstream.conf"),
                "FLOWER_UPSTREAM": f"127.0.0.1:{s['FLOWER_PORT']}",
                "ACCESS_LOG": str(rd / "logs" / "nginx-access.log"),
                "BODY_LIMIT": str(max_body),
                "BATCH_BODY_LIMIT": s["BATCH_BODY_MAX_BYTES"],
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


def _render_edge(rd: Path, s: dict[str, str]) -> None:
    """nginx's public listeners: plain HTTP, or HTTPS on HTTPS_PORT with HTTP_PORT redirecting
    to it when the stack was given a certificate (TLS_CERT_FILE and TLS_KEY_FILE)."""
    http = f"127.0.0.1:{s['HTTP_PORT']}"
    if "TLS_CERT_FILE" not in s:
        listen = _envsubst(ROOT / "nginx" / "listen.plain.template", {"LISTEN_PORT": http})
        redirect = "# plain HTTP only: no certificate given (TLS_CERT_FILE, TLS_KEY_FILE)\n"
    else:
        listen = _envsubst(
            ROOT / "nginx" / "listen.tls.template",
            {
                "TLS_PORT": f"127.0.0.1:{s['HTTPS_PORT']}",
                "TLS_CERT_FILE": s["TLS_CERT_FILE"],
                "TLS_KEY_FILE": s["TLS_KEY_FILE"],
            },
        )
        redirect = _envsubst(
            ROOT / "nginx" / "redirect.tls.template",
            {
                "LISTEN_PORT": http,
                "ACCESS_LOG": str(rd / "logs" / "nginx-access.log"),
                "TLS_REDIRECT_PORT": "" if s["HTTPS_PORT"] == "443" else f":{s['HTTPS_PORT']}",
            },
        )
    (rd / "nginx" / "listen.conf").write_text(listen)
    (rd / "nginx" / "redirect.conf").write_text(redirect)


def _render_supervisor(rd: Path, s: dict[str, str]) -> None:
    svc = ROOT / "deploy" / "finq-service"
    env = service_env(s)

    def env_line(extra: dict[str, str]) -> str:
        merged = {**env, **extra}
        return ",".join(
            f'{k}="{v.replace("%", "%%").replace(chr(34), "")}"' for k, v in merged.items()
        )

    def metrics_dir(name: str) -> dict[str, str]:
        # Prometheus' multiprocess files in the run dir, not finq-service's /tmp default:
        # they go with the stack's data instead of piling up in /tmp run after run.
        return {"PROMETHEUS_MULTIPROC_DIR": str(rd / "metrics" / name)}

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
        f"umask={LOG_UMASK:03o}",
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
                name,
                f"{svc} api",
                {"API_BIND": f"127.0.0.1:{port}", "API_NAME": name, **metrics_dir(name)},
                25,
                50,
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
                    **metrics_dir(name),
                },
                90,
                60,
            )
        )
    beat_metrics = {
        "WORKER_METRICS_PORT": s["BEAT_METRICS_PORT"],
        "WORKER_METRICS_ADDRESS": "127.0.0.1",
        **metrics_dir("beat"),
    }
    blocks.append(program("beat", f"{svc} beat", beat_metrics, 10, 70))
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
