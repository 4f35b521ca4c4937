"""Errors a calculation may raise; the worker maps them to task outcomes."""


class CalculationError(ValueError):
    """The inputs are valid in shape but the calculation cannot proceed (never retried)."""


class Cancelled(Exception):  # noqa: N818 - reads as a state, like asyncio.CancelledError
    """The run context reported a cancel request between two chunks."""
