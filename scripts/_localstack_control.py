"""The local stack's processes: start them under supervisord, wait until they serve, stop them."""

from __future__ import annotations

import argparse
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from _localstack_render import LOG_UMASK, render
from _localstack_settings import ROOT, VENV_BIN, port_free, public_url, resolve, service_env


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
        s = resolve(self.run_dir, args)
        busy = [
            p
            for p in (
                s["HTTP_PORT"],
                *([s["HTTPS_PORT"]] if "HTTPS_PORT" in s else []),
                s["REDIS_PORT"],
                s["FLOWER_PORT"],
                *s["API_PORTS"].split(","),
                *s["WORKER_METRICS_PORTS"].split(","),
                s["BEAT_METRICS_PORT"],
            )
            if not port_free(int(p))
        ]
        if busy:
            raise SystemExit(
                f"ports in use: {', '.join(busy)} (set HTTP_PORT, REDIS_PORT, "
                "API_BASE_PORT, FLOWER_PORT, WORKER_METRICS_BASE_PORT or stop "
                "what holds them)"
            )
        render(self.run_dir, s)
        self.state_file.write_text(json.dumps(s, indent=2))
        self.state_file.chmod(0o600)
        started = time.monotonic()
        # Migrations first (one-shot, like compose's `migrate` service).
        subprocess.run(
            [str(ROOT / "deploy" / "finq-service"), "migrate"],
            check=True,
            env={**os.environ, **service_env(s)},
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
            # supervisord opens its own log before it applies its configured umask.
            umask=LOG_UMASK,
        )
        self.wait_ready(s, timeout=args.timeout)
        s["STARTUP_SECONDS"] = f"{time.monotonic() - started:.1f}"
        self.state_file.write_text(json.dumps(s, indent=2))
        return s

    def wait_ready(self, s: dict[str, str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        want = [f"http://127.0.0.1:{p}/health/ready" for p in s["API_PORTS"].split(",")]
        want.append(public_url(s) + "/health/ready")
        # This poll asks whether nginx serves, not who it is: the certificate may name any host.
        tls = ssl.create_default_context()
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE
        pending = list(want)
        while pending and time.monotonic() < deadline:
            url = pending[0]
            try:
                with urllib.request.urlopen(url, timeout=2, context=tls) as resp:
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
