"""Segment filter trees: typed definitions of who is in a segment.

A tree is AND / OR / NOT groups over leaves, each node tagged by ``type``::

    {"type": "and", "filters": [
        {"type": "partner_cohort", "partner": "hightouch", "cohort_id": "c-1", "operator": "includes"},
        {"type": "standard_attribute", "attribute": "country", "operator": "equals", "value": "FR"}
    ]}

Leaves:

- ``partner_cohort``: ``partner`` (its URL name), ``cohort_id`` (the partner's id), ``operator``
  ``includes`` | ``does_not_include``. Shown in the dashboard as "<Partner> Cohorts".
- ``custom_attribute``: ``attribute`` (a top-level key of the user's custom attributes), ``operator`` and
  ``value``; the value's type must fit the operator (see :data:`CUSTOM_OPERATORS`).
- ``standard_attribute``: the same over profile columns (``country``, ``email``, ``first_name`` ...), whose
  types are fixed (see :data:`STANDARD_ATTRIBUTES`).
- ``identity``: ``state`` ``identified`` (has an external_id) | ``anonymous``.
- ``has_email``: ``value`` true | false (an email address is set).
- ``email_subscription``: ``state`` ``subscribed`` | ``opted_in`` | ``unsubscribed`` (unset reads as
  ``subscribed``, Braze's default).
- ``custom_event``: ``event``, ``min_count`` (>= 1), optional ``within_days``: performed the event at least
  ``min_count`` times in the last ``within_days`` days (ever, when omitted).
- ``purchase``: optional ``product_id``, ``min_count`` (>= 1), optional ``within_days``.
- ``random_bucket``: ``operator`` ``equals`` | ``not_equals`` | ``less_than`` | ``greater_than`` and an integer
  ``value`` in 0..9999 (the user's stable bucket, for holdouts).

Unknown types, unknown fields and operators that do not fit a value's type are rejected by
:func:`parse_filter` with :class:`~cohortflow.platform.errors.InvalidRequest` naming the problem.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, ValidationError
from pydantic import model_validator as _model_validator

from cohortflow.clock import to_utc
from cohortflow.filter_trees import INT64_MAX, MAX_DAYS, FilterInt
from cohortflow.filter_trees import Node as _Node
from cohortflow.filter_trees import describe_value as _kind
from cohortflow.platform.errors import InvalidRequest

MAX_NODES = 500
MAX_LIST_VALUES = 1000
MAX_BUCKET = 9999

CustomOperator = Literal[
    "equals",
    "not_equals",
    "greater_than",
    "less_than",
    "exists",
    "does_not_exist",
    "contains",
    "in",
    "before",
    "after",
    "within_last_days",
]

# Operator -> the kinds of value it accepts, as said in error messages.
CUSTOM_OPERATORS: dict[str, str] = {
    "equals": "a string, number or boolean",
    "not_equals": "a string, number or boolean",
    "greater_than": "a number",
    "less_than": "a number",
    "exists": "no value",
    "does_not_exist": "no value",
    "contains": "a string",
    "in": "a non-empty list of strings or of numbers",
    "before": "an ISO-8601 date or date-time string",
    "after": "an ISO-8601 date or date-time string",
    "within_last_days": "a positive whole number of days",
}

StandardKind = Literal["text", "date", "timestamp"]
# Profile columns a segment may filter on, with their type. ``dob`` is stored as a YYYY-MM-DD string.
STANDARD_ATTRIBUTES: dict[str, StandardKind] = {
    "external_id": "text",
    "first_name": "text",
    "last_name": "text",
    "email": "text",
    "phone": "text",
    "country": "text",
    "home_city": "text",
    "language": "text",
    "gender": "text",
    "time_zone": "text",
    "dob": "date",
    "created_at": "timestamp",
}
STANDARD_OPERATORS: dict[StandardKind, tuple[str, ...]] = {
    "text": ("equals", "not_equals", "exists", "does_not_exist", "contains", "in"),
    "date": ("before", "after", "within_last_days", "exists", "does_not_exist"),
    "timestamp": ("before", "after", "within_last_days", "exists", "does_not_exist"),
}

Scalar = StrictStr | FilterInt | StrictFloat | StrictBool
Value = Scalar | list[StrictStr | FilterInt | StrictFloat | StrictBool] | None
# A filter's look-back in days, subtracted from "now".
LookBackDays = Annotated[StrictInt, Field(ge=1, le=MAX_DAYS)]
Count = Annotated[StrictInt, Field(ge=1, le=INT64_MAX)]


def parse_date_value(value: str) -> datetime:
    """An ISO-8601 date or date-time; a date means its midnight UTC, a naive time is UTC."""
    try:
        if len(value) == 10:
            d = date.fromisoformat(value)
            parsed = datetime(d.year, d.month, d.day)
        else:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"{value!r} is not an ISO-8601 date or date-time") from exc
    return to_utc(parsed)


def _check_operator_value(subject: str, operator: str, value: Value, *, allow: str | None = None) -> None:
    """Raise ``ValueError`` unless ``value`` fits ``operator``; ``allow`` overrides the accepted kinds."""
    wanted = allow or CUSTOM_OPERATORS[operator]
    bad = f"operator {operator!r} on {subject} needs {wanted}, got {_kind(value)}"
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if operator in ("exists", "does_not_exist"):
        if value is not None:
            raise ValueError(bad)
    elif operator in ("equals", "not_equals"):
        if value is None or isinstance(value, list):
            raise ValueError(bad)
    elif operator in ("greater_than", "less_than"):
        if not is_number:
            raise ValueError(bad)
    elif operator == "contains":
        if not isinstance(value, str) or value == "":
            raise ValueError(bad)
    elif operator == "in":
        if not isinstance(value, list) or not value:
            raise ValueError(bad)
        if len(value) > MAX_LIST_VALUES:
            raise ValueError(f"operator 'in' on {subject} takes at most {MAX_LIST_VALUES} values, got {len(value)}")
        strings = all(isinstance(v, str) for v in value)
        numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        if not (strings or numbers):
            raise ValueError(f"operator 'in' on {subject} needs a list of only strings or only numbers")
    elif operator in ("before", "after"):
        if not isinstance(value, str):
            raise ValueError(bad)
        try:
            parse_date_value(value)
        except ValueError as exc:
            raise ValueError(f"operator {operator!r} on {subject} needs {wanted}: {exc}") from None
    elif operator == "within_last_days" and (
        not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_DAYS
    ):
        raise ValueError(f"{bad} (at most {MAX_DAYS})" if isinstance(value, int) and value > MAX_DAYS else bad)


class PartnerCohortFilter(_Node):
    """Membership of a cohort imported by a technology partner ("Hightouch Cohorts includes ...")."""

    type: Literal["partner_cohort"]
    partner: Annotated[str, Field(min_length=1, max_length=100)]
    cohort_id: Annotated[str, Field(min_length=1, max_length=512)]
    operator: Literal["includes", "does_not_include"] = "includes"


class CustomAttributeFilter(_Node):
    type: Literal["custom_attribute"]
    attribute: Annotated[str, Field(min_length=1, max_length=255)]
    operator: CustomOperator
    value: Value = None

    @_model_validator(mode="after")
    def _value_fits_operator(self) -> CustomAttributeFilter:
        _check_operator_value(f"custom attribute {self.attribute!r}", self.operator, self.value)
        return self


class StandardAttributeFilter(_Node):
    type: Literal["standard_attribute"]
    attribute: str
    operator: CustomOperator
    value: Value = None

    @_model_validator(mode="after")
    def _fits_column(self) -> StandardAttributeFilter:
        kind = STANDARD_ATTRIBUTES.get(self.attribute)
        if kind is None:
            raise ValueError(
                f"unknown standard attribute {self.attribute!r}; expected one of {', '.join(STANDARD_ATTRIBUTES)}"
            )
        allowed = STANDARD_OPERATORS[kind]
        if self.operator not in allowed:
            raise ValueError(
                f"operator {self.operator!r} does not apply to {kind} attribute {self.attribute!r}; "
                f"use one of {', '.join(allowed)}"
            )
        subject = f"{kind} attribute {self.attribute!r}"
        if kind == "text" and self.operator in ("equals", "not_equals"):
            _check_operator_value(subject, self.operator, self.value, allow="a string")
            if not isinstance(self.value, str):
                raise ValueError(f"operator {self.operator!r} on {subject} needs a string, got {_kind(self.value)}")
        elif kind == "text" and self.operator == "in":
            _check_operator_value(subject, self.operator, self.value, allow="a non-empty list of strings")
            if not isinstance(self.value, list) or not all(isinstance(v, str) for v in self.value):
                raise ValueError(f"operator 'in' on {subject} needs a list of strings")
        else:
            _check_operator_value(subject, self.operator, self.value)
        return self


class IdentityFilter(_Node):
    """Identified users have an external_id; anonymous users do not."""

    type: Literal["identity"]
    state: Literal["identified", "anonymous"]


class HasEmailFilter(_Node):
    type: Literal["has_email"]
    value: StrictBool = True


class EmailSubscriptionFilter(_Node):
    type: Literal["email_subscription"]
    state: Literal["subscribed", "opted_in", "unsubscribed"]


class CustomEventFilter(_Node):
    """Performed ``event`` at least ``min_count`` times in the last ``within_days`` days (ever if omitted)."""

    type: Literal["custom_event"]
    event: Annotated[str, Field(min_length=1, max_length=255)]
    min_count: Count = 1
    within_days: LookBackDays | None = None


class PurchaseFilter(_Node):
    """Made at least ``min_count`` purchases (of ``product_id`` if given) in the last ``within_days`` days."""

    type: Literal["purchase"]
    product_id: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    min_count: Count = 1
    within_days: LookBackDays | None = None


class RandomBucketFilter(_Node):
    type: Literal["random_bucket"]
    operator: Literal["equals", "not_equals", "less_than", "greater_than"]
    value: Annotated[StrictInt, Field(ge=0, le=MAX_BUCKET)]


class AndGroup(_Node):
    type: Literal["and"]
    filters: Annotated[list[FilterNode], Field(min_length=1)]


class OrGroup(_Node):
    type: Literal["or"]
    filters: Annotated[list[FilterNode], Field(min_length=1)]


class NotGroup(_Node):
    type: Literal["not"]
    filter: FilterNode


Leaf = Union[  # noqa: UP007 - the discriminated union reads best spelled out
    PartnerCohortFilter,
    CustomAttributeFilter,
    StandardAttributeFilter,
    IdentityFilter,
    HasEmailFilter,
    EmailSubscriptionFilter,
    CustomEventFilter,
    PurchaseFilter,
    RandomBucketFilter,
]

FilterNode = Annotated[
    Union[  # noqa: UP007
        AndGroup,
        OrGroup,
        NotGroup,
        PartnerCohortFilter,
        CustomAttributeFilter,
        StandardAttributeFilter,
        IdentityFilter,
        HasEmailFilter,
        EmailSubscriptionFilter,
        CustomEventFilter,
        PurchaseFilter,
        RandomBucketFilter,
    ],
    Field(discriminator="type"),
]

for _group in (AndGroup, OrGroup, NotGroup):
    _group.model_rebuild()


class _Root(BaseModel):
    model_config = ConfigDict(extra="forbid")
    node: FilterNode


FILTER_TYPES: tuple[str, ...] = (
    "and",
    "or",
    "not",
    "partner_cohort",
    "custom_attribute",
    "standard_attribute",
    "identity",
    "has_email",
    "email_subscription",
    "custom_event",
    "purchase",
    "random_bucket",
)


def _location(loc: tuple[int | str, ...]) -> str:
    """``filters.1.filter`` style path inside the tree, without pydantic's union tags."""
    parts = [str(p) for p in loc[1:] if str(p) not in FILTER_TYPES]
    return ".".join(parts)


