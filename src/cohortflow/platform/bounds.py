"""Bounds on the numbers, ids, durations and dates the platform accepts at its edge.

Python's integers and the JSON parser have no limit, but ``timedelta``, ``datetime``, SQLite's INTEGER and
PostgreSQL's BIGINT do: a value past them used to surface as an ``OverflowError`` or a driver error deep in a
handler, a 500. These types and checks turn it into a 400 that names the field and the range, before any
work is done. Request models and route parameters use them instead of bare ``int`` and ``datetime``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Final

from annotated_types import Ge, Le
from pydantic import AfterValidator

from cohortflow.clock import to_utc
from cohortflow.filter_trees import INT64_MAX, INT64_MIN, MAX_DAYS

__all__ = ["INT64_MAX", "INT64_MIN", "MAX_DAYS"]  # re-exported: the platform's bounds, shared with filter trees

MAX_DURATION: Final = timedelta(days=MAX_DAYS)

# A money amount (a purchase's price): past any real price, and far enough inside a double that sums of prices
# times quantities stay finite (an infinite revenue is an overflow on PostgreSQL and not JSON anywhere).
MAX_AMOUNT: Final = 1e15

# A stored row id (campaign sends, users): positive and within the databases' BIGINT.
RowId = Annotated[int, Ge(1), Le(INT64_MAX)]
# Any integer that reaches a database as a number (a filter's value, an attribute increment).
Int64 = Annotated[int, Ge(INT64_MIN), Le(INT64_MAX)]
# A count of days, hours, ... that is added to or subtracted from "now".
Days = Annotated[int, Ge(0), Le(MAX_DAYS)]
Hours = Annotated[int, Ge(0), Le(MAX_DAYS * 24)]
Minutes = Annotated[int, Ge(0), Le(MAX_DAYS * 24 * 60)]
Seconds = Annotated[int, Ge(0), Le(MAX_DAYS * 24 * 3600)]
# A date-time converted to UTC, refused when that conversion leaves the years 1-9999 (e.g. 9999-12-31T23:59-14:00).
UtcDateTime = Annotated[datetime, AfterValidator(to_utc)]


def check_int64(value: int, what: str) -> int:
    """``value`` unchanged if a BIGINT can hold it; otherwise ``ValueError`` naming ``what``."""
    if not INT64_MIN <= value <= INT64_MAX:
        raise ValueError(f"{what} must be between {INT64_MIN} and {INT64_MAX} (a signed 64-bit integer)")
    return value
