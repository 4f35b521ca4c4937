"""Sizing the mix's heavy rows for this machine (MIX_SCALE)."""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
from pathlib import Path

from .mix import MIX, Mix

# The size each heavy row's cost is proportional to. MIX_SCALE=auto times these rows on this
# machine (loadtest/calibrate.py) and scales them to cost their table `cpu_ms` here; a number
# scales them by that factor, 1 keeps the table. The light rows stay as they are.
SCALABLE: dict[str, str] = {"monte_carlo_option": "paths", "portfolio_var": "simulations"}
SCALE_LIMITS = (0.05, 20.0)

log = logging.getLogger("finq.loadtest")


def scale_row(entry: Mix, factor: float) -> Mix:
    """The row with its scalable size multiplied by `factor` (same target `cpu_ms`)."""
    key = SCALABLE.get(entry.type)
    if key is None or factor == 1.0:
        return entry
    factor = min(max(factor, SCALE_LIMITS[0]), SCALE_LIMITS[1])
    size = max(1000, int(round(entry.params[key] * factor, -3)))
    return Mix(
        entry.type,
        entry.weight,
        entry.cpu_ms,
        f"{entry.size}; {key} x{factor:.2f} = {size:,}",
        {**entry.params, key: size},
    )


def machine_factors(
    measured_cpu_ms: dict[str, float], mix: tuple[Mix, ...] = MIX
) -> dict[str, float]:
    """Per scalable row: table cost / cost measured here, the factor that makes it cost its
    table `cpu_ms` on this machine (cost is proportional to the size)."""
    return {
        m.type: m.cpu_ms / measured_cpu_ms[m.type]
        for m in mix
        if m.type in SCALABLE and measured_cpu_ms.get(m.type)
    }


def measure_here(types: list[str]) -> dict[str, float]:
    """CPU ms of the table's rows of `types` on one core of this machine (calibrate.py in a
    child process: one BLAS thread, pinned, like a worker pool process)."""
    out = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).parent.parent / "calibrate.py"),
            "--json",
            "--no-charts",
            "--repeats",
            "1",
            "--min-seconds",
            "0",
            "--types",
            ",".join(types),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    ).stdout
    return {r["type"]: r["cpu_ms"] for r in json.loads(out)["rows"] if r["cpu_ms"]}


def scaled_mix(scale: str, mix: tuple[Mix, ...] = MIX) -> tuple[Mix, ...]:
    """The mix sized for this machine. `scale` (MIX_SCALE): `auto`, one factor for every
    scalable row, or `type=factor,...` (what `scale_of` gives back, to size a mix the same way
    again); 1 keeps the table's sizes."""
    text = scale.strip().lower()
    if text == "auto":
        scalable = [m.type for m in mix if m.type in SCALABLE]
        if not scalable:
            return mix
        try:
            measured = measure_here(scalable)
        except (OSError, subprocess.SubprocessError, ValueError, KeyError) as exc:
            # Where the engine is not installed (compose's Locust image), say so and go on.
            log.warning(
                "MIX_SCALE=auto: could not time the mix on this machine (%s); using "
                "the table's sizes (set MIX_SCALE to a factor to change them)",
                str(exc)[:200],
            )
            return mix
        factors = machine_factors(measured, mix)
    elif "=" in text:
        factors = {k.strip(): float(v) for k, v in (p.split("=", 1) for p in text.split(","))}
    else:
        factors = {m.type: float(text) for m in mix}
    for type_, factor in factors.items():
        if not math.isfinite(factor) or factor <= 0:
            raise ValueError(f"MIX_SCALE: the factor of {type_} must be positive, not {factor}")
    return tuple(scale_row(m, factors.get(m.type, 1.0)) for m in mix)


def scale_of(mix: tuple[Mix, ...]) -> str:
    """The `type=factor,...` that sizes the table's rows like `mix` (for `scaled_mix`)."""
    table = {m.type: m for m in MIX}
    return ",".join(
        f"{m.type}={m.params[SCALABLE[m.type]] / table[m.type].params[key]:.6g}"
        for m in mix
        if (key := SCALABLE.get(m.type)) and m.type in table
    )
