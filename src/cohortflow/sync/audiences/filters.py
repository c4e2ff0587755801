"""Audience filter trees: typed definitions of who is in an audience, with no SQL.

A tree is AND / OR / NOT groups over conditions, each node tagged by ``type`` (the condition kinds of
Hightouch's Customer Studio)::

    {"type": "and", "filters": [
        {"type": "property", "column": "country", "operator": "equals", "value": "FR"},
        {"type": "related", "relation": "orders", "count": {"operator": "at_least", "value": 2},
         "where": {"type": "property", "column": "amount", "operator": "greater_than", "value": 50}},
        {"type": "performed", "event": "page_views", "within_last_days": 30,
         "count": {"operator": "at_most", "value": 3}},
        {"type": "not", "filter": {"type": "in_audience", "audience": "churned"}}
    ]}

Conditions:

- ``property``: a parent column or a trait (or, inside a ``where``, a column of the related or event model)
  compared by its declared type; see :data:`OPERATORS_BY_TYPE` for the operators each type takes.
- ``related``: the person has a number of rows of a related model (``count``, default at least 1) matching
  the optional ``where`` (a tree of ``property`` conditions over that model's columns).
- ``performed``: the person performed an event (rows of an event model) ``count`` times, in a window
  (``within_last_days``, or ``after`` / ``before``; ever when omitted), where ...
- ``in_audience``: the person is a member of another audience of the same parent (cycles are refused).

This module checks what a node can check alone (fields, value shapes); whether a column exists and whether
its type fits the operator depends on the schema and is checked by :mod:`cohortflow.sync.audiences.validate`.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal, Union

from pydantic import Field, StrictBool, StrictFloat, StrictInt, StrictStr, model_validator

from cohortflow.filter_trees import INT64_MAX, MAX_DAYS, FilterInt, describe_value
from cohortflow.filter_trees import Node as _Node

MAX_NODES = 500
MAX_LIST_VALUES = 1000

ColumnType = Literal["text", "number", "boolean", "date", "timestamp"]
COLUMN_TYPES: tuple[str, ...] = ("text", "number", "boolean", "date", "timestamp")

Operator = Literal[
    "equals",
    "not_equals",
    "in",
    "not_in",
    "contains",
    "does_not_contain",
    "starts_with",
    "ends_with",
    "greater_than",
    "greater_than_or_equal",
    "less_than",
    "less_than_or_equal",
    "between",
    "before",
    "after",
    "within_last_days",
    "more_than_days_ago",
    "exists",
    "does_not_exist",
]

_PRESENCE = ("exists", "does_not_exist")
_TEMPORAL = ("before", "after", "between", "within_last_days", "more_than_days_ago", *_PRESENCE)
OPERATORS_BY_TYPE: dict[str, tuple[str, ...]] = {
    "text": (
        "equals",
        "not_equals",
        "in",
        "not_in",
        "contains",
        "does_not_contain",
        "starts_with",
        "ends_with",
        *_PRESENCE,
    ),
    "number": (
        "equals",
        "not_equals",
        "in",
        "not_in",
        "greater_than",
        "greater_than_or_equal",
        "less_than",
        "less_than_or_equal",
        "between",
        *_PRESENCE,
    ),
    "boolean": ("equals", "not_equals", *_PRESENCE),
    "date": _TEMPORAL,
    "timestamp": _TEMPORAL,
}

# YAML reads an unquoted 2024-05-01 as a date; JSON sends strings, parsed once the column's type is known.
Scalar = StrictBool | FilterInt | StrictFloat | datetime | date | StrictStr
Value = Scalar | list[Scalar] | None
Days = Annotated[StrictInt, Field(ge=1, le=MAX_DAYS)]


def temporal_value(value: object, column_type: str) -> date | datetime:
    """``value`` as a date (date columns) or a naive UTC date-time (timestamp columns, where a date means its
    midnight UTC); ``ValueError`` naming the problem otherwise."""
    parsed: date | datetime
    if isinstance(value, datetime | date):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = date.fromisoformat(value) if len(value) == 10 else datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an ISO-8601 date{' or date-time' * (column_type != 'date')}") from None
    else:
        raise ValueError(f"needs a date, got {describe_value(value)}")
    if column_type == "date":
        if isinstance(parsed, datetime):
            raise ValueError(f"a date column compares with dates, got the date-time {parsed.isoformat()}")
        return parsed
    if not isinstance(parsed, datetime):
        return datetime(parsed.year, parsed.month, parsed.day)
    if parsed.tzinfo is not None:
        try:
            parsed = parsed.astimezone(UTC).replace(tzinfo=None)
        except OverflowError:
            raise ValueError(f"{parsed.isoformat()} is outside the years 1 to 9999 in UTC") from None
    return parsed


def _value_shape(operator: str, value: Value) -> str | None:
    """What is wrong with ``value``'s shape for ``operator``, whatever the column's type; None when it fits."""
    if operator in _PRESENCE:
        return None if value is None else f"operator {operator!r} takes no value, got {describe_value(value)}"
    if operator in ("within_last_days", "more_than_days_ago"):
        if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_DAYS:
            return None
        return f"operator {operator!r} needs a whole number of days from 1 to {MAX_DAYS}, got {describe_value(value)}"
    if operator in ("in", "not_in"):
        if not isinstance(value, list) or not value:
            return f"operator {operator!r} needs a non-empty list of values, got {describe_value(value)}"
        if len(value) > MAX_LIST_VALUES:
            return f"operator {operator!r} takes at most {MAX_LIST_VALUES} values, got {len(value)}"
        return None
    if operator == "between":
        if not isinstance(value, list) or len(value) != 2:
            return f"operator 'between' needs a list of two values [from, to], got {describe_value(value)}"
        return None
    if value is None or isinstance(value, list):
        return f"operator {operator!r} needs one value, got {describe_value(value)}"
    return None


class PropertyCondition(_Node):
    """A column compared by its type: ``country equals FR``, ``ltv between [100, 500]``, ``signed_up_at
    within_last_days 30``. ``not_equals``, ``not_in`` and ``does_not_contain`` are the negations of their
    positive forms, so they hold where the column is null."""

    type: Literal["property"]
    column: Annotated[str, Field(min_length=1, max_length=255)]
    operator: Operator
    value: Value = None

    @model_validator(mode="after")
    def _value_fits_operator(self) -> PropertyCondition:
        problem = _value_shape(self.operator, self.value)
        if problem is not None:
            raise ValueError(f"{problem} (column {self.column!r})")
        return self


class CountRule(_Node):
    """How many matching rows: ``at_least`` / ``at_most`` / ``exactly`` ``value``."""

    operator: Literal["at_least", "at_most", "exactly"] = "at_least"
    value: Annotated[StrictInt, Field(ge=0, le=INT64_MAX)] = 1

    def holds(self, n: int) -> bool:
        if self.operator == "at_least":
            return n >= self.value
        if self.operator == "at_most":
            return n <= self.value
        return n == self.value

    def describe(self) -> str:
        return f"{self.operator.replace('_', ' ')} {self.value}"


class RelatedCondition(_Node):
    """The person has ``count`` rows of related model ``relation`` matching ``where``."""

    type: Literal["related"]
    relation: Annotated[str, Field(min_length=1)]
    count: CountRule = Field(default_factory=CountRule)
    where: FilterNode | None = None


class EventCondition(_Node):
    """The person performed ``event`` ``count`` times in the window, where ... (ever without a window)."""

    type: Literal["performed"]
    event: Annotated[str, Field(min_length=1)]
    count: CountRule = Field(default_factory=CountRule)
    within_last_days: Days | None = None
    after: datetime | date | StrictStr | None = None
    before: datetime | date | StrictStr | None = None
    where: FilterNode | None = None

    @model_validator(mode="after")
    def _one_window(self) -> EventCondition:
        if self.within_last_days is not None and (self.after is not None or self.before is not None):
            raise ValueError("give either 'within_last_days' or 'after' / 'before', not both")
        return self


class InAudienceCondition(_Node):
    """The person is a member of audience ``audience`` (same parent; its splits are not applied)."""

    type: Literal["in_audience"]
    audience: Annotated[str, Field(min_length=1)]


class AndGroup(_Node):
    type: Literal["and"]
    filters: Annotated[list[FilterNode], Field(min_length=1)]


class OrGroup(_Node):
    type: Literal["or"]
    filters: Annotated[list[FilterNode], Field(min_length=1)]


class NotGroup(_Node):
    type: Literal["not"]
    filter: FilterNode


Condition = Union[  # noqa: UP007 - the discriminated union reads best spelled out
    PropertyCondition, RelatedCondition, EventCondition, InAudienceCondition
]

FilterNode = Annotated[
    Union[  # noqa: UP007
        AndGroup,
        OrGroup,
        NotGroup,
        PropertyCondition,
        RelatedCondition,
        EventCondition,
        InAudienceCondition,
    ],
    Field(discriminator="type"),
]

# The ``type`` tags: Pydantic puts them into error locations, where they are not keys of the file.
FILTER_TYPES: tuple[str, ...] = ("and", "or", "not", "property", "related", "performed", "in_audience")

for _model in (AndGroup, OrGroup, NotGroup, RelatedCondition, EventCondition):
    _model.model_rebuild()


def children(node: FilterNode) -> list[FilterNode]:
    """A group's sub-trees (none for a condition; a condition's ``where`` is another scope, not a child)."""
    if isinstance(node, AndGroup | OrGroup):
        return list(node.filters)
    if isinstance(node, NotGroup):
        return [node.filter]
    return []


def count_nodes(node: FilterNode) -> int:
    inner = node.where if isinstance(node, RelatedCondition | EventCondition) else None
    return 1 + sum(count_nodes(c) for c in children(node)) + (count_nodes(inner) if inner is not None else 0)


def dump_filter(node: FilterNode) -> dict[str, Any]:
    """The JSON form of a tree (what an API returns and a builder edits)."""
    data: dict[str, Any] = node.model_dump(mode="json", exclude_defaults=True)
    return data
