"""Checks across the audience part of the workspace: every name resolves, every operator fits its column's
type, every value fits the column, nested audiences form no cycle.

:func:`audience_problems` returns ``(location, message)`` pairs, locations being key paths of the file
(``("audiences", "vip", "filter", "filters", "1", "column")``), so the loader reports each as
``cohortflow.yaml:LINE: audiences.vip.filter.filters.1.column: unknown column ...``. Nothing is compiled or
run while any problem remains.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cohortflow.filter_trees import describe_value
from cohortflow.sync.audiences.config import AudienceConfig, AudienceRef, ParentConfig
from cohortflow.sync.audiences.filters import (
    MAX_NODES,
    OPERATORS_BY_TYPE,
    EventCondition,
    FilterNode,
    InAudienceCondition,
    PropertyCondition,
    RelatedCondition,
    children,
    count_nodes,
    temporal_value,
)
from cohortflow.sync.audiences.schema import NUMERIC_AGGREGATES, parent_columns, relations

if TYPE_CHECKING:
    from cohortflow.sync.config import SyncConfig, WorkspaceConfig

Loc = tuple[str, ...]
Problem = tuple[Loc, str]

_WANTED = {
    "text": "a string",
    "number": "a number",
    "boolean": "true or false",
    "date": "a date (YYYY-MM-DD)",
    "timestamp": "a date or an ISO-8601 date-time",
}


def _names(names: Iterable[object]) -> str:
    return ", ".join(sorted(str(n) for n in names)) or "none declared"


def value_problem(kind: str, operator: str, value: object) -> str | None:
    """What is wrong with ``value`` for ``operator`` on a column of type ``kind`` (its shape, checked by the
    filter model, is already right); None when it fits."""
    if value is None or operator in ("within_last_days", "more_than_days_ago"):
        return None
    values = value if isinstance(value, list) else [value]
    parsed: list[object] = []
    for v in values:
        if kind in ("date", "timestamp"):
            try:
                parsed.append(temporal_value(v, kind))
            except ValueError as exc:
                return f"operator {operator!r} on a {kind} column needs {_WANTED[kind]}: {exc}"
            continue
        fits = {
            "text": isinstance(v, str),
            "number": isinstance(v, int | float) and not isinstance(v, bool),
            "boolean": isinstance(v, bool),
        }[kind]
        if not fits:
            return f"operator {operator!r} on a {kind} column needs {_WANTED[kind]}, got {describe_value(v)}"
        parsed.append(v)
    if operator == "between" and parsed[0] > parsed[1]:  # type: ignore[operator]
        low, high = describe_value(values[0]), describe_value(values[1])
        return f"'between' needs [from, to] with from <= to, got {low} > {high}"
    return None


@dataclass(frozen=True)
class _Scope:
    """Where a property condition is evaluated: the parent (its columns and traits) or, inside a ``where``,
    one related or event model (its columns only)."""

    label: str
    columns: dict[str, str]
    parent_name: str | None  # None inside a where: no relations, events or audiences there


class _Checker:
    def __init__(self, config: WorkspaceConfig) -> None:
        self.config = config
        self.problems: list[Problem] = []

    def add(self, loc: Loc, message: str) -> None:
        self.problems.append((loc, message))

    # -- schema -------------------------------------------------------------------------------------------

    def parent(self, name: str, parent: ParentConfig) -> None:
        loc: Loc = ("parents", name)
        models = self.config.models
        parent_model = models.get(parent.model)
        if parent_model is None:
            self.add((*loc, "model"), f"unknown model {parent.model!r} (models: {_names(models)})")
        for kind, table in (("related", parent.related), ("events", parent.events)):
            for rel_name, rel in table.items():
                rel_loc = (*loc, kind, rel_name)
                if kind == "events" and rel_name in parent.related:
                    self.add(rel_loc, f"{rel_name!r} is declared both as a related model and as an event")
                model = models.get(rel.model)
                if model is None:
                    self.add((*rel_loc, "model"), f"unknown model {rel.model!r} (models: {_names(models)})")
                elif parent_model is not None and model.source != parent_model.source:
                    self.add(
                        (*rel_loc, "model"),
                        f"model {rel.model!r} is in source {model.source!r} but the parent's model is in "
                        f"{parent_model.source!r}: an audience runs as one query in one warehouse",
                    )
        for event_name, event in parent.events.items():
            declared = event.columns.get(event.timestamp, "timestamp")
            if declared not in ("date", "timestamp"):
                self.add(
                    ("parents", name, "events", event_name, "timestamp"),
                    f"the timestamp column {event.timestamp!r} is declared as {declared}, not a date or timestamp",
                )
        rels = relations(parent)
        for trait_name, trait in parent.traits.items():
            trait_loc = (*loc, "traits", trait_name)
            if trait_name in parent.columns:
                self.add(trait_loc, f"trait {trait_name!r} has the name of a column of the parent")
            relation = rels.get(trait.relation)
            if relation is None:
                self.add(
                    (*trait_loc, "relation"),
                    f"unknown relation {trait.relation!r} of parent {name!r} (related models and events: "
                    f"{_names(rels)})",
                )
                continue
            for key in ("column", "order_by"):
                column = getattr(trait, key)
                if column is not None and column not in relation.columns:
                    self.add(
                        (*trait_loc, key),
                        f"unknown column {column!r} of {relation.describe()} (columns: {_names(relation.columns)})",
                    )
            column_type = relation.columns.get(trait.column or "")
            if trait.aggregate in NUMERIC_AGGREGATES and column_type not in (None, "number"):
                self.add(
                    (*trait_loc, "column"),
                    f"aggregate {trait.aggregate!r} needs a number column; {trait.column!r} is {column_type}",
                )
            if trait.aggregate in ("first", "last") and trait.order_by is None and relation.timestamp is None:
                self.add(
                    (*trait_loc, "order_by"),
                    f"aggregate {trait.aggregate!r} over {relation.describe()} needs 'order_by' (only events "
                    "have a time of their own)",
                )
            if trait.where is not None:
                scope = _Scope(relation.describe(), relation.columns, None)
                self.tree(trait.where, (*trait_loc, "where"), scope)

    # -- filter trees -------------------------------------------------------------------------------------

    def tree(self, node: FilterNode, loc: Loc, scope: _Scope) -> None:
        if isinstance(node, PropertyCondition):
            self.property(node, loc, scope)
        elif isinstance(node, RelatedCondition | EventCondition | InAudienceCondition) and scope.parent_name is None:
            self.add(
                (*loc, "type"),
                f"a 'where' over {scope.label} takes property conditions on its columns (and and/or/not "
                f"groups), not a condition of type {node.type!r}",
            )
        elif isinstance(node, RelatedCondition | EventCondition):
            self.relation_condition(node, loc, scope)
        elif isinstance(node, InAudienceCondition):
            self.in_audience(node, loc, scope)
        key = "filters" if node.type in ("and", "or") else "filter"
        for i, child in enumerate(children(node)):
            self.tree(child, (*loc, key, str(i)) if key == "filters" else (*loc, key), scope)

    def property(self, node: PropertyCondition, loc: Loc, scope: _Scope) -> None:
        kind = scope.columns.get(node.column)
        if kind is None:
            self.add((*loc, "column"), f"unknown column {node.column!r} of {scope.label} ({_columns(scope)})")
            return
        if node.operator not in OPERATORS_BY_TYPE[kind]:
            self.add(
                (*loc, "operator"),
                f"operator {node.operator!r} does not apply to the {kind} column {node.column!r}; use one of "
                f"{', '.join(OPERATORS_BY_TYPE[kind])}",
            )
            return
        problem = value_problem(kind, node.operator, node.value)
        if problem is not None:
            self.add((*loc, "value"), f"{problem} (column {node.column!r})")

    def relation_condition(self, node: RelatedCondition | EventCondition, loc: Loc, scope: _Scope) -> None:
        assert scope.parent_name is not None
        parent = self.config.parents[scope.parent_name]
        wanted = "related" if isinstance(node, RelatedCondition) else "event"
        name = node.relation if isinstance(node, RelatedCondition) else node.event
        key = "relation" if isinstance(node, RelatedCondition) else "event"
        relation = relations(parent).get(name)
        if relation is None or relation.kind != wanted:
            table = parent.related if wanted == "related" else parent.events
            hint = ""
            if relation is not None:
                other = "an event: use a 'performed'" if wanted == "related" else "a related model: use a 'related'"
                hint = f"; {name!r} is {other} condition"
            label = "related model" if wanted == "related" else "event"
            self.add(
                (*loc, key),
                f"unknown {label} {name!r} of parent {scope.parent_name!r} ({label}s: {_names(table)}){hint}",
            )
            return
        if isinstance(node, EventCondition):
            kind = relation.columns.get(relation.timestamp or "", "timestamp")
            bounds = []
            for bound in ("after", "before"):
                value = getattr(node, bound)
                if value is None:
                    continue
                try:
                    bounds.append(temporal_value(value, kind))
                except ValueError as exc:
                    self.add((*loc, bound), f"the event's timestamp is a {kind}: {exc}")
            if len(bounds) == 2 and bounds[0] > bounds[1]:
                self.add((*loc, "before"), "'after' is later than 'before': the window is empty")
        if node.where is not None:
            self.tree(node.where, (*loc, "where"), _Scope(relation.describe(), relation.columns, None))

    def in_audience(self, node: InAudienceCondition, loc: Loc, scope: _Scope) -> None:
        other = self.config.audiences.get(node.audience)
        if other is None:
            known = _names(self.config.audiences)
            self.add((*loc, "audience"), f"unknown audience {node.audience!r} (audiences: {known})")
        elif other.parent != scope.parent_name:
            self.add(
                (*loc, "audience"),
                f"audience {node.audience!r} is over parent {other.parent!r}, not {scope.parent_name!r}",
            )

    # -- audiences, cycles, priority lists, syncs ---------------------------------------------------------

    def audience(self, name: str, audience: AudienceConfig) -> None:
        loc: Loc = ("audiences", name)
        parent = self.config.parents.get(audience.parent)
        if parent is None:
            self.add((*loc, "parent"), f"unknown parent {audience.parent!r} (parents: {_names(self.config.parents)})")
            return
        if audience.filter is None:
            return
        nodes = count_nodes(audience.filter)
        if nodes > MAX_NODES:
            self.add((*loc, "filter"), f"{nodes} conditions and groups, at most {MAX_NODES} allowed")
            return
        scope = _Scope(f"parent {audience.parent!r}", parent_columns(parent), audience.parent)
        self.tree(audience.filter, (*loc, "filter"), scope)

    def cycles(self) -> None:
        graph = {name: sorted(set(audience_references(a.filter))) for name, a in self.config.audiences.items()}
        reported: set[frozenset[str]] = set()
        for start in graph:
            path = _cycle_from(graph, start)
            if path is not None and frozenset(path) not in reported:
                reported.add(frozenset(path))
                self.add(("audiences", start, "filter"), f"audience {start!r} includes itself: {' -> '.join(path)}")

    def priority_list(self, name: str, audiences: list[str]) -> None:
        loc: Loc = ("priority_lists", name, "audiences")
        parents: dict[str, str] = {}
        for i, audience_name in enumerate(audiences):
            audience = self.config.audiences.get(audience_name)
            if audience is None:
                self.add(
                    (*loc, str(i)),
                    f"unknown audience {audience_name!r} (audiences: {_names(self.config.audiences)})",
                )
            elif audience_name in audiences[:i]:
                self.add((*loc, str(i)), f"audience {audience_name!r} is listed twice")
            else:
                parents[audience_name] = audience.parent
        if len(set(parents.values())) > 1:
            listed = ", ".join(f"{a!r} ({p})" for a, p in parents.items())
            self.add(loc, f"the audiences of a priority list share one parent; these do not: {listed}")

    def sync(self, name: str, sync: SyncConfig, ref: AudienceRef) -> None:
        loc: Loc = ("syncs", name, "audience")
        problems = reference_problems(self.config, ref)
        for where, message in problems:
            self.add((*loc, *where), message)
        audience = self.config.audiences.get(ref.name)
        parent = self.config.parents.get(audience.parent) if audience is not None else None
        if problems or audience is None or parent is None:
            return
        # Imported here: the identifiers module reads sync.config, which runs these checks.
        from cohortflow.sync.identifiers import identifier_columns

        for column in identifier_columns(sync.identifier):
            if column not in parent.identifiers:
                self.add(
                    ("syncs", name, "identifier"),
                    f"column {column!r} is not an identifier of parent {audience.parent!r} "
                    f"(identifiers: {', '.join(parent.identifiers)})",
                )

    def run(self) -> list[Problem]:
        for name, parent in self.config.parents.items():
            self.parent(name, parent)
        for name, audience in self.config.audiences.items():
            self.audience(name, audience)
        self.cycles()
        for name, plist in self.config.priority_lists.items():
            self.priority_list(name, plist.audiences)
        for name, sync in self.config.syncs.items():
            ref = getattr(sync, "audience", None)
            if ref is not None:
                self.sync(name, sync, ref)
        return self.problems


def _columns(scope: _Scope) -> str:
    return f"columns: {_names(scope.columns)}" if scope.columns else "no columns declared"


def audience_references(node: FilterNode | None) -> Iterator[str]:
    """The audiences a tree names with ``in_audience`` (directly; ``where`` trees cannot name any)."""
    if node is None:
        return
    if isinstance(node, InAudienceCondition):
        yield node.audience
    for child in children(node):
        yield from audience_references(child)


def _cycle_from(graph: dict[str, list[str]], start: str) -> list[str] | None:
    """A path start -> ... -> start through ``graph``, or None."""
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    seen: set[str] = set()
    while stack:
        node, path = stack.pop()
        for nxt in graph.get(node, []):
            if nxt == start:
                return [*path, start]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, [*path, nxt]))
    return None


def reference_problems(config: WorkspaceConfig, ref: AudienceRef) -> list[Problem]:
    """What does not resolve in a reference to an audience (locations relative to the reference)."""
    audience = config.audiences.get(ref.name)
    if audience is None:
        hint = f"; {ref.name!r} is a model: use 'model: {ref.name}'" if ref.name in config.models else ""
        return [((), f"unknown audience {ref.name!r} (audiences: {_names(config.audiences)}){hint}")]
    problems: list[Problem] = []
    if ref.split is not None:
        groups = audience.splits.groups if audience.splits is not None else {}
        if ref.split not in groups:
            problems.append(
                (("split",), f"audience {ref.name!r} has no split group {ref.split!r} (groups: {_names(groups)})")
            )
    if ref.priority_list is not None:
        plist = config.priority_lists.get(ref.priority_list)
        if plist is None:
            known = _names(config.priority_lists)
            problems.append(
                (("priority_list",), f"unknown priority list {ref.priority_list!r} (priority lists: {known})")
            )
        elif ref.name not in plist.audiences:
            problems.append(
                (
                    ("priority_list",),
                    f"priority list {ref.priority_list!r} does not list audience {ref.name!r} "
                    f"(it lists: {', '.join(plist.audiences)})",
                )
            )
    return problems


def audience_problems(config: WorkspaceConfig) -> list[Problem]:
    """Every problem of the file's parents, audiences, priority lists and syncs of audiences."""
    return _Checker(config).run()
