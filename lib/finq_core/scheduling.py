"""Cron expressions for recurring tasks (croniter): 5 fields, or 6 with seconds last."""

from datetime import UTC, datetime

from croniter import CroniterError, croniter


def validate_cron(expr: str) -> str:
    """Return the normalised expression; ValueError with a readable reason otherwise."""
    expr = " ".join(expr.split())
    if len(expr.split()) not in (5, 6):
        raise ValueError("cron needs 5 fields (minute hour day month weekday) or 6 (… seconds)")
    try:
        croniter(expr, datetime.now(UTC))
    except (CroniterError, ValueError, KeyError) as exc:
        raise ValueError(f"invalid cron expression: {exc}") from None
    return expr


def next_fire(expr: str, after: datetime) -> datetime:
    """The first time strictly after `after` (UTC) matching `expr`."""
    nxt: datetime = croniter(expr, after.astimezone(UTC)).get_next(datetime)
    return nxt.astimezone(UTC)
