"""Cron expressions for recurring tasks (croniter): 5 fields, or 6 with seconds last."""

from datetime import UTC, datetime

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
