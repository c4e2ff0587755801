"""``/users/track``'s common request on PostgreSQL in one statement: profiles named by external id, created when
missing, their attributes set or removed, with no custom attribute whose new value depends on the old one.

The general path (:mod:`cohortflow.platform.tracking`) finds and locks the users, inserts the missing ones and
updates the others: three statements, and Python work per user. Here each object's changes fold into the final
change per user (later objects win, as they do there), and one ``INSERT ... SELECT FROM jsonb_to_recordset(...)
ON CONFLICT DO UPDATE`` applies them: a new user is inserted with its attributes, an existing one gets the given
columns and ``custom_attributes || set - removed``. The stored rows are the general path's (a property-based
test holds the two to it). Anything else (an ``inc``, ``add`` or ``remove``, an object that changes nothing, an
update-only object) returns None and is left to the general path.

Lock order: upserts take their users in external id order. The general path locks the existing users it names
in id order, then inserts the new ones in external id order; ids follow external ids within a batch of new
users, so the two orders agree unless users created by different requests are named together with a new one
in between. Then an upsert and a concurrent general-path request can deadlock; PostgreSQL detects it and aborts
one of them, which leaves nothing half-applied and runs again (:func:`cohortflow.platform.store.engine.
retry_collisions`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import orjson
from sqlalchemy import Connection

from cohortflow.platform import identity
from cohortflow.platform.profile_attributes import ProfileChanges


class NamedByExternalId(Protocol):
    """What this path reads of an attributes object (a ``LeanAttributes`` or an ``AttributesObject``)."""

    @property
    def external_id(self) -> str | None: ...
    @property
    def user_alias(self) -> object | None: ...
    @property
    def braze_id(self) -> str | None: ...
    @property
    def updates_existing_only(self) -> bool: ...
    @property
    def changes(self) -> ProfileChanges: ...


@dataclass
class _Final:
    """One user's changes after every object naming it: columns given, custom attributes set, and removed."""

    columns: dict[str, Any] = field(default_factory=dict)
    custom: dict[str, Any] = field(default_factory=dict)
    removed: set[str] = field(default_factory=set)


def _fold(objects: Sequence[NamedByExternalId]) -> dict[str, _Final] | None:
    """The final change per external id; None when an object needs the general path."""
    finals: dict[str, _Final] = {}
    for obj in objects:
        ext = obj.external_id
        changes = obj.changes
        if ext is None or obj.user_alias is not None or obj.braze_id is not None or obj.updates_existing_only:
            return None
        if not changes:
            # Changes nothing: an existing user keeps its updated_at, which an upsert would bump.
            return None
        final = finals.get(ext)
        if final is None:
            final = finals[ext] = _Final()
        final.columns.update(changes.columns)
        for op in changes.custom:
            if op.kind == "set":
                final.custom[op.key] = op.value
                final.removed.discard(op.key)
            elif op.kind == "unset":
                final.custom.pop(op.key, None)
                final.removed.add(op.key)
            else:
                return None  # inc, add, remove: the new value depends on the stored one
    return finals


@dataclass(frozen=True)
class UpsertPlan:
    """What a request changes, grouped by shape (the columns given, whether custom attributes are removed): one
    statement per shape, usually one in all."""

    shapes: dict[tuple[tuple[str, ...], bool], list[tuple[str, _Final]]]
    objects: int

    @property
    def single_statement(self) -> bool:
        """Whether one statement applies it all: then it needs no transaction around it to be all or nothing."""
        return len(self.shapes) == 1


def plan(objects: Sequence[NamedByExternalId]) -> UpsertPlan | None:
    """The upsert of the attributes ``objects``, or None when the request is not of the kind this path takes."""
    finals = _fold(objects)
    if finals is None:
        return None
    shapes: dict[tuple[tuple[str, ...], bool], list[tuple[str, _Final]]] = {}
    for ext, final in sorted(finals.items()):
        shapes.setdefault((tuple(sorted(final.columns)), bool(final.removed)), []).append((ext, final))
    return UpsertPlan(shapes, len(objects))


def apply(conn: Connection, workspace_id: str, upsert: UpsertPlan, now: datetime) -> int:
    """Run the upsert (PostgreSQL only); how many objects were processed."""
    for (columns, removes), group in upsert.shapes.items():
        # The users travel as one JSON document that PostgreSQL parses in C: psycopg escaping arrays of text
        # element by element in Python cost more than the rest of the request's Python work.
        rows = [
            {**final.columns, "external_id": ext, "braze_id": braze_id, "random_bucket": bucket, "custom": final.custom}
            for (ext, final), (braze_id, bucket) in zip(group, identity.new_identities(len(group)), strict=True)
        ]
        params: list[Any] = [workspace_id, now, now, orjson.dumps(rows).decode()]
        if removes:
            removed = {ext: sorted(final.removed) for ext, final in group if final.removed}
            params.append(orjson.dumps(removed).decode())
        conn.exec_driver_sql(_upsert_sql(columns, removes), tuple(params))
    return upsert.objects


@functools.cache
def _upsert_sql(columns: tuple[str, ...], removes: bool) -> str:
    """The upsert of users given as a JSON array of objects, setting ``columns`` (all text); with ``removes``, a
    last parameter maps external ids to the custom attributes to remove."""
    fields = ", ".join(
        ["external_id text", "braze_id text", "random_bucket int", "custom jsonb", *(f"{c} text" for c in columns)]
    )
    names = ["external_id", "braze_id", "random_bucket", "custom_attributes", *columns]
    selected = ", ".join(["v.external_id", "v.braze_id", "v.random_bucket", "v.custom", *(f"v.{c}" for c in columns)])
    custom = "u.custom_attributes || EXCLUDED.custom_attributes"
    if removes:
        custom = f"({custom}) - ARRAY(SELECT jsonb_array_elements_text(%s::jsonb -> EXCLUDED.external_id))"
    sets = ", ".join(
        [*(f"{c} = EXCLUDED.{c}" for c in columns), f"custom_attributes = {custom}", "updated_at = EXCLUDED.updated_at"]
    )
    return (
        f"INSERT INTO users AS u (workspace_id, created_at, updated_at, {', '.join(names)}) "
        f"SELECT %s, %s, %s, {selected} FROM jsonb_to_recordset(%s::jsonb) AS v({fields}) "
        # In external id order: two upserts lock rows and unique index entries in the same order, so they
        # cannot deadlock (against the general path, see the module's docstring). No lookup decides the order:
        # with statistics from when the workspace was small (autovacuum off, or not yet run) every lookup plan
        # tried scanned the workspace's users, once or once per user, on every request (7 → 25 ms of
        # PostgreSQL CPU a request, and growing).
        "ORDER BY v.external_id "
        f"ON CONFLICT (workspace_id, external_id) DO UPDATE SET {sets}"
    )
