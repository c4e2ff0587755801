"""The audience part of ``cohortflow.yaml``: parent models with their related models, events and traits;
audiences (filter trees over a parent, optionally split into percentage groups); priority lists; and the
reference a sync makes to an audience instead of a model.

These classes only check what a value can check alone. References and types (does the column exist, does
the operator fit its type, is there a cycle) are checked across the whole file by
:mod:`cohortflow.sync.audiences.validate`, whose problems become ``file:line: key: message`` errors.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, model_validator

from cohortflow.sync.audiences.filters import ColumnType, FilterNode

# Column names end up inside generated SQL; quoting is the compiler's job, but a name that needs a quote
# inside it is refused as the rest of the file refuses it.
ColumnName = Annotated[str, Field(min_length=1, max_length=255, pattern=r'^[^"\x00]+$')]
Name = Annotated[str, Field(min_length=1, max_length=255)]
# Split groups are cut in 10,000 buckets: a percentage has at most two decimals.
BUCKETS = 10_000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------- schema


class _Joined(_Strict):
    model: Name
    join: Annotated[
        dict[ColumnName, ColumnName],
        Field(min_length=1, description="Parent column -> this model's column; several pairs join on all of them."),
    ]
    columns: dict[ColumnName, ColumnType] = Field(
        default_factory=dict, description="The columns audiences may filter on, with their types."
    )


class RelatedModel(_Joined):
    """Rows joined to a person by key: one-to-many (a person's orders) or many-to-one (a person's account)."""

    cardinality: Literal["many", "one"] = Field(
        default="many", description="Rows per person: many (one-to-many) or at most one (many-to-one)."
    )


class EventModel(_Joined):
    """Things a person did, each at a moment: ``timestamp`` is the column that says when."""

    timestamp: ColumnName


Aggregate = Literal["count", "sum", "average", "min", "max", "first", "last", "most_frequent"]


class TraitConfig(_Strict):
    """A computed column of the parent, over one of its related or event models, usable like a parent column.

    ``count`` and ``sum`` are 0 for a person with no (matching) rows; the others are null then. ``first`` and
    ``last`` order rows by ``order_by`` (an event's timestamp when omitted), ties broken by the model's primary
    key; ``most_frequent`` ignores nulls and breaks ties by the smallest value.
    """

    relation: Name = Field(description="A related or event model of the same parent.")
    aggregate: Aggregate
    column: ColumnName | None = None
    order_by: ColumnName | None = None
    where: FilterNode | None = None

    @model_validator(mode="after")
    def _fields_fit_aggregate(self) -> TraitConfig:
        if self.aggregate == "count" and self.column is not None:
            raise ValueError("aggregate 'count' counts rows and takes no 'column'")
        if self.aggregate != "count" and self.column is None:
            raise ValueError(f"aggregate {self.aggregate!r} needs a 'column'")
        if self.order_by is not None and self.aggregate not in ("first", "last"):
            raise ValueError("'order_by' applies to aggregates 'first' and 'last' only")
        return self


class ParentConfig(_Strict):
    """One row per person: a model whose primary key is the person's key."""

    model: Name
    identifiers: Annotated[
        list[ColumnName], Field(min_length=1, description="Columns a sync may name a person by in the destination.")
    ]
    columns: dict[ColumnName, ColumnType] = Field(default_factory=dict)
    related: dict[Name, RelatedModel] = Field(default_factory=dict)
    events: dict[Name, EventModel] = Field(default_factory=dict)
    traits: dict[Name, TraitConfig] = Field(default_factory=dict)


# ---------------------------------------------------------------- audiences


Percent = Annotated[StrictInt | StrictFloat, Field(gt=0, le=100)]


class SplitsConfig(_Strict):
    """Stable random groups of an audience (a holdout, an A/B test): a person's group depends only on a hash
    of its primary key and the salt, so it keeps its group from run to run while the percentages stay."""

    salt: Annotated[str, Field(min_length=1, max_length=255)] | None = Field(
        default=None, description="Default: the audience's name. A new salt reshuffles everyone."
    )
    groups: Annotated[dict[Name, Percent], Field(min_length=2)]

    @model_validator(mode="after")
    def _percentages(self) -> SplitsConfig:
        for name, percent in self.groups.items():
            if abs(percent * 100 - round(percent * 100)) > 1e-6:
                raise ValueError(f"group {name!r}: a percentage has at most two decimals, got {percent}")
        total = sum(round(p * 100) for p in self.groups.values())
        if total != BUCKETS:
            raise ValueError(f"the groups' percentages add up to {total / 100:g}, not 100")
        return self

    def bucket_ranges(self) -> dict[str, tuple[int, int]]:
        """Each group's buckets ``[low, high)`` out of 0..9999, in the declared order."""
        ranges: dict[str, tuple[int, int]] = {}
        low = 0
        for name, percent in self.groups.items():
            high = low + round(percent * 100)
            ranges[name] = (low, high)
            low = high
        return ranges


class AudienceConfig(_Strict):
    parent: Name
    description: Annotated[str, Field(max_length=1000)] | None = None
    filter: FilterNode | None = Field(default=None, description="Omitted: every person of the parent.")
    splits: SplitsConfig | None = None


class PriorityListConfig(_Strict):
    """Audiences in priority order: a person in several of them belongs to the first one only."""

    audiences: Annotated[list[Name], Field(min_length=1)]
    description: Annotated[str, Field(max_length=1000)] | None = None


class AudienceRef(_Strict):
    """What a sync sends instead of a model: an audience, optionally one split group of it and/or its share of
    a priority list (its members minus those of the audiences listed before it). ``audience: NAME`` is short
    for ``audience: {name: NAME}``."""

    name: Name
    split: Name | None = None
    priority_list: Name | None = None

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data

    def describe(self) -> str:
        parts = [f"split {self.split!r}"] if self.split else []
        if self.priority_list:
            parts.append(f"in priority list {self.priority_list!r}")
        return f"audience {self.name!r}" + (f" ({', '.join(parts)})" if parts else "")
