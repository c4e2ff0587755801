"""``/users/track``: attributes, events and purchases applied to profiles, creating users where allowed.

Decisions where Braze is silent: every object is validated before anything is written (one invalid object
rejects the whole request with 400); objects that name a user that does not exist and may not be created
(``_update_existing_only``, an unknown ``braze_id``) are skipped and listed in ``errors``; objects are applied
in the order attributes, events, purchases, so an attributes object can create the user its events name.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, tuple_, update

from cohortflow.clock import utcnow
from cohortflow.platform import identity, matching, user_upsert
from cohortflow.platform.errors import InvalidRequest
from cohortflow.platform.identity import AliasKey
from cohortflow.platform.profile_attributes import ProfileChanges
from cohortflow.platform.store.schema import (
    user_aliases,
    user_events,
    user_purchases,
    users,
)
from cohortflow.platform.track_request import (
    EventObject,
    Identified,
    PurchaseObject,
    TrackError,
    TrackRequest,
    TrackResponse,
    parse_time,
)


class _Profile:
    """A locked user row being changed in memory; written back once per request.

    A *new* profile (``id`` None) is a user this request creates: it is inserted once, with its final
    attributes, when the request is flushed; until then ``log`` keeps the changes applied to it, so that if a
    concurrent request created the same user first they are replayed on that user instead.
    """

    def __init__(self, row: dict[str, Any], *, new: bool = False) -> None:
        self.id: int | None = None if new else int(row["id"])
        self.row = row
        self.custom: dict[str, Any] = dict(row.get("custom_attributes") or {})
        self.columns: dict[str, Any] = {}
        self.dirty = False
        self.log: list[tuple[ProfileChanges, str]] | None = [] if new else None

    @property
    def user_id(self) -> int:
        assert self.id is not None, "a new profile has an id once the request is flushed"
        return self.id

    def apply(self, changes: ProfileChanges, where: str) -> None:
        if not changes:
            return
        if self.log is not None:
            self.log.append((changes, where))
        self.dirty = True
        self.columns.update(changes.columns)
        for op in changes.custom:
            current = self.custom.get(op.key)
            if op.kind == "set":
                self.custom[op.key] = op.value
            elif op.kind == "unset":
                self.custom.pop(op.key, None)
            elif op.kind == "inc":
                if current is None:
                    current = 0
                if not isinstance(current, int) or isinstance(current, bool):
                    raise InvalidRequest(
                        f"{where}: cannot increment custom attribute {op.key!r}: its current value is not an integer"
                    )
                self.custom[op.key] = current + op.value
            else:
                if current is None:
                    current = []
                if not isinstance(current, list):
                    raise InvalidRequest(
                        f"{where}: cannot {op.kind} values of custom attribute {op.key!r}: its current value is "
                        "not an array"
                    )
                if op.kind == "add":
                    # Braze: an element already present moves to the end.
                    current = [v for v in current if v not in op.value] + list(op.value)
                else:
                    current = [v for v in current if v not in op.value]
                self.custom[op.key] = current

    def flush(self, conn: Connection, now: datetime) -> None:
        if self.dirty:
            flush_profiles(conn, [self], now)


def flush_profiles(conn: Connection, profiles: list[_Profile], now: datetime) -> None:
    """Write changed profiles back: one statement per set of changed columns.

    PostgreSQL: one ``UPDATE ... FROM unnest(arrays)`` for the whole set (one statement for the server to run,
    not one per user); SQLite (in process, no round trips): one executemany.
    """
    groups: dict[tuple[str, ...], list[_Profile]] = {}
    for profile in profiles:
        if profile.dirty and profile.id is not None:
            groups.setdefault(tuple(sorted(profile.columns)), []).append(profile)
    if conn.dialect.name == "postgresql":
        serialize = getattr(conn.dialect, "_json_serializer", None) or json.dumps
        for columns, group in groups.items():
            conn.exec_driver_sql(
                _pg_update_sql(columns),
                (
                    now,  # updated_at: its placeholder comes first, in SET
                    [p.id for p in group],
                    *([p.columns[c] for p in group] for c in columns),
                    [serialize(p.custom) for p in group],
                ),
            )
            for p in group:
                p.dirty = False
        return
    for columns, group in groups.items():
        values: dict[str, Any] = {c: bindparam(f"v_{c}", type_=users.c[c].type) for c in columns}
        values["custom_attributes"] = bindparam("v_custom_attributes", type_=users.c.custom_attributes.type)
        values["updated_at"] = bindparam("v_updated_at", type_=users.c.updated_at.type)
        conn.execute(
            update(users).where(users.c.id == bindparam("v_id")).values(values),
            [
                {
                    "v_id": p.id,
                    "v_custom_attributes": p.custom,
                    "v_updated_at": now,
                    **{f"v_{c}": p.columns[c] for c in columns},
                }
                for p in group
            ],
        )
        for p in group:
            p.dirty = False


@functools.cache
def _pg_update_sql(columns: tuple[str, ...]) -> str:
    """``UPDATE users`` of ``columns`` (all text) and the custom attributes for a batch of users given as arrays."""
    names = [*columns, "custom_attributes"]
    arrays = ", ".join(["%s::bigint[]", *(["%s::text[]"] * len(columns)), "%s::text[]"])
    sets = ", ".join(
        [*(f"{c} = v.{c}" for c in columns), "custom_attributes = v.custom_attributes::jsonb", "updated_at = %s"]
    )
    return f"UPDATE users AS u SET {sets} FROM unnest({arrays}) AS v(id, {', '.join(names)}) WHERE u.id = v.id"


class _Resolver:
    """Resolves the users a track request names, locking them, creating the ones it may create."""

    def __init__(self, conn: Connection, workspace_id: str, now: datetime) -> None:
        self.conn = conn
        self.workspace_id = workspace_id
        self.now = now
        self.by_external: dict[str, int] = {}
        self.by_alias: dict[AliasKey, int] = {}
        self.by_braze: dict[str, int] = {}
        self.profiles: dict[int, _Profile] = {}
        self.new_users: dict[str, _Profile] = {}
        self.new_aliases: dict[AliasKey, _Profile] = {}

    def prefetch(self, objects: list[Identified]) -> None:
        externals = {o.external_id for o in objects if o.external_id is not None}
        aliases = {o.user_alias.key() for o in objects if o.user_alias is not None}
        brazes = {o.braze_id for o in objects if o.braze_id is not None}
        ws = self.workspace_id
        if externals and not aliases and not brazes:
            # The common request, every user named by external id: find and lock them in one statement (rows
            # locked in id order, as below, so concurrent requests cannot deadlock).
            query = matching.probe(
                self.conn, select(users), users.c.workspace_id == ws, users.c.external_id, sorted(externals)
            )
            if self.conn.dialect.name == "postgresql":
                query = query.with_for_update()
            for row in self.conn.execute(query.order_by(users.c.id)).mappings():
                self.by_external[row["external_id"]] = int(row["id"])
                self.profiles[int(row["id"])] = _Profile(dict(row))
        elif externals:
            for uid, ext in self.conn.execute(
                select(users.c.id, users.c.external_id).where(
                    users.c.workspace_id == ws, users.c.external_id.in_(externals)
                )
            ):
                self.by_external[ext] = int(uid)
        if externals:
            # Missing users whose first mention may create them are created at flush, once, with the attributes
            # the whole request gives them; a user whose first mention is update-only is left to ``resolve``,
            # so the request's order still decides.
            first: dict[str, Identified] = {}
            for o in objects:
                if o.external_id is not None:
                    first.setdefault(o.external_id, o)
            for ext, o in first.items():
                if ext not in self.by_external and not o.updates_existing_only:
                    self.new_users[ext] = _Profile(identity.new_user_values(ws, ext, self.now), new=True)
        if aliases:
            for uid, label, name in self.conn.execute(
                select(user_aliases.c.user_id, user_aliases.c.alias_label, user_aliases.c.alias_name).where(
                    user_aliases.c.workspace_id == ws,
                    tuple_(user_aliases.c.alias_label, user_aliases.c.alias_name).in_(
                        [(a.alias_label, a.alias_name) for a in aliases]
                    ),
                )
            ):
                self.by_alias[AliasKey(label, name)] = int(uid)
            # Missing alias-only users whose first mention may create them: created at flush, like new
            # external ids (one batch, final attributes).
            first_alias: dict[AliasKey, Identified] = {}
            for o in objects:
                if o.user_alias is not None:
                    first_alias.setdefault(o.user_alias.key(), o)
            for alias, o in first_alias.items():
                if alias not in self.by_alias and not o.updates_existing_only:
                    self.new_aliases[alias] = _Profile(identity.new_user_values(ws, None, self.now), new=True)
        if brazes:
            for uid, bid in self.conn.execute(
                select(users.c.id, users.c.braze_id).where(users.c.workspace_id == ws, users.c.braze_id.in_(brazes))
            ):
                self.by_braze[bid] = int(uid)
        named = {*self.by_external.values(), *self.by_alias.values(), *self.by_braze.values()}
        ids = sorted(named - set(self.profiles))
        if ids:
            query = select(users).where(users.c.workspace_id == ws, users.c.id.in_(ids)).order_by(users.c.id)
            if self.conn.dialect.name == "postgresql":
                query = query.with_for_update()
            for row in self.conn.execute(query).mappings():
                self.profiles[int(row["id"])] = _Profile(dict(row))
        # A user deleted between the lookups and the lock is simply not found.
        for mapping in (self.by_external, self.by_alias, self.by_braze):
            for key in [k for k, uid in mapping.items() if uid not in self.profiles]:
                del mapping[key]  # type: ignore[arg-type]

    def _load(self, user_id: int) -> _Profile:
        row = identity.get_user(self.conn, self.workspace_id, user_id, lock=True)
        assert row is not None
        profile = _Profile(row)
        self.profiles[user_id] = profile
        return profile

    def resolve(self, obj: Identified) -> _Profile | str:
        """The profile ``obj`` names, or why it was skipped (Braze's non-fatal error ``type``)."""
        create = not obj.updates_existing_only
        if obj.external_id is not None:
            uid = self.by_external.get(obj.external_id)
            if uid is None and obj.external_id in self.new_users:
                return self.new_users[obj.external_id]
            if uid is None:
                if not create:
                    return "external_id does not exist and _update_existing_only is true"
                uid, _ = identity.get_or_create_by_external_id(
                    self.conn, self.workspace_id, obj.external_id, now=self.now
                )
                self.by_external[obj.external_id] = uid
                return self.profiles.get(uid) or self._load(uid)
            return self.profiles[uid]
        if obj.user_alias is not None:
            key = obj.user_alias.key()
            uid = self.by_alias.get(key)
            if uid is None and key in self.new_aliases:
                return self.new_aliases[key]
            if uid is None:
                if not create:
                    return "user_alias does not exist and _update_existing_only is true (the default with user_alias)"
                uid, _ = identity.create_alias_only_user(self.conn, self.workspace_id, key, now=self.now)
                self.by_alias[key] = uid
                return self.profiles.get(uid) or self._load(uid)
            return self.profiles[uid]
        assert obj.braze_id is not None
        uid = self.by_braze.get(obj.braze_id)
        if uid is None:
            return "braze_id does not exist"
        return self.profiles[uid]

    def flush(self) -> None:
        self._insert_new_users()
        self._insert_new_alias_users()
        flush_profiles(self.conn, list(self.profiles.values()), self.now)

    def _new_rows(self, profiles: list[_Profile]) -> list[dict[str, Any]]:
        """The rows of new profiles with their final attributes, every row with the same columns."""
        columns = sorted({c for p in profiles for c in p.columns})
        return [
            {**p.row, **{c: p.columns.get(c) for c in columns}, "custom_attributes": p.custom, "updated_at": self.now}
            for p in profiles
        ]

    def _adopt(self, profile: _Profile, created: int | None, find_existing: Callable[[], int | None]) -> None:
        """Give a new profile its row: the one just inserted, or else the one a concurrent request created first,
        on which this request's changes are replayed (locked) as if that user had existed all along."""
        if created is not None:
            profile.id = created
            profile.dirty = False
            self.profiles[created] = profile
            return
        existing = find_existing()
        if existing is None:  # pragma: no cover - the conflicting row is visible once its writer committed
            raise InvalidRequest("a user named by this request is being created by another request; retry")
        replayed = self.profiles.get(existing) or self._load(existing)
        for changes, where in profile.log or []:
            replayed.apply(changes, where)
        profile.id = existing

    def _insert_new_alias_users(self) -> None:
        if not self.new_aliases:
            return
        keys = list(self.new_aliases)
        rows = dict(zip(keys, self._new_rows([self.new_aliases[k] for k in keys]), strict=True))
        created = identity.insert_alias_only_users(self.conn, self.workspace_id, rows, now=self.now)
        for key, profile in self.new_aliases.items():
            find = functools.partial(identity.find_by_alias, self.conn, self.workspace_id, key)
            self._adopt(profile, created.get(key), find)
        self.new_aliases.clear()

    def _insert_new_users(self) -> None:
        """Insert the request's new users with their final attributes: one cached statement, one round trip.

        A user another request created since the lookup is skipped by ``ON CONFLICT DO NOTHING``; the changes
        this request made to it are replayed on that user, locked, as if it had existed all along.
        """
        if not self.new_users:
            return
        # Sorted, so two requests creating overlapping sets take their row locks in the same order.
        created = identity.insert_new_users(self.conn, self._new_rows([p for _, p in sorted(self.new_users.items())]))
        for ext, profile in self.new_users.items():
            find = functools.partial(identity.find_by_external_id, self.conn, self.workspace_id, ext)
            self._adopt(profile, created.get(ext), find)
        self.new_users.clear()


def event_row(
    workspace_id: str, user_id: int, name: str, at: datetime, properties: dict[str, Any] | None
) -> dict[str, Any]:
    return {"workspace_id": workspace_id, "user_id": user_id, "name": name, "time": at, "properties": properties or {}}


def upsert_plan(dialect: str, request: TrackRequest) -> user_upsert.UpsertPlan | None:
    """The set-based upsert that applies ``request`` on a database of ``dialect``, if one does (see
    :mod:`cohortflow.platform.user_upsert`): PostgreSQL, attributes only, of the kinds it takes."""
    if dialect != "postgresql" or not request.attributes or request.events is not None:
        return None
    return user_upsert.plan(request.attributes) if request.purchases is None else None


def apply_upsert(conn: Connection, workspace_id: str, upsert: user_upsert.UpsertPlan, now: datetime) -> TrackResponse:
    return TrackResponse(attributes_processed=user_upsert.apply(conn, workspace_id, upsert, now))


def track(
    conn: Connection, workspace_id: str, request: TrackRequest, *, now: datetime | None = None, set_based: bool = True
) -> TrackResponse:
    """Apply a validated ``/users/track`` request: attributes, then events, then purchases.

    A request that :func:`upsert_plan` takes is applied set-based; ``set_based=False`` always takes the general
    path (the tests compare the two)."""
    now = now or utcnow()
    upsert = upsert_plan(conn.dialect.name, request) if set_based else None
    if upsert is not None:
        return apply_upsert(conn, workspace_id, upsert, now)
    attributes = request.attributes or []
    events = request.events or []
    purchases = request.purchases or []
    resolver = _Resolver(conn, workspace_id, now)
    resolver.prefetch([*attributes, *events, *purchases])
    errors: list[TrackError] = []
    processed = {"attributes": 0, "events": 0, "purchases": 0}

    for index, attr in enumerate(attributes):
        target = resolver.resolve(attr)
        if isinstance(target, str):
            errors.append(TrackError(type=target, input_array="attributes", index=index))
            continue
        target.apply(attr.changes, f"attributes[{index}]")
        processed["attributes"] += 1

    # Rows name their user by profile: a user this request creates has an id only once it is flushed.
    pending_events: list[tuple[_Profile, EventObject]] = []
    for index, event in enumerate(events):
        target = resolver.resolve(event)
        if isinstance(target, str):
            errors.append(TrackError(type=target, input_array="events", index=index))
            continue
        pending_events.append((target, event))
        processed["events"] += 1

    pending_purchases: list[tuple[_Profile, PurchaseObject]] = []
    for index, purchase in enumerate(purchases):
        target = resolver.resolve(purchase)
        if isinstance(target, str):
            errors.append(TrackError(type=target, input_array="purchases", index=index))
            continue
        pending_purchases.append((target, purchase))
        processed["purchases"] += 1

    resolver.flush()
    event_rows = [
        event_row(workspace_id, target.user_id, e.name, min(parse_time(e.time), now), e.properties)
        for target, e in pending_events
    ]
    purchase_rows = [
        {
            "workspace_id": workspace_id,
            "user_id": target.user_id,
            "product_id": purchase.product_id,
            "currency": purchase.currency,
            "price": float(purchase.price),
            "quantity": purchase.quantity,
            "time": min(parse_time(purchase.time), now),
            "properties": purchase.properties or {},
        }
        for target, purchase in pending_purchases
    ]
    if event_rows:
        conn.execute(insert(user_events), event_rows)
    if purchase_rows:
        conn.execute(insert(user_purchases), purchase_rows)
    return TrackResponse(
        attributes_processed=processed["attributes"] if request.attributes is not None else None,
        events_processed=processed["events"] if request.events is not None else None,
        purchases_processed=processed["purchases"] if request.purchases is not None else None,
        errors=errors or None,
    )


def new_profile_values(
    workspace_id: str, external_id: str | None, changes: ProfileChanges, *, now: datetime, where: str
) -> dict[str, Any]:
    """The columns of a new profile that starts with ``changes`` applied (inserted once, already complete)."""
    profile = _Profile(identity.new_user_values(workspace_id, external_id, now), new=True)
    profile.apply(changes, where)
    return {**profile.row, **profile.columns, "custom_attributes": profile.custom}


def apply_profile_changes(
    conn: Connection, workspace_id: str, user_id: int, changes: ProfileChanges, *, now: datetime, where: str
) -> None:
    """Apply attribute changes to one user (the SDK endpoint's path; ``/users/track`` batches its own)."""
    row = identity.get_user(conn, workspace_id, user_id, lock=True)
    if row is None:
        raise InvalidRequest(f"{where}: the user no longer exists")
    profile = _Profile(row)
    profile.apply(changes, where)
    profile.flush(conn, now)
