"""What the platform's segment filters and the sync's audience definitions share.

Both are trees of frozen Pydantic nodes that refuse unknown keys, both compare values in a database (so an
integer past BIGINT or a look-back past what ``datetime`` can subtract from "now" must be refused at parse time,
not fail in a driver), and both name a wrong value the same way in their errors.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Final

from pydantic import BaseModel, ConfigDict, Field, StrictInt

INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1
# Longest Canvas delay and furthest look-back of a filter: far beyond any real journey or audience, and far inside
# what ``datetime`` arithmetic on "now" can represent.
MAX_DAYS: Final = 36_500

# An integer compared in SQL: one past a BIGINT would fail in the driver instead of as a clear error.
FilterInt = Annotated[StrictInt, Field(ge=INT64_MIN, le=INT64_MAX)]


class Node(BaseModel):
    """A node of a filter tree: immutable, and unknown keys are an error rather than silently dropped."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def describe_value(value: object) -> str:
    """A value as error messages name it: ``number 3``, ``string 'x'``, ``no value``..."""
    if value is None:
        return "no value"
    if isinstance(value, bool):
        return f"boolean {'true' if value else 'false'}"
    if isinstance(value, int | float):
        return f"number {value!r}"
    if isinstance(value, datetime | date):
        return f"date {value.isoformat()}"
    if isinstance(value, str):
        return f"string {value!r}"
    return "a list"
