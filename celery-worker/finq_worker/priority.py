"""The pool's CPU priority: only the cycles nothing else wants (SCHED_IDLE, WORKER_SCHED_IDLE),
except while it holds a database transaction.

SQLite has one write lock for the whole file. A pool process preempted while it holds the lock
waits behind its CPU-bound siblings, tens of milliseconds under SCHED_IDLE, and every API
submit waits with it: a priority inversion. The classic remedy is a priority ceiling: the pool
process runs under SCHED_OTHER (at its niceness) from the start of a transaction to its end.
"""

import logging
import os
import resource
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

log = logging.getLogger("finq.worker")

CAP_SYS_NICE = 23  # bit of the capability sets in /proc/<pid>/status (capabilities(7))

_boosted = False  # this process left SCHED_IDLE for the transaction it holds


def yield_to_everything() -> None:
    """Run this pool process under SCHED_IDLE; any process may lower its own policy so, but a
    sandbox may refuse the call: then the pool keeps WORKER_NICE."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except OSError as exc:
        log.warning("SCHED_IDLE refused, the pool keeps its niceness", extra={"error": str(exc)})


def may_leave_idle(nice: int, capabilities: int, nice_limit: int) -> bool:
    """Whether a process at `nice` may go back from SCHED_IDLE to SCHED_OTHER (sched(7)): with
    CAP_SYS_NICE in its effective `capabilities`, or an RLIMIT_NICE of at least 20 - nice."""
    return bool(capabilities >> CAP_SYS_NICE & 1) or nice_limit >= 20 - nice


def this_process_may_leave_idle() -> bool:
    with open("/proc/self/status") as status:
        caps = next((line.split()[1] for line in status if line.startswith("CapEff:")), "0")
    soft, _hard = resource.getrlimit(resource.RLIMIT_NICE)
    limit = soft if soft != resource.RLIM_INFINITY else 40
    return may_leave_idle(os.getpriority(os.PRIO_PROCESS, 0), int(caps, 16), limit)


def hold_transactions_at_normal_policy() -> None:
    """From now on a transaction begun under SCHED_IDLE runs under SCHED_OTHER until it
    commits or rolls back (a process at another policy is left alone)."""
    if not event.contains(Session, "after_begin", _boost):
        event.listen(Session, "after_begin", _boost)
        event.listen(Session, "after_transaction_end", _restore)


def _boost(*_: Any) -> None:
    global _boosted
    if _boosted or os.sched_getscheduler(0) != os.SCHED_IDLE:
        return
    try:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        _boosted = True
    except OSError:  # refused after all: the transaction runs idle, as it did before
        pass


def _restore(_session: Session, transaction: SessionTransaction) -> None:
    global _boosted
    if _boosted and transaction.parent is None:
        _boosted = False
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
