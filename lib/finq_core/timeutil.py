"""Aware UTC timestamps everywhere; SQLite forgets the zone, so the store re-attaches it."""

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)
