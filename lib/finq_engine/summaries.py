"""Small, bounded summaries of large samples that results carry for charts.

A result is stored as JSON and sent to browsers, so it must never hold a calculation's raw
sample (millions of payoffs or scenarios). These helpers reduce a sample to a fixed number of
numbers whatever its size: a histogram with `bins` counts, or a curve of at most `points`.
"""

from typing import Any

import numpy as np
from numpy.typing import NDArray

from finq_engine.stats import FloatArray

HISTOGRAM_BINS = 50
MAX_CURVE_POINTS = 200


def histogram(values: FloatArray, bins: int = HISTOGRAM_BINS) -> dict[str, Any]:
    """Equal-width histogram of the finite values: `edges` (bins + 1) and `counts` (bins)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return {"edges": [], "counts": []}
    low, high = float(finite.min()), float(finite.max())
    if high <= low:  # a constant sample: one bin around it
        high = low + max(abs(low) * 1e-9, 1e-12)
    counts, edges = np.histogram(finite, bins=bins, range=(low, high))
    return {"edges": edges.tolist(), "counts": counts.tolist()}


def thin(n: int, points: int = MAX_CURVE_POINTS) -> NDArray[np.int64]:
    """Indices of at most `points` evenly spread items of n, always keeping the first and last."""
    if n <= points:
        return np.arange(n, dtype=np.int64)
    idx: NDArray[np.int64] = np.unique(np.linspace(0, n - 1, points).round().astype(np.int64))
    return idx
