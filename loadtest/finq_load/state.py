"""Shared state of one test run (one Locust process; gevent makes these updates atomic)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .mix import MIX, Mix


class TaskFailed(Exception):  # noqa: N818 - Locust shows the class name in its error report
    """A task that ended FAILED or CANCELLED."""


class TaskLost(Exception):  # noqa: N818
    """A task without a final status when the test (and its grace period) ended."""


@dataclass
class RunState:
    first_submit: float | None = None
    stop_requested: float | None = None
    outstanding: dict[str, tuple[str, float, float]] = field(default_factory=dict)
    done: list[tuple[str, float, float]] = field(default_factory=list)  # type, at, ms
    failed: list[tuple[str, str]] = field(default_factory=list)
    lost: list[tuple[str, str]] = field(default_factory=list)
    rejected: dict[str, int] = field(default_factory=dict)
    submitted: int = 0
    mix: tuple[Mix, ...] = MIX
    weights: tuple[int, ...] = tuple(m.weight for m in MIX)


@dataclass
class Run:
    """The test run in progress (a new state at each start) and the mix sized at start-up."""

    state: RunState = field(default_factory=RunState)
    sized_mix: tuple[Mix, ...] = MIX  # MIX with its heavy rows sized for this machine


RUN = Run()
