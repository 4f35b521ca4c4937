"""Turn NumPy results into JSON that never carries NaN or Infinity."""

import math
from typing import Any

import numpy as np


def to_json(value: Any) -> Any:
    """Recursively convert arrays and NumPy scalars to lists and floats; non-finite -> None."""
    if isinstance(value, np.ndarray):
        return to_json(value.tolist())
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, np.generic):
        return to_json(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return value
