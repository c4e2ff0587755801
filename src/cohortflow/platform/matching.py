"""Identity matching for cohort import: partner identifiers to user ids of one workspace.

The rules (Braze's, see ``shared/braze-contract.md`` section 1):

- ``user_ids`` are external ids;
- an alias ``{alias_name, alias_label}`` matches the user holding it;
- a ``device_id`` matches only an **anonymous** user (``external_id IS NULL``). A device that once belonged to an
  anonymous user who was later identified still points at that user, and must match nothing.

Matching is set-based: one query per identifier kind for a whole request, whatever its size. The batch
travels as one JSON parameter (read with ``json_array_elements_text`` on PostgreSQL, ``json_each`` on SQLite),
so the statement text stays constant and SQLAlchemy's compiled cache serves every request; the queries are
shaped so that both planners probe the identifier's unique index (workspace_id + identifier) once per
identifier instead of scanning the workspace. Batches are sorted first, so the probes walk the index in key
order and keep its pages hot.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import (
    ARRAY,
    JSON,
    ColumnElement,
    Connection,
    Select,
    Text,
    any_,
    bindparam,
    cast,
    column,
    func,
    select,
    true,
    tuple_,
)
from sqlalchemy.sql.elements import ColumnClause
from sqlalchemy.sql.selectable import TableValuedAlias

from cohortflow.platform.store.schema import user_aliases, user_devices, users
from cohortflow.wire.cohort_import import CohortChange

AliasKey = tuple[str, str]
"""``(alias_name, alias_label)``, in the wire's field order."""

_EXTERNAL_ID_MAX = users.c.external_id.type.length or 512  # type: ignore[attr-defined]
_DEVICE_ID_MAX = user_devices.c.device_id.type.length or 512  # type: ignore[attr-defined]
_ALIAS_NAME_MAX = user_aliases.c.alias_name.type.length or 512  # type: ignore[attr-defined]
_ALIAS_LABEL_MAX = user_aliases.c.alias_label.type.length or 255  # type: ignore[attr-defined]


def _storable(value: str, max_length: int) -> bool:
    """Whether a stored identifier could equal ``value``.

    Values that no column can hold (too long, or with a NUL that PostgreSQL refuses in text) cannot match; they
    are dropped before the query so that they count as unmatched instead of failing the request.
    """
    return len(value) <= max_length and "\x00" not in value


