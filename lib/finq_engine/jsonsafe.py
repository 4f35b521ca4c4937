"""Turn NumPy results into JSON that never carries NaN or Infinity."""

import math
from typing import Any

import numpy as np


def to_json(value: Any, keep_arrays: bool = False) -> Any:
    """Recursively convert arrays and NumPy scalars to lists and floats; non-finite -> None.

    Float arrays take a fast path: one vectorised finiteness check, then `tolist()` (C speed),
    and only arrays that do hold NaN or Infinity are patched element by element.
    `keep_arrays` leaves float64 arrays as C-contiguous arrays, NaN and Infinity included, for
    an encoder that writes them straight from NumPy with non-finite values as null (the
    worker's: orjson, the same bytes, finq_core.db.encode_json), skipping the lists.
    """
    if isinstance(value, np.ndarray):
        if keep_arrays and value.dtype == np.float64:
            return np.ascontiguousarray(value)
        if value.dtype.kind == "f":
            finite = np.isfinite(value)
            if finite.all():
                return value.tolist()
            out = value.astype(object)
            out[~finite] = None
            return out.tolist()
        if value.dtype.kind in "iub":
            return value.tolist()
        return to_json(value.tolist())
    if isinstance(value, dict):
        return {str(k): to_json(v, keep_arrays) for k, v in value.items()}
    if isinstance(value, list | tuple):
        if value and all(type(v) is float for v in value):
            return (
                value
                if all(map(math.isfinite, value))
                else [v if math.isfinite(v) else None for v in value]
            )
        return [to_json(v, keep_arrays) for v in value]
    if isinstance(value, np.generic):
        return to_json(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return value
