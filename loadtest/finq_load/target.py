"""The stack the load test points at: the running local stack's stack.json, loopback only."""

from __future__ import annotations

import json
import os
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def stack_info() -> dict[str, str]:
    """$RUN_DIR/stack.json of the running local stack ({} when absent)."""
    run_dir = Path(os.environ.get("RUN_DIR") or ROOT / ".run")
    try:
        info: dict[str, str] = json.loads((run_dir / "stack.json").read_text())
    except (OSError, ValueError):
        return {}
    return info


def is_loopback(host: str) -> bool:
    return urllib.parse.urlsplit(host).hostname in ("127.0.0.1", "localhost", "::1")
