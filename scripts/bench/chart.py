"""The scaling chart: completed tasks/s by worker replicas (docs/scaling.png)."""

from __future__ import annotations

import os
from pathlib import Path

from .config import TARGETS, cores


def draw_chart(
    points: list[tuple[int, float, float]], ideal: float, hw_ideal: float, path: Path, title: str
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    ax.plot(xs, ys, "o-", color="#1f77b4", lw=2, label="completed tasks/s (mix)")
    for x, y, eff in points:
        ax.annotate(
            f"{y:.1f}/s\neff {eff:.2f}",
            (x, y),
            textcoords="offset points",
            xytext=(0, 8),
            ha="center",
            fontsize=8,
        )
    ax.axhline(
        ideal,
        color="#2ca02c",
        ls="--",
        lw=1,
        label=f"ideal: {cores()} cores / mean task CPU = {ideal:.1f}/s",
    )
    ax.axhline(
        hw_ideal,
        color="#ff7f0e",
        ls=":",
        lw=1,
        label=f"calculations alone, side by side: {hw_ideal:.1f}/s",
    )
    ax.axhline(
        TARGETS["mix_tasks_per_sec"],
        color="#d62728",
        ls="-.",
        lw=1,
        label=f"target {TARGETS['mix_tasks_per_sec']:g}/s",
    )
    ax.set_xticks(xs)
    ax.set_xlabel(f"worker replicas (x {os.environ.get('WORKER_CONCURRENCY', '4')} processes)")
    ax.set_ylabel("completed tasks / s")
    ax.set_ylim(0, max([*ys, ideal, hw_ideal]) * 1.75)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper center", ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
