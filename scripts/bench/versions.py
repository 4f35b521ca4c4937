"""The versions of what the benchmark runs on, for the report."""

from __future__ import annotations

import contextlib
import platform
import re
import shutil
import sqlite3
import subprocess
from pathlib import Path

from .config import cores


def versions() -> dict[str, str]:
    import celery
    import fastapi
    import kombu
    import numpy
    import uvicorn

    def cmd_version(cmd: list[str], pattern: str) -> str:
        try:
            text = subprocess.run(cmd, capture_output=True, text=True, check=False)
        except OSError:
            return "?"
        m = re.search(pattern, text.stdout + text.stderr)
        return m.group(1) if m else "?"

    import gunicorn

    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": f"{cores()} cores, {cpu}",
        "python": platform.python_version(),
        "celery": celery.__version__,
        "kombu": kombu.__version__,
        "redis-server": cmd_version(["redis-server", "--version"], r"v=([\d.]+)"),
        "nginx": cmd_version([shutil.which("nginx") or "/usr/sbin/nginx", "-v"], r"nginx/([\d.]+)"),
        "fastapi": fastapi.__version__,
        "uvicorn": uvicorn.__version__,
        "gunicorn": gunicorn.__version__,
        "numpy": numpy.__version__,
        "sqlite": sqlite3.sqlite_version,
    }
