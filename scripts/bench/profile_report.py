"""Reading py-spy's raw profiles: self time by module and the heaviest calls."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

# Leaf frames of threads that wait for work (thread pools, event loops): not load.
_IDLE = (
    "Condition.wait",
    "Runner.run (",
    "select (",
    "_wait_for_tstate_lock",
    "Event.wait",
    "Queue.get (",
    "poll (",
    "epoll",
)
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]*)(?::\d+)?\)$")


def _module(path: str) -> str:
    """A readable owner of a source file: a package name, a finq module, or a stdlib module."""
    p = path.replace("\\", "/")
    if "site-packages/" in p:
        return p.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    for pkg in ("finq_api", "finq_core", "finq_worker", "finq_engine"):
        if f"/{pkg}/" in p:
            return f"{pkg}.{p.split(f'/{pkg}/', 1)[1].removesuffix('.py').replace('/', '.')}"
    name = p.rsplit("/", 1)[-1].removesuffix(".py")
    parent = p.rsplit("/", 2)[-2] if p.count("/") >= 2 else ""
    return (
        f"{parent}.{name}"
        if parent and parent not in ("lib", "python3.11") and not parent.startswith("python3")
        else name
    )


def summarize_profile(path: Path, top: int = 8) -> dict[str, Any]:
    """Self time by module (where the CPU actually goes) and the heaviest finq/library
    functions including what they call."""
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    if not path.exists():
        return {"samples": 0}
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        frames = [f for f in stack.split(";") if f]
        if not frames or any(idle in frames[-1] for idle in _IDLE):
            continue
        total += count
        leaf = _FRAME.match(frames[-1])
        self_time[_module(leaf.group("file")) if leaf else frames[-1]] += count
        seen = set()
        for f in frames:
            m = _FRAME.match(f)
            if not m:
                continue
            key = f"{_module(m.group('file'))}:{m.group('func')}"
            if key not in seen:
                seen.add(key)
                inclusive[key] += count
    if not total:
        return {"samples": 0}
    # Frames every request or task goes through (servers, pools, the task tracer): not news.
    plumbing = (
        "threading",
        "runpy",
        "celery",
        "billiard",
        "gunicorn",
        "uvicorn",
        "asyncio",
        "bin",
        "starlette",
        "anyio",
        "click",
        "fastapi",
        "<frozen",
        "concurrent",
    )
    heavy = [
        (k, v)
        for k, v in inclusive.most_common(120)
        if k.split(":", 1)[0].split(".", 1)[0] not in plumbing
        and not k.split(":", 1)[0].startswith(plumbing)
        and v < 0.995 * total
    ][:top]
    return {
        "samples": total,
        "self": [(k, v / total) for k, v in self_time.most_common(top)],
        "inclusive": [(k, v / total) for k, v in heavy],
    }


def render_profiles(profiles: dict[str, dict[str, Any]]) -> list[str]:
    lines = []
    for name, p in profiles.items():
        if not p.get("samples"):
            lines.append(f"- {name}: no samples")
            continue
        lines.append(
            f"- {name} ({p['samples']} samples). Self time by module: "
            + ", ".join(f"{k} {v:.0%}" for k, v in p["self"])
            + ". Heaviest calls "
            "(inclusive): " + ", ".join(f"`{k}` {v:.0%}" for k, v in p["inclusive"]) + "."
        )
    return lines
