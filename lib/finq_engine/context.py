"""The narrow interface through which a calculation reports progress and learns of cancels.

Calculations call `ctx.progress(...)` after each chunk and `ctx.check_cancelled()` between
chunks; the worker implements both over Redis and the database, tests use `NullContext`.
"""

from typing import Protocol

from finq_engine.errors import Cancelled


class RunContext(Protocol):
    def progress(self, fraction: float, message: str | None = None) -> None:
        """Report that `fraction` (0..1) of the work is done; implementations throttle."""

    def cancelled(self) -> bool:
        """True once a cancel was requested; checked between chunks, so it must be cheap."""


class NullContext:
    """A context that records progress calls and can be told to cancel (for tests and benches)."""

    def __init__(self, cancel_after: int | None = None) -> None:
        self.calls: list[float] = []
        self._cancel_after = cancel_after

    def progress(self, fraction: float, message: str | None = None) -> None:
        self.calls.append(fraction)

    def cancelled(self) -> bool:
        return self._cancel_after is not None and len(self.calls) >= self._cancel_after


def check_cancelled(ctx: RunContext) -> None:
    """Raise `Cancelled` when the context says so; called between chunks."""
    if ctx.cancelled():
        raise Cancelled()
