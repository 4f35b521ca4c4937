"""How long a worker keeps looking for a task record that is not visible yet."""

import pytest

from finq_worker.tasks import (
    RECORD_RETRIES,
    RECORD_RETRY_SECONDS,
    record_retry_delay,
)


def test_the_first_looks_come_quickly_then_every_two_seconds() -> None:
    delays = [record_retry_delay(r) for r in range(RECORD_RETRIES)]
    assert delays[:5] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6])
    assert set(delays[5:]) == {RECORD_RETRY_SECONDS}
    assert delays == sorted(delays)


def test_a_missing_record_is_waited_for_a_minute_in_all() -> None:
    """Twice SQLite's busy timeout (30 s): the longest a submission's commit can wait."""
    total = sum(record_retry_delay(r) for r in range(RECORD_RETRIES))
    assert 60.0 <= total <= 65.0
