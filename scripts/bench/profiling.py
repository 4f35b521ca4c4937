"""py-spy profiles of the hottest processes of a role while the stack is under load."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from .client import submit_closed
from .config import VENV_BIN
from .cpu import process_cpu
from .profile_report import summarize_profile
from .stack import BenchStack


def find_py_spy() -> str | None:
    return shutil.which("py-spy", path=f"{VENV_BIN}:{os.environ.get('PATH', '')}")


def hottest(stack: BenchStack, group: str, seconds: float = 1.5) -> int | None:
    pids = stack.pids_of(group)
    if not pids:
        return None
    procs = {pid: psutil.Process(pid) for pid in pids}
    first = {pid: process_cpu(p) for pid, p in procs.items()}
    time.sleep(seconds)
    return max(pids, key=lambda pid: process_cpu(procs[pid]) - first[pid])


def start_profiles(
    py_spy: str, pids: dict[str, int], seconds: int, out_dir: Path
) -> list[tuple[str, Path, subprocess.Popen[bytes]]]:
    out = []
    for label, pid in pids.items():
        path = out_dir / f"profile-{label.replace(' ', '_').strip('()')}-{pid}.txt"
        proc = subprocess.Popen(
            [
                py_spy,
                "record",
                "--pid",
                str(pid),
                "--rate",
                "100",
                "--full-filenames",
                "--nolineno",
                "--duration",
                str(seconds),
                "--format",
                "raw",
                "--nonblocking",
                "--output",
                str(path),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        out.append((label, path, proc))
    return out


def profile_during(
    stack: BenchStack,
    load: Callable[[], Any],
    groups: tuple[str, ...],
    py_spy: str,
    out_dir: Path,
    label: str,
) -> dict[str, dict[str, Any]]:
    """Run `load` in a thread while py-spy samples, for 6 s, the process of each role that
    burns the most CPU."""
    runner = threading.Thread(target=load, daemon=True)
    runner.start()
    picked: dict[str, int] = {}
    for group in groups:
        pid = hottest(stack, group, 1.0)
        if pid is not None:
            picked[group] = pid
    recs = start_profiles(py_spy, picked, 6, out_dir)
    for _, _, proc in recs:
        proc.wait(60)
    runner.join(600)
    return {f"{label}: {group}": summarize_profile(path) for group, path, _ in recs}


def profile_batch(
    stack: BenchStack,
    token: str,
    bodies: list[bytes],
    concurrency: int,
    py_spy: str,
    out_dir: Path,
    label: str,
) -> dict[str, dict[str, Any]]:
    """One more batch (not counted) while the hottest worker pool process is profiled."""
    stack.wait_idle()
    mark = stack.watermark()
    out = profile_during(
        stack,
        lambda: asyncio.run(submit_closed(stack.port, token, bodies, concurrency)),
        ("worker (pool)",),
        py_spy,
        out_dir,
        label,
    )
    stack.wait_done(mark, len(bodies), 600)
    return out