def _describe(err: Any) -> str:
    loc = _location(tuple(err.get("loc", ())))
    kind = err.get("type")
    ctx = err.get("ctx") or {}
    if kind == "union_tag_invalid":
        msg = f"unknown filter type {ctx.get('tag')!r}; expected one of {', '.join(FILTER_TYPES)}"
    elif kind == "union_tag_not_found":
        msg = "filter has no 'type'; expected one of " + ", ".join(FILTER_TYPES)
    elif kind == "extra_forbidden":
        loc, _, field = loc.rpartition(".")
        msg = f"unknown field {field!r}"
    elif kind == "missing":
        loc, _, field = loc.rpartition(".")
        msg = f"missing field {field!r}"
    else:
        msg = str(err.get("msg", "invalid"))
        msg = msg.removeprefix("Value error, ")
    return f"at {loc}: {msg}" if loc else msg


def parse_filter(data: object) -> FilterNode:
    """Validate a filter tree from decoded JSON; every problem becomes one clear ``InvalidRequest``."""
    if not isinstance(data, dict):
        raise InvalidRequest(f"segment filter must be a JSON object with a 'type', got {type(data).__name__}")
    try:
        root = _Root.model_validate({"node": data})
    except ValidationError as exc:
        errors = exc.errors()
        shown = "; ".join(_describe(e) for e in errors[:3])
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        raise InvalidRequest(f"invalid segment filter: {shown}{more}") from None
    count = count_nodes(root.node)
    if count > MAX_NODES:
        raise InvalidRequest(f"invalid segment filter: {count} nodes, at most {MAX_NODES} allowed")
    return root.node


def count_nodes(node: FilterNode) -> int:
    if isinstance(node, AndGroup | OrGroup):
        return 1 + sum(count_nodes(child) for child in node.filters)
    if isinstance(node, NotGroup):
        return 1 + count_nodes(node.filter)
    return 1


def iter_leaves(node: FilterNode) -> list[Leaf]:
    if isinstance(node, AndGroup | OrGroup):
        return [leaf for child in node.filters for leaf in iter_leaves(child)]
    if isinstance(node, NotGroup):
        return iter_leaves(node.filter)
    return [node]


def dump_filter(node: FilterNode) -> dict[str, Any]:
    """The JSON form of a tree (the form stored and returned by the API)."""
    data: dict[str, Any] = node.model_dump(mode="json", exclude_none=True)
    return data
