"""finq_core.dependencies: a service waits for what it needs with a bounded, logged retry, and
its log lines never show a password."""

import pytest

from finq_core import dependencies
from finq_core.dependencies import where
from finq_core.errors import DependencyNotReady


class Clock:
    """A fake monotonic clock that `sleep` advances: no real waiting in a unit test."""

    def __init__(self) -> None:
        self.now = 0.0

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_a_dependency_that_comes_up_is_waited_for_with_one_line_per_attempt(clock: Clock) -> None:
    answers = iter([ConnectionError("refused"), ConnectionError("refused"), None])

    def check() -> None:
        failure = next(answers)
        if failure:
            raise failure

    lines: list[str] = []
    assert dependencies.wait_for(
        "redis", check, "redis:6379", 60, lines.append, clock.sleep, lambda: clock.now
    )
    assert [line.split(":")[1].strip() for line in lines[:2]] == ["waiting for redis (redis"] * 2
    assert "refused" in lines[0] and "attempt 1" in lines[0] and "attempt 2" in lines[1]
    assert lines[-1].startswith("finq: redis (redis:6379) ready after")


def test_a_dependency_that_never_comes_gives_up_within_its_budget(clock: Clock) -> None:
    def check() -> None:
        raise DependencyNotReady("not migrated yet")

    lines: list[str] = []
    assert not dependencies.wait_for(
        "schema", check, "db:5432", 30, lines.append, clock.sleep, lambda: clock.now
    )
    assert clock.now <= 30
    assert lines[-1].startswith("finq: giving up on schema (db:5432) after")
    assert "not migrated yet" in lines[-1]
    # Backed-off delays: 0.5, 1, 2, 4, 5, 5, ... not a tight loop.
    assert len(lines) < 12


def test_a_ready_dependency_costs_no_wait_and_no_log(clock: Clock) -> None:
    lines: list[str] = []
    assert dependencies.wait_for(
        "database", lambda: None, "db", 10, lines.append, clock.sleep, lambda: clock.now
    )
    assert lines == [] and clock.now == 0


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:hunter2@redis:6379/0", "redis:6379"),
        ("postgresql+psycopg://finq:hunter2@postgres:5432/finq", "postgres:5432"),
        ("sqlite:///.run/data/finq.db", "sqlite"),
    ],
)
def test_log_lines_name_the_host_never_the_password(url: str, shown: str) -> None:
    assert where(url) == shown


def test_an_unknown_dependency_name_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert dependencies.main(["rabbit"]) == 2
    assert "unknown dependency" in capsys.readouterr().err
