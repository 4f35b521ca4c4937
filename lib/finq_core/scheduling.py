"""Cron expressions for recurring tasks (croniter): 5 fields, or 6 with seconds last."""

from datetime import UTC, datetime
from itertools import pairwise

from croniter import CroniterBadDateError, CroniterError, croniter


def validate_cron(expr: str) -> str:
    """Return the normalised expression; ValueError with a readable reason otherwise."""
    expr = " ".join(expr.split())
    if len(expr.split()) not in (5, 6):
        raise ValueError("cron needs 5 fields (minute hour day month weekday) or 6 (… seconds)")
    try:
        itr = croniter(expr, datetime.now(UTC))
    except (CroniterError, ValueError, KeyError) as exc:
        raise ValueError(f"invalid cron expression: {exc}") from None
    # A valid expression may still match no date at all (30 February): croniter searches
    # some years ahead, then gives up; such a schedule could never be stored with a next run.
    try:
        itr.get_next(datetime)
    except CroniterBadDateError:
        raise ValueError("cron never fires: no date matches it (e.g. 30 February)") from None
    return expr


def next_fire(expr: str, after: datetime) -> datetime:
    """The first time strictly after `after` (UTC) matching `expr`."""
    nxt: datetime = croniter(expr, after.astimezone(UTC)).get_next(datetime)
    return nxt.astimezone(UTC)


# The runs looked at for the shortest gap: up to GAP_SAMPLE_RUNS, within GAP_SAMPLE_SPAN of the
# first (a week: weekday patterns repeat), and always two. The beat enforces the interval at
# every run as well (finq_core.dispatch), so a spacing found nowhere in the sample is still held.
GAP_SAMPLE_RUNS = 32
GAP_SAMPLE_SPAN = 8 * 24 * 3600.0


def shortest_gap(expr: str, start: datetime) -> float:
    """The shortest time between two consecutive runs of `expr` after `start`, seconds, as far
    as the sample shows (infinity for a cron that runs once at most)."""
    itr = croniter(expr, start.astimezone(UTC))
    runs: list[float] = []
    try:
        while len(runs) < GAP_SAMPLE_RUNS:
            nxt = itr.get_next(float)
            if len(runs) >= 2 and nxt - runs[0] > GAP_SAMPLE_SPAN:
                break
            runs.append(nxt)
    except CroniterBadDateError:
        pass
    return min((b - a for a, b in pairwise(runs)), default=float("inf"))


def check_interval(expr: str, min_seconds: int, start: datetime) -> None:
    """ValueError when `expr` fires more often than once every `min_seconds`."""
    gap = shortest_gap(expr, start)
    if gap < min_seconds:
        raise ValueError(
            f"cron fires every {gap:g} s; schedules may fire at most once every "
            f"{min_seconds} s (SCHEDULE_MIN_INTERVAL)"
        )
