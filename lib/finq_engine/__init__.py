"""finq's financial engine: pure, NumPy-vectorised calculations.

This package imports neither Celery nor FastAPI: it is the one place that knows what each task
type takes (a pydantic model) and how it is computed, so the API validates with the same models
the worker runs with.
"""

from finq_engine.context import NullContext, RunContext
from finq_engine.errors import CalculationError, Cancelled
from finq_engine.prices import PriceTable, PriceTableError, parse_price_csv
from finq_engine.registry import TASK_TYPES, TaskType, UploadInput, get_task_type

__all__ = [
    "TASK_TYPES",
    "CalculationError",
    "Cancelled",
    "NullContext",
    "PriceTable",
    "PriceTableError",
    "RunContext",
    "TaskType",
    "UploadInput",
    "get_task_type",
    "parse_price_csv",
]
