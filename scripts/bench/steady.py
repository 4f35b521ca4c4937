"""Steady-state efficiency of a batch: the part where every worker process has a task."""

from __future__ import annotations

import bisect
import math


def steady_efficiency(
    spans: list[tuple[str, float, float]], alone_s: dict[str, float], slots: int, n_cores: int
) -> float | None:
    """Efficiency while every worker process has a task: from the first moment `slots` tasks
    run at once to the last start, leaving out the opening and the drain, which a sustained
    load never has. None when the window is under a second.

    Each task is credited with the part of its CPU alone done inside the window at a fair
    scheduler's speed, min(1, cores / tasks running), not by wall time: a task ending in the
    drain has a core to itself."""
    edges = sorted([(s, 1) for _, s, _ in spans] + [(f, -1) for _, _, f in spans])
    # Piecewise-constant speed of one task: (start, end, speed) between consecutive edges.
    pieces: list[tuple[float, float, float]] = []
    running, w0 = 0, None
    for (at, step), (nxt, _) in zip(edges, [*edges[1:], (math.inf, 0)], strict=True):
        running += step  # at a tie the end sorts first: a slot freed and refilled is busy
        if w0 is None and running >= slots:
            w0 = at
        if nxt > at and running > 0:
            pieces.append((at, nxt, min(1.0, n_cores / running)))
    w1 = max((s for _, s, _ in spans), default=None)
    if w0 is None or w1 is None or w1 - w0 < 1.0:
        return None
    starts = [p[0] for p in pieces]

    def advance(lo: float, hi: float) -> float:
        """Work one running task does between lo and hi (in seconds of a whole core)."""
        done = 0.0
        for start, end, speed in pieces[max(0, bisect.bisect_right(starts, lo) - 1) :]:
            if start >= hi:
                break
            done += speed * max(0.0, min(end, hi) - max(start, lo))
        return done

    credit = 0.0
    for type_, s, f in spans:
        if f <= s:
            credit += alone_s[type_] if w0 <= s < w1 else 0.0
            continue
        inside = advance(max(s, w0), min(f, w1)) if min(f, w1) > max(s, w0) else 0.0
        if inside:
            credit += alone_s[type_] * inside / advance(s, f)
    return credit / ((w1 - w0) * n_cores)
