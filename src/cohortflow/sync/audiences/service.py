"""Audiences run in the warehouse: size and a sample of members, split group sizes, priority list shares and
the overlap of two audiences. The CLI and the sync service's API and pages call these functions.

Each answer comes from one query in the source (counts are ``SUM(CASE ...)`` over one scan of the parent,
whatever the number of audiences counted), plus one ``LIMIT`` query for a sample.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlglot import exp

from cohortflow.sync.audiences.compiler import AudienceQuery, check_target, query_for
from cohortflow.sync.audiences.config import AudienceRef
from cohortflow.sync.audiences.editing import preview
from cohortflow.sync.audiences.filters import dump_filter
from cohortflow.sync.audiences.schema import describe_parent
from cohortflow.sync.audiences.validate import audience_references
from cohortflow.sync.errors import InvalidInput, UnknownObject
from cohortflow.sync.workspace import Workspace

SAMPLE_ROWS = 10
MAX_SAMPLE_ROWS = 1000


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


DRAFT = "draft"


def draft_name(workspace: Workspace) -> str:
    """The name a new audience is checked under before it has one: ``draft``, unless an audience has it."""
    taken = workspace.config.audiences
    return next(n for n in (DRAFT, *(f"{DRAFT}_{i}" for i in range(2, 10_000))) if n not in taken)


def draft_size(
    workspace: Workspace,
    definition: Mapping[str, Any],
    *,
    name: str | None = None,
    split: str | None = None,
    sample: int = SAMPLE_ROWS,
    now: datetime | None = None,
) -> AudienceSize:
    """The size, sample and SQL of a definition that is not saved (a builder's draft), checked like the file;
    ``name`` is the audience it would be saved as (an existing one is replaced in the check, so the audiences
    that include it see the draft). A :class:`ConfigError` names each problem; nothing is written."""
    if not 0 <= sample <= MAX_SAMPLE_ROWS:
        raise InvalidInput(f"sample must be between 0 and {MAX_SAMPLE_ROWS}")
    name = name or draft_name(workspace)
    draft = preview(workspace, name, definition)
    return audience_size(draft, AudienceRef(name=name, split=split), sample=sample, now=now)


def audience_definition(workspace: Workspace, name: str) -> dict[str, Any]:
    """Audience ``name`` as the JSON a builder edits and :func:`~.editing.save_audience` takes back (the YAML's
    own shape: ``parent``, ``description``, ``filter``, ``splits``)."""
    audience = workspace.config.audiences.get(name)
    if audience is None:
        known = ", ".join(sorted(workspace.config.audiences)) or "none"
        raise UnknownObject(f"{workspace.path}: no audience named {name!r} (declared: {known})")
    data: dict[str, Any] = {"parent": audience.parent}
    if audience.description is not None:
        data["description"] = audience.description
    if audience.filter is not None:
        data["filter"] = dump_filter(audience.filter)
    if audience.splits is not None:
        data["splits"] = audience.splits.model_dump(mode="json", exclude_none=True)
    return data


@dataclass(frozen=True)
class AudienceUse:
    """What names an audience, so deleting it would break: syncs, priority lists, other audiences."""

    syncs: list[str]
    priority_lists: list[str]
    audiences: list[str]

    def as_dict(self) -> dict[str, list[str]]:
        return {"syncs": self.syncs, "priority_lists": self.priority_lists, "audiences": self.audiences}


def audience_uses(workspace: Workspace, name: str) -> AudienceUse:
    config = workspace.config
    return AudienceUse(
        syncs=[n for n, s in config.syncs.items() if s.audience is not None and s.audience.name == name],
        priority_lists=[n for n, p in config.priority_lists.items() if name in p.audiences],
        audiences=[n for n, a in config.audiences.items() if n != name and name in audience_references(a.filter)],
    )
