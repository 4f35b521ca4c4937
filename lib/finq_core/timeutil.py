"""Aware UTC timestamps everywhere; SQLite forgets the zone, so the store re-attaches it."""

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime | None:
    """`value` in UTC (a naive one is read as UTC); None when UTC cannot represent it: the
    year 1 at a positive offset, or 9999 at a negative one, falls outside `datetime`'s range."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        return None
