"""Cron expressions of schedules: what is accepted, and that one that never fires is not."""

from datetime import UTC, datetime

import pytest

from finq_core.scheduling import next_fire, validate_cron


@pytest.mark.parametrize(
    "expr", ["0 0 30 2 *", "0 0 31 4,6,9,11 *", "0 12 30 2 * 15", "0 0 31 2 *"]
)
def test_a_cron_that_never_fires_is_refused(expr: str) -> None:
    with pytest.raises(ValueError, match="never fires"):
        validate_cron(expr)


def test_a_rare_cron_is_accepted_and_fires_when_due() -> None:
    assert validate_cron("0  0 29 2 *") == "0 0 29 2 *"
    assert next_fire("0 0 29 2 *", datetime(2026, 3, 1, tzinfo=UTC)) == datetime(
        2028, 2, 29, tzinfo=UTC
    )


@pytest.mark.parametrize(("expr", "reason"), [("0 0 * *", "5 fields"), ("0 0 32 1 *", "invalid")])
def test_malformed_crons_say_why(expr: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        validate_cron(expr)
