"""Cron expressions of schedules: what is accepted, that one that never fires is not, and how
often one fires (SCHEDULE_MIN_INTERVAL)."""

from datetime import UTC, datetime

import pytest

from finq_core.scheduling import check_interval, next_fire, shortest_gap, validate_cron


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


NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # a Monday


@pytest.mark.parametrize(
    ("expr", "gap"),
    [
        ("* * * * * *", 1),  # every second (6 fields, seconds last)
        ("* * * * * */2", 2),
        ("0 0 * * * 0,5", 5),  # two runs 5 s apart at midnight only
        ("0,59 * * * *", 60),  # 59 min apart, then 1 min across the hour
        ("* 9 * * *", 60),  # every minute, but only from 9:00
        ("0 6 * * 1-5", 86400),
        ("0,1 0 29 2 *", 60),  # leap days only, two runs a minute apart
        ("0 0 1 1 *", 365 * 86400),  # yearly, 2027 to 2028
    ],
)
def test_the_shortest_gap_between_runs(expr: str, gap: float) -> None:
    assert shortest_gap(expr, NOW) == gap


def test_a_cron_firing_more_often_than_the_minimum_interval_is_refused() -> None:
    with pytest.raises(ValueError, match=r"fires every 1 s.*once every 60 s.*MIN_INTERVAL"):
        check_interval("* * * * * *", 60, NOW)
    with pytest.raises(ValueError, match="fires every 30 s"):
        check_interval("* * * * * 0,30", 60, NOW)
    check_interval("* * * * *", 60, NOW)
    check_interval("* * * * * */2", 2, NOW)
