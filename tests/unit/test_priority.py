"""When a pool process may go back from SCHED_IDLE to SCHED_OTHER (sched(7))."""

from finq_worker.priority import CAP_SYS_NICE, may_leave_idle


def test_cap_sys_nice_allows_leaving_idle_at_any_niceness() -> None:
    assert may_leave_idle(0, 1 << CAP_SYS_NICE, 0)
    assert may_leave_idle(19, (1 << CAP_SYS_NICE) | 1, 0)


def test_without_the_capability_rlimit_nice_must_reach_twenty_minus_the_niceness() -> None:
    assert not may_leave_idle(10, 0, 0)  # the usual default: RLIMIT_NICE 0
    assert not may_leave_idle(10, 1 << (CAP_SYS_NICE - 1), 9)
    assert may_leave_idle(10, 0, 10)
    assert may_leave_idle(19, 0, 1)
