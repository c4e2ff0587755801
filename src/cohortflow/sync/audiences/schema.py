"""Name resolution over a parent's schema: which columns a condition may name, and their types.

Shared by the checks (:mod:`.validate`), the compiler and :func:`describe_parent` (what a visual builder
offers to pick from). A parent's columns are its declared columns plus its traits; a related or event
model's columns are its declared columns plus, for an event, its timestamp.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from cohortflow.sync.audiences.config import EventModel, ParentConfig, RelatedModel, TraitConfig
from cohortflow.sync.audiences.filters import OPERATORS_BY_TYPE

NUMERIC_AGGREGATES = ("sum", "average")


@dataclass(frozen=True)
class Relation:
    name: str
    kind: Literal["related", "event"]
    config: RelatedModel | EventModel
    columns: dict[str, str]

    @property
    def timestamp(self) -> str | None:
        return self.config.timestamp if isinstance(self.config, EventModel) else None

    def describe(self) -> str:
        return f"{'event' if self.kind == 'event' else 'related model'} {self.name!r}"


def relations(parent: ParentConfig) -> dict[str, Relation]:
    """Related and event models by name (related first when a name is declared twice, which is an error)."""
    out: dict[str, Relation] = {}
    for name, event in parent.events.items():
        out[name] = Relation(name, "event", event, {event.timestamp: "timestamp", **event.columns})
    for name, related in parent.related.items():
        out[name] = Relation(name, "related", related, dict(related.columns))
    return out


def trait_type(parent: ParentConfig, trait: TraitConfig) -> str | None:
    """The type of a trait's values; None when its relation or column does not resolve."""
    if trait.aggregate == "count":
        return "number"
    relation = relations(parent).get(trait.relation)
    if relation is None or trait.column is None or trait.column not in relation.columns:
        return None
    if trait.aggregate in NUMERIC_AGGREGATES:
        return "number"
    return relation.columns[trait.column]


def parent_columns(parent: ParentConfig) -> dict[str, str]:
    """Columns a property condition over the parent may name: declared columns, then traits."""
    out: dict[str, str] = dict(parent.columns)
    for name, trait in parent.traits.items():
        kind = trait_type(parent, trait)
        if kind is not None and name not in out:
            out[name] = kind
    return out


def describe_parent(parent_name: str, parent: ParentConfig) -> dict[str, Any]:
    """What a builder offers for audiences of this parent: columns and traits with their types and
    operators, related models and events with theirs, as plain JSON-able data."""

    def columns(types: dict[str, str]) -> list[dict[str, Any]]:
        return [{"name": n, "type": t, "operators": list(OPERATORS_BY_TYPE[t])} for n, t in types.items()]

    rels = relations(parent)
    return {
        "parent": parent_name,
        "model": parent.model,
        "identifiers": list(parent.identifiers),
        "columns": columns(dict(parent.columns)),
        "traits": [
            {
                "name": name,
                "type": trait_type(parent, trait),
                "relation": trait.relation,
                "aggregate": trait.aggregate,
                "column": trait.column,
                "operators": list(OPERATORS_BY_TYPE.get(trait_type(parent, trait) or "", ())),
            }
            for name, trait in parent.traits.items()
        ],
        "related": [
            {
                "name": r.name,
                "model": r.config.model,
                "cardinality": r.config.cardinality if isinstance(r.config, RelatedModel) else "many",
                "columns": columns(r.columns),
            }
            for r in rels.values()
            if r.kind == "related"
        ],
        "events": [
            {"name": r.name, "model": r.config.model, "timestamp": r.timestamp, "columns": columns(r.columns)}
            for r in rels.values()
            if r.kind == "event"
        ],
    }
