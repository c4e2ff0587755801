"""Time, injectable so that tests (and Canvas delays) need not wait."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """SQLite returns naive datetimes; everything we store is UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def to_utc(value: datetime) -> datetime:
    """``value`` in UTC (naive means UTC already); ``ValueError`` when UTC cannot represent it.

    An offset can push an instant out of ``datetime``'s years 1-9999 (``9999-12-31T23:59:59-14:00`` is in year
    10000 in UTC), which ``astimezone`` reports as an ``OverflowError``: an input error, not a server fault.
    """
    try:
        return as_utc(value)
    except OverflowError:
        raise ValueError(f"{value.isoformat()} is outside the years 1 to 9999 once converted to UTC") from None