def _is_postgres(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql"


def _json_param(values: Sequence[Any]) -> Any:
    # One text parameter encoded by orjson: binding a Python list as an array costs psycopg ~1 ms per
    # 1,000 elements in pure Python, and SQLAlchemy as much again.
    return bindparam(None, orjson.dumps(list(values)).decode(), type_=Text)


def batch_source(conn: Connection, values: Sequence[Any]) -> TableValuedAlias:
    """``values`` as a one-column row source (column ``value``) bound as a single JSON parameter.

    On PostgreSQL the column is text; compare it through :func:`batch_value`.
    """
    if _is_postgres(conn):
        return func.json_array_elements_text(cast(_json_param(values), JSON)).table_valued("value").render_derived()
    return func.json_each(_json_param(values)).table_valued("value")


def batch_value(conn: Connection, source: TableValuedAlias, element_type: Any = Text) -> ColumnElement[Any]:
    """The ``value`` column of :func:`batch_source`, typed as ``element_type``."""
    if _is_postgres(conn) and element_type is not Text:
        return cast(source.c.value, element_type)
    return source.c.value


def batch_array(conn: Connection, values: Sequence[Any], element_type: Any = Text) -> ColumnElement[Any]:
    """PostgreSQL only: ``values`` as one array value, built server-side from the single JSON parameter.

    ``column = ANY(<array>)`` is an index scan with the array as its search key: PostgreSQL sorts and
    de-duplicates the keys and descends the index once per key, with no join for the planner to misjudge
    (a workspace seeded a minute ago has no statistics yet) and ~4x less executor work than a per-value
    ``LATERAL`` probe.
    """
    source = batch_source(conn, values)
    aggregated = select(func.array_agg(batch_value(conn, source, element_type))).scalar_subquery()
    return cast(aggregated, ARRAY(element_type))


def in_batch(
    conn: Connection, target: ColumnElement[Any] | ColumnClause[Any], values: Sequence[Any], element_type: Any = Text
) -> ColumnElement[bool]:
    """``target IN values`` with the whole batch as one parameter."""
    source = batch_source(conn, values)
    return target.in_(select(batch_value(conn, source, element_type)))


def probe(
    conn: Connection,
    query: Select[Any],
    in_workspace: ColumnElement[bool],
    key: ColumnClause[Any],
    values: Sequence[str],
) -> Select[Any]:
    """``query`` restricted to rows whose ``key`` is one of ``values``, probing the unique index per value.

    The shape pins the plan whatever the table statistics say (a workspace seeded a minute ago has none yet):
    PostgreSQL gets ``key = ANY(<array>)`` (see :func:`batch_array`); SQLite gets ``IN (SELECT ... json_each)``,
    since it cannot size a ``json_each`` join and would otherwise walk the workspace's index.
    """
    if _is_postgres(conn):
        return query.where(in_workspace, key == any_(batch_array(conn, values)))
    return query.where(in_workspace, in_batch(conn, key, values))


def match_external_ids(conn: Connection, workspace_id: str, external_ids: Collection[str]) -> dict[str, int]:
    """External id -> user id, for the ids that exist in the workspace."""
    wanted = sorted(v for v in set(external_ids) if _storable(v, _EXTERNAL_ID_MAX))
    if not wanted:
        return {}
    rows = conn.execute(
        probe(
            conn,
            select(users.c.external_id, users.c.id),
            users.c.workspace_id == workspace_id,
            users.c.external_id,
            wanted,
        )
    )
    return {str(external_id): int(user_id) for external_id, user_id in rows.all()}


def match_anonymous_devices(conn: Connection, workspace_id: str, device_ids: Collection[str]) -> dict[str, int]:
    """Device id -> user id, only where the device's user is anonymous (has no external id)."""
    wanted = sorted(v for v in set(device_ids) if _storable(v, _DEVICE_ID_MAX))
    if not wanted:
        return {}
    found = probe(
        conn,
        select(user_devices.c.device_id, user_devices.c.user_id),
        user_devices.c.workspace_id == workspace_id,
        user_devices.c.device_id,
        wanted,
    ).subquery()
    rows = conn.execute(
        select(found.c.device_id, users.c.id)
        .join(users, users.c.id == found.c.user_id)
        # The device row already scopes the workspace. Repeating it on ``users`` would hand SQLite's planner
        # the (workspace_id, external_id) index and make it walk every anonymous user of the workspace.
        .where(users.c.external_id.is_(None))
    )
    return {str(device_id): int(user_id) for device_id, user_id in rows.all()}


def match_aliases(conn: Connection, workspace_id: str, aliases: Collection[AliasKey]) -> dict[AliasKey, int]:
    """``(alias_name, alias_label)`` -> user id, for the aliases that exist in the workspace."""
    wanted = sorted(
        (name, label)
        for name, label in set(aliases)
        if _storable(name, _ALIAS_NAME_MAX) and _storable(label, _ALIAS_LABEL_MAX)
    )
    if not wanted:
        return {}
    a = user_aliases
    if _is_postgres(conn):
        records = [{"alias_name": n, "alias_label": label} for n, label in wanted]
        pairs = (
            func.json_to_recordset(cast(_json_param(records), JSON))
            .table_valued(column("alias_name", Text), column("alias_label", Text))
            .render_derived(with_types=True)
        )
        probe = (
            select(a.c.alias_name, a.c.alias_label, a.c.user_id)
            .where(
                a.c.workspace_id == workspace_id,
                a.c.alias_label == pairs.c.alias_label,
                a.c.alias_name == pairs.c.alias_name,
            )
            .limit(1)
            .lateral()
        )
        query = select(*probe.c).select_from(pairs).join(probe, true())
    else:
        pairs = batch_source(conn, [[n, label] for n, label in wanted])
        query = select(a.c.alias_name, a.c.alias_label, a.c.user_id).where(
            a.c.workspace_id == workspace_id,
            tuple_(a.c.alias_label, a.c.alias_name).in_(
                select(func.json_extract(pairs.c.value, "$[1]"), func.json_extract(pairs.c.value, "$[0]"))
            ),
        )
    rows = conn.execute(query)
    return {(str(name), str(label)): int(user_id) for name, label, user_id in rows.all()}


@dataclass(frozen=True)
class ResolvedChange:
    """One ``cohort_changes`` object after matching."""

    should_remove: bool
    received: int
    user_ids: list[int]
    """One entry per matched identifier, in request order (a user named twice appears twice)."""
    unmatched: list[dict[str, str]]
    """The identifiers that matched nobody, in their wire shape (``{"user_id": ...}``, ...)."""


def resolve_changes(conn: Connection, workspace_id: str, changes: Sequence[CohortChange]) -> list[ResolvedChange]:
    """Match every identifier of a request: one query per identifier kind for all its change objects."""
    external = match_external_ids(conn, workspace_id, {v for c in changes for v in c.user_ids})
    devices = match_anonymous_devices(conn, workspace_id, {v for c in changes for v in c.device_ids})
    aliases = match_aliases(conn, workspace_id, {(a.alias_name, a.alias_label) for c in changes for a in c.aliases})
    resolved: list[ResolvedChange] = []
    for change in changes:
        matched: list[int] = []
        unmatched: list[dict[str, str]] = []
        for external_id in change.user_ids:
            user_id = external.get(external_id)
            if user_id is None:
                unmatched.append({"user_id": external_id})
            else:
                matched.append(user_id)
        for device_id in change.device_ids:
            user_id = devices.get(device_id)
            if user_id is None:
                unmatched.append({"device_id": device_id})
            else:
                matched.append(user_id)
        for alias in change.aliases:
            user_id = aliases.get((alias.alias_name, alias.alias_label))
            if user_id is None:
                unmatched.append({"alias_name": alias.alias_name, "alias_label": alias.alias_label})
            else:
                matched.append(user_id)
        resolved.append(ResolvedChange(change.should_remove, change.identifier_count, matched, unmatched))
    return resolved
