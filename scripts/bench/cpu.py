"""Per-process CPU: what each part of the stack consumed during a phase."""

from __future__ import annotations

import contextlib
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psutil

from .config import cores


def process_role(proc: psutil.Process) -> str | None:
    """The role of a process of ours, from its command line; None for a stranger."""
    try:
        if proc.pid == os.getpid():
            return "client (bench)"
        cmd = " ".join(proc.cmdline())
        name = proc.name()
        parent = proc.parent()
        parent_cmd = " ".join(parent.cmdline()) if parent else ""
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None
    if "nginx" in name:
        return "nginx"
    if "redis-server" in cmd:
        return "redis"
    if "gunicorn" in cmd:
        return "api"
    if "bench_noop" in cmd:
        return "noop worker (pool)" if "bench_noop" in parent_cmd else "noop worker (main)"
    if "celery" in cmd and " worker" in cmd:
        is_pool = "celery" in parent_cmd and " worker" in parent_cmd
        return "worker (pool)" if is_pool else "worker (main)"
    if "celery" in cmd and " beat" in cmd:
        return "beat"
    if "flower" in cmd:
        return "flower"
    if "supervisord" in cmd:
        return "supervisor"
    if "py-spy" in cmd:
        return "profiler"
    return None


def process_cpu(proc: psutil.Process) -> float:
    try:
        t = proc.cpu_times()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return 0.0
    return float(t.user + t.system)


@dataclass
class CpuUse:
    """CPU seconds by role over a phase, and the whole machine's for comparison."""

    wall: float
    by_group: dict[str, float]
    machine_busy: float  # CPU seconds used by everything on the machine
    steal: float

    @property
    def ours(self) -> float:
        return sum(v for k, v in self.by_group.items() if k != "profiler")

    @property
    def others(self) -> float:
        return max(0.0, self.machine_busy - self.ours - self.by_group.get("profiler", 0.0))

    def shares(self) -> str:
        """`api 41%, worker (pool) 35%, ...` of the machine's capacity (wall x cores)."""
        cap = self.wall * cores()
        parts = [
            f"{k} {v / cap:.0%}"
            for k, v in sorted(self.by_group.items(), key=lambda kv: -kv[1])
            if v / cap >= 0.01
        ]
        parts.append(f"other processes {self.others / cap:.0%}")
        if self.steal / cap >= 0.01:
            parts.append(f"stolen by the hypervisor {self.steal / cap:.0%}")
        return ", ".join(parts)


class CpuMeter:
    """Samples every process of ours (the stack's tree, extra workers, this process)."""

    def __init__(self, roots: Callable[[], list[int]]) -> None:
        self.roots = roots

    def _ours(self) -> dict[int, tuple[str, float]]:
        seen: dict[int, tuple[str, float]] = {}
        procs: list[psutil.Process] = [psutil.Process()]
        for pid in self.roots():
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(pid)
                procs += [root, *root.children(recursive=True)]
        for proc in procs:
            group = process_role(proc)
            if group is not None and proc.pid not in seen:
                seen[proc.pid] = (group, process_cpu(proc))
        return seen

    @contextlib.contextmanager
    def measure(self) -> Iterator[dict[str, CpuUse]]:
        out: dict[str, CpuUse] = {}
        before, m0, w0 = self._ours(), psutil.cpu_times(), time.perf_counter()
        yield out
        after, m1, w1 = self._ours(), psutil.cpu_times(), time.perf_counter()
        groups: dict[str, float] = defaultdict(float)
        for pid, (group, cpu) in after.items():
            groups[group] += cpu - (before[pid][1] if pid in before else 0.0)

        def busy(t: Any) -> float:
            return float(sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "steal", 0.0))

        out["cpu"] = CpuUse(
            w1 - w0,
            dict(groups),
            busy(m1) - busy(m0),
            getattr(m1, "steal", 0.0) - getattr(m0, "steal", 0.0),
        )
