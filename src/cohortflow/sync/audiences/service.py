"""Audiences run in the warehouse: size and a sample of members, split group sizes, priority list shares and
the overlap of two audiences. The CLI and the sync service's API and pages call these functions.

Each answer comes from one query in the source (counts are ``SUM(CASE ...)`` over one scan of the parent,
whatever the number of audiences counted), plus one ``LIMIT`` query for a sample.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlglot import exp

from cohortflow.sync.audiences.compiler import AudienceQuery, check_target, query_for
from cohortflow.sync.audiences.config import AudienceRef
from cohortflow.sync.audiences.schema import describe_parent
from cohortflow.sync.errors import UnknownObject
from cohortflow.sync.workspace import Workspace

SAMPLE_ROWS = 10


@dataclass
class AudienceSize:
    target: AudienceRef
    size: int
    parent_rows: int
    sql: str
    # The audience's split groups (when it has splits and the target names none), or the shares of its
    # priority list (when the target names a list): name -> members.
    groups: dict[str, int] = field(default_factory=dict)
    columns: list[str] = field(default_factory=list)
    sample: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "audience": self.target.model_dump(exclude_none=True),
            "size": self.size,
            "parent_rows": self.parent_rows,
            "groups": self.groups,
            "columns": self.columns,
            "sample": self.sample,
            "sql": self.sql,
        }


@dataclass
class AudienceOverlap:
    a: AudienceRef
    b: AudienceRef
    parent_rows: int
    a_size: int
    b_size: int
    both: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "a": self.a.model_dump(exclude_none=True),
            "b": self.b.model_dump(exclude_none=True),
            "parent_rows": self.parent_rows,
            "a_size": self.a_size,
            "b_size": self.b_size,
            "both": self.both,
            "only_a": self.a_size - self.both,
            "only_b": self.b_size - self.both,
            "either": self.a_size + self.b_size - self.both,
        }


def _counts(workspace: Workspace, query: AudienceQuery, within: exp.Expr, conditions: list[exp.Expr]) -> list[int]:
    """``[rows where within holds, of those where condition 0 holds, ...]``, in one query."""
    source = workspace.source(query.parent_model.source)
    with source.stream(query.counts(within, conditions), batch_rows=1) as reader:
        row = reader.read_all().to_pylist()[0]
    return [int(row["rows"] or 0), *(int(row[f"c{i}"] or 0) for i in range(len(conditions)))]


def _parent_rows(workspace: Workspace, query: AudienceQuery) -> int:
    return _counts(workspace, query, exp.true(), [])[0]


def audience_size(
    workspace: Workspace, target: AudienceRef | str, *, sample: int = SAMPLE_ROWS, now: datetime | None = None
) -> AudienceSize:
    """How many people ``target`` holds, a sample of its rows (all the parent's columns) and the SQL.

    With splits and no split named, the size of each group; with a priority list, each audience's share.
    """
    config = workspace.config
    ref = check_target(config, target)
    audience = config.audiences[ref.name]
    query = query_for(config, audience.parent, now=now)
    condition = query.audience(ref)
    groups: dict[str, exp.Expr] = {}
    if ref.priority_list is not None:
        for name in config.priority_lists[ref.priority_list].audiences:
            share = AudienceRef(
                name=name, priority_list=ref.priority_list, split=ref.split if name == ref.name else None
            )
            groups[name] = query.audience(share)
    elif audience.splits is not None and ref.split is None:
        for group in audience.splits.groups:
            groups[group] = query.audience(ref.model_copy(update={"split": group}))
    sql = query.members(condition)
    if ref.priority_list is None:
        # Split groups are parts of the audience: counted among its members, in the same query.
        counts = _counts(workspace, query, condition, list(groups.values()))
        size, group_sizes = counts[0], counts[1:]
    else:
        # The shares of a priority list are disjoint audiences: counted among everyone, then.
        counts = _counts(workspace, query, exp.true(), [condition, *groups.values()])
        size, group_sizes = counts[1], counts[2:]
    result = AudienceSize(
        target=ref,
        size=size,
        parent_rows=_parent_rows(workspace, query),
        sql=sql,
        groups=dict(zip(groups, group_sizes, strict=True)),
    )
    if sample > 0:
        source = workspace.source(query.parent_model.source)
        with source.stream(query.members(query.audience(ref), limit=sample), batch_rows=sample) as reader:
            table = reader.read_all()
        result.columns = list(table.column_names)
        result.sample = table.to_pylist()
    return result


def audience_overlap(
    workspace: Workspace, a: AudienceRef | str, b: AudienceRef | str, *, now: datetime | None = None
) -> AudienceOverlap:
    """The members ``a`` and ``b`` share (both over the same parent), with each one's size."""
    config = workspace.config
    first, second = check_target(config, a), check_target(config, b)
    parents = {config.audiences[r.name].parent for r in (first, second)}
    if len(parents) != 1:
        raise UnknownObject(
            f"audiences {first.name!r} and {second.name!r} are over different parents ({', '.join(sorted(parents))}): "
            "they share no people to compare"
        )
    query = query_for(config, parents.pop(), now=now)
    either = exp.or_(query.audience(first), query.audience(second))
    both = exp.and_(query.audience(first), query.audience(second))
    _, a_size, b_size, shared = _counts(workspace, query, either, [query.audience(first), query.audience(second), both])
    return AudienceOverlap(first, second, _parent_rows(workspace, query), a_size, b_size, shared)


def describe_schema(workspace: Workspace) -> list[dict[str, Any]]:
    """Every parent's columns, traits, related models and events, with types and operators (for a builder)."""
    return [describe_parent(name, parent) for name, parent in workspace.config.parents.items()]
