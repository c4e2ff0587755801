"""User identity: finding and creating users by their identifiers, alias rules, devices, and merging profiles.

The identity model (``shared/braze-contract.md``, section 2):

- ``external_id`` is set by the customer and unique in a workspace; once a user has one it never goes away.
- An alias is ``(alias_label, alias_name)``; the pair is unique in the workspace and a user holds at most one
  name per label.
- A device id belongs to exactly one user of the workspace; a user without an external id is anonymous.
- ``braze_id`` is the platform's own id for a user (24 hex characters), unique everywhere.

Every function takes the caller's connection and workspace id and never reads or writes another workspace.
Writes rely on the caller's transaction (``runtime.transaction()``): a request either applies all of its
identity changes or none.

Concurrency: rows are created with ``INSERT ... ON CONFLICT DO NOTHING`` and then read back, so two requests
creating the same external id, alias or device at the same time end with one row, not an error. Merges lock
both user rows first (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite serializes writers with
``BEGIN IMMEDIATE``).
"""

from __future__ import annotations

import functools
import json
import random
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Connection, and_, bindparam, delete, exists, func, literal, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.dml import Insert

from cohortflow.clock import as_utc, utcnow
from cohortflow.platform.cohorts import in_workspace_cohorts
from cohortflow.platform.errors import InvalidRequest
from cohortflow.platform.store.locking import lock_workspace_memberships
from cohortflow.platform.store.schema import (
    cohort_members,
    user_aliases,
    user_devices,
    user_events,
    user_purchases,
    users,
)
from cohortflow.platform.store.upsert import dialect_insert, upsert_insert

BRAZE_ID_HEX_CHARS = 24
RANDOM_BUCKETS = 10_000
MAX_EXTERNAL_ID_LENGTH = 512
MAX_ALIAS_NAME_LENGTH = 512
MAX_ALIAS_LABEL_LENGTH = 255
MAX_DEVICE_ID_LENGTH = 512

# Profile columns that a merge copies to the target when the target lacks them (Braze's merge list).
PROFILE_COLUMNS: tuple[str, ...] = (
    "first_name",
    "last_name",
    "email",
    "phone",
    "country",
    "home_city",
    "language",
    "gender",
    "dob",
    "time_zone",
    "email_subscribe",
    "push_subscribe",
)


@dataclass(frozen=True, order=True)
class AliasKey:
    """A user alias: ``alias_label`` names the namespace, ``alias_name`` the id within it."""

    alias_label: str
    alias_name: str


@dataclass(frozen=True)
class MergeResult:
    """What :func:`merge_users` moved from the removed profile to the kept one."""

    source_user_id: int
    target_user_id: int
    aliases_moved: list[AliasKey] = field(default_factory=list)
    # Aliases whose label the target already used: the target's alias wins and these are removed.
    aliases_dropped: list[AliasKey] = field(default_factory=list)
    devices_moved: int = 0
    attributes_copied: list[str] = field(default_factory=list)
    events_moved: int = 0
    purchases_moved: int = 0
    cohort_memberships_added: int = 0


def new_braze_id() -> str:
    return secrets.token_hex(BRAZE_ID_HEX_CHARS // 2)


def _for_update(conn: Connection, query: Any) -> Any:
    return query.with_for_update() if conn.dialect.name == "postgresql" else query


def get_user(conn: Connection, workspace_id: str, user_id: int, *, lock: bool = False) -> dict[str, Any] | None:
    query = select(users).where(users.c.workspace_id == workspace_id, users.c.id == user_id)
    row = conn.execute(_for_update(conn, query) if lock else query).mappings().first()
    return dict(row) if row else None


# The lookups every SDK request makes, built once: on SQLite, building a statement took longer than running it.
_USER_BY_EXTERNAL_ID = select(users.c.id).where(
    users.c.workspace_id == bindparam("workspace_id"), users.c.external_id == bindparam("external_id")
)
_USER_BY_DEVICE = select(user_devices.c.user_id).where(
    user_devices.c.workspace_id == bindparam("workspace_id"), user_devices.c.device_id == bindparam("device_id")
)


def find_by_external_id(conn: Connection, workspace_id: str, external_id: str) -> int | None:
    params = {"workspace_id": workspace_id, "external_id": external_id}
    return conn.execute(_USER_BY_EXTERNAL_ID, params).scalar_one_or_none()


def find_by_braze_id(conn: Connection, workspace_id: str, braze_id: str) -> int | None:
    return conn.execute(
        select(users.c.id).where(users.c.workspace_id == workspace_id, users.c.braze_id == braze_id)
    ).scalar_one_or_none()


def find_by_alias(conn: Connection, workspace_id: str, alias: AliasKey) -> int | None:
    return conn.execute(
        select(user_aliases.c.user_id).where(
            user_aliases.c.workspace_id == workspace_id,
            user_aliases.c.alias_label == alias.alias_label,
            user_aliases.c.alias_name == alias.alias_name,
        )
    ).scalar_one_or_none()


def find_by_device(conn: Connection, workspace_id: str, device_id: str) -> int | None:
    params = {"workspace_id": workspace_id, "device_id": device_id}
    return conn.execute(_USER_BY_DEVICE, params).scalar_one_or_none()


def find_by_email(conn: Connection, workspace_id: str, email: str) -> list[int]:
    """Several profiles may share an email address (Braze allows it); oldest first."""
    return list(
        conn.execute(
            select(users.c.id)
            .where(users.c.workspace_id == workspace_id, func.lower(users.c.email) == email.strip().lower())
            .order_by(users.c.id)
        ).scalars()
    )


def find_by_phone(conn: Connection, workspace_id: str, phone: str) -> list[int]:
    return list(
        conn.execute(
            select(users.c.id).where(users.c.workspace_id == workspace_id, users.c.phone == phone).order_by(users.c.id)
        ).scalars()
    )


def new_user_values(workspace_id: str, external_id: str | None, now: datetime) -> dict[str, Any]:
    """The columns of a new profile (a fresh braze_id and random bucket, no attributes)."""
    return {
        "workspace_id": workspace_id,
        "braze_id": new_braze_id(),
        "external_id": external_id,
        "created_at": now,
        "updated_at": now,
        "custom_attributes": {},
        "random_bucket": secrets.randbelow(RANDOM_BUCKETS),
    }


def new_identities(count: int) -> list[tuple[str, int]]:
    """``count`` fresh (braze_id, random bucket) pairs as :func:`new_user_values` draws them, the random bytes of
    every braze_id drawn at once (a batch of users needs one system call, not one per user).

    The buckets come from a generator seeded from the system's randomness: uniform like ``randbelow``, without
    one system call per user. A bucket needs no secrecy, only independence from everything else about the user.
    """
    width = BRAZE_ID_HEX_CHARS
    ids = secrets.token_hex(width // 2 * count)
    buckets = random.Random(secrets.randbits(128))
    return [(ids[i * width : (i + 1) * width], buckets.randrange(RANDOM_BUCKETS)) for i in range(count)]


def create_user(conn: Connection, workspace_id: str, *, now: datetime | None = None) -> int:
    """A new profile with no external id (anonymous or alias-only until identified)."""
    now = now or utcnow()
    user_id = conn.execute(
        users.insert().values(**new_user_values(workspace_id, None, now)).returning(users.c.id)
    ).scalar_one()
    return int(user_id)


def get_or_create_by_external_id(
    conn: Connection, workspace_id: str, external_id: str, *, now: datetime | None = None
) -> tuple[int, bool]:
    """The user with ``external_id``, created if missing; the flag says whether it was created."""
    now = now or utcnow()
    stmt: Insert = (
        upsert_insert(conn, users)
        .values(**new_user_values(workspace_id, external_id, now))
        .on_conflict_do_nothing(index_elements=["workspace_id", "external_id"])
        .returning(users.c.id)
    )
    created = conn.execute(stmt).scalar_one_or_none()
    if created is not None:
        return int(created), True
    existing = find_by_external_id(conn, workspace_id, external_id)
    if existing is None:  # pragma: no cover - the conflicting row is visible once its writer committed
        raise InvalidRequest(f"external_id {external_id!r} is being created by another request; retry")
    return existing, False


def insert_new_users(conn: Connection, rows: list[dict[str, Any]]) -> dict[str, int]:
    """Insert new profiles (``new_user_values`` plus any standard columns, the same keys in every row), skipping
    external ids that exist; returns ``{external_id: id}`` of those created, in one statement.

    PostgreSQL: ``INSERT ... SELECT FROM unnest(arrays)``, a short statement psycopg prepares once; elsewhere an
    executemany, which SQLAlchemy sends as one multi-row ``INSERT`` ("insertmanyvalues") compiled once (a
    statement built with ``.values(rows)`` is compiled afresh for every request: its rows are part of it).
    """
    if not rows:
        return {}
    if conn.dialect.name == "postgresql":
        shared = ("workspace_id", "created_at", "updated_at")
        per_row = sorted(k for k in rows[0] if k not in shared)
        serialize = getattr(conn.dialect, "_json_serializer", None) or json.dumps
        arrays = [
            [serialize(r[k]) for r in rows] if k == "custom_attributes" else [r[k] for r in rows] for k in per_row
        ]
        result = conn.exec_driver_sql(_pg_insert_sql(tuple(per_row)), (*(rows[0][k] for k in shared), *arrays))
    else:
        stmt = (
            upsert_insert(conn, users)
            .on_conflict_do_nothing(index_elements=["workspace_id", "external_id"])
            .returning(users.c.id, users.c.external_id)
        )
        result = conn.execute(stmt, rows)
    return {str(ext): int(uid) for uid, ext in result}


@functools.cache
def _pg_insert_sql(per_row: tuple[str, ...]) -> str:
    casts = {"random_bucket": "int[]"}
    values = [f"v.{k}::jsonb" if k == "custom_attributes" else f"v.{k}" for k in per_row]
    arrays = ", ".join(f"%s::{casts.get(k, 'text[]')}" for k in per_row)
    return (
        f"INSERT INTO users (workspace_id, created_at, updated_at, {', '.join(per_row)}) "
        f"SELECT %s, %s, %s, {', '.join(values)} FROM unnest({arrays}) AS v({', '.join(per_row)}) "
        # Sorted: two requests creating overlapping sets take the unique index's locks in the same order.
        "ORDER BY v.external_id ON CONFLICT (workspace_id, external_id) DO NOTHING RETURNING id, external_id"
    )


def aliases_of(conn: Connection, user_id: int) -> list[AliasKey]:
    rows = conn.execute(
        select(user_aliases.c.alias_label, user_aliases.c.alias_name)
        .where(user_aliases.c.user_id == user_id)
        .order_by(user_aliases.c.alias_label)
    )
    return [AliasKey(alias_label=r.alias_label, alias_name=r.alias_name) for r in rows]


def add_alias(
    conn: Connection, workspace_id: str, user_id: int, alias: AliasKey, *, now: datetime | None = None
) -> bool:
    """Give ``user_id`` the alias; False when it already has exactly this alias.

    Rules: the label+name pair is unique in the workspace, and a user holds one name per label. Breaking
    either is an :class:`InvalidRequest` naming the conflict.
    """
    owner = find_by_alias(conn, workspace_id, alias)
    if owner == user_id:
        return False
    if owner is not None:
        raise InvalidRequest(
            f"alias {alias.alias_name!r} with label {alias.alias_label!r} already belongs to another user "
            "(a label and name pair is unique in the workspace)"
        )
    current = conn.execute(
        select(user_aliases.c.alias_name).where(
            user_aliases.c.user_id == user_id, user_aliases.c.alias_label == alias.alias_label
        )
    ).scalar_one_or_none()
    if current is not None:
        raise InvalidRequest(
            f"the user already has alias {current!r} with label {alias.alias_label!r} "
            "(a user holds one alias name per label)"
        )
    inserted = conn.execute(
        upsert_insert(conn, user_aliases)
        .values(
            workspace_id=workspace_id,
            alias_label=alias.alias_label,
            alias_name=alias.alias_name,
            user_id=user_id,
            created_at=now or utcnow(),
        )
        .on_conflict_do_nothing()
    ).rowcount
    if inserted == 0:
        # Another request took the pair (or the label) between our check and our insert.
        if find_by_alias(conn, workspace_id, alias) == user_id:
            return False
        raise InvalidRequest(
            f"alias {alias.alias_name!r} with label {alias.alias_label!r} was just taken by another request"
        )
    return True


def create_alias_only_user(
    conn: Connection, workspace_id: str, alias: AliasKey, *, now: datetime | None = None
) -> tuple[int, bool]:
    """The user holding ``alias``, created as an alias-only profile if nobody holds it; flag = created."""
    existing = find_by_alias(conn, workspace_id, alias)
    if existing is not None:
        return existing, False
    now = now or utcnow()
    user_id = create_user(conn, workspace_id, now=now)
    inserted = conn.execute(
        upsert_insert(conn, user_aliases)
        .values(
            workspace_id=workspace_id,
            alias_label=alias.alias_label,
            alias_name=alias.alias_name,
            user_id=user_id,
            created_at=now,
        )
        .on_conflict_do_nothing()
    ).rowcount
    if inserted == 0:
        conn.execute(delete(users).where(users.c.id == user_id))
        winner = find_by_alias(conn, workspace_id, alias)
        if winner is None:  # pragma: no cover - see get_or_create_by_external_id
            raise InvalidRequest("alias is being created by another request; retry")
        return winner, False
    return user_id, True


def insert_alias_only_users(
    conn: Connection, workspace_id: str, rows: dict[AliasKey, dict[str, Any]], *, now: datetime
) -> dict[AliasKey, int]:
    """Insert alias-only profiles (``rows``: each alias's profile columns, :func:`new_user_values` plus the same
    standard columns in every row) with their aliases: two statements for the batch, however large.

    Returns the ids of those created. An alias a concurrent request took first is skipped: its profile is
    removed again, and the caller finds the winner with :func:`find_by_alias`.
    """
    if not rows:
        return {}
    keys = sorted(rows)  # two requests creating overlapping sets take the unique index's locks in the same order
    created = conn.execute(users.insert().returning(users.c.id, users.c.braze_id), [rows[k] for k in keys])
    ids = {str(braze_id): int(uid) for uid, braze_id in created}
    user_ids = {k: ids[rows[k]["braze_id"]] for k in keys}
    taken = conn.execute(
        upsert_insert(conn, user_aliases)
        .on_conflict_do_nothing()
        .returning(user_aliases.c.alias_label, user_aliases.c.alias_name),
        [
            {
                "workspace_id": workspace_id,
                "alias_label": k.alias_label,
                "alias_name": k.alias_name,
                "user_id": user_ids[k],
                "created_at": now,
            }
            for k in keys
        ],
    )
    won = {AliasKey(label, name) for label, name in taken}
    lost = [user_ids[k] for k in keys if k not in won]
    if lost:
        conn.execute(delete(users).where(users.c.id.in_(lost)))
    return {k: user_ids[k] for k in keys if k in won}


def devices_of(conn: Connection, user_id: int) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(user_devices.c.device_id, user_devices.c.created_at, user_devices.c.last_seen_at)
        .where(user_devices.c.user_id == user_id)
        .order_by(user_devices.c.created_at, user_devices.c.device_id)
    ).mappings()
    return [
        {"device_id": r["device_id"], "created_at": as_utc(r["created_at"]), "last_seen_at": as_utc(r["last_seen_at"])}
        for r in rows
    ]


def get_or_create_device_user(
    conn: Connection, workspace_id: str, device_id: str, *, now: datetime | None = None
) -> tuple[int, bool]:
    """The user owning ``device_id``; a new device creates an anonymous user owning it. Flag = created."""
    now = now or utcnow()
    owner = find_by_device(conn, workspace_id, device_id)
    if owner is not None:
        conn.execute(
            update(user_devices)
            .where(user_devices.c.workspace_id == workspace_id, user_devices.c.device_id == device_id)
            .values(last_seen_at=now)
        )
        return owner, False
    user_id = create_device_user(conn, workspace_id, device_id, new_user_values(workspace_id, None, now), now=now)
    if user_id is None:
        winner = find_by_device(conn, workspace_id, device_id)
        if winner is None:  # pragma: no cover - see get_or_create_by_external_id
            raise InvalidRequest("device is being registered by another request; retry")
        return winner, False
    return user_id, True


def create_device_user(
    conn: Connection, workspace_id: str, device_id: str, values: dict[str, Any], *, now: datetime
) -> int | None:
    """A new profile with the columns ``values`` (:func:`new_user_values`, maybe with attributes and an external
    id) owning the new device ``device_id``: two statements. None, leaving nothing behind, when a concurrent
    request took that external id or registered that device first."""
    insert_user, insert_device = _device_user_inserts(conn.dialect.name)
    user_id = conn.execute(insert_user, values).scalar_one_or_none()
    if user_id is None:
        return None
    inserted = conn.execute(
        insert_device,
        {
            "workspace_id": workspace_id,
            "device_id": device_id,
            "user_id": user_id,
            "created_at": now,
            "last_seen_at": now,
        },
    ).rowcount
    if inserted == 0:
        conn.execute(delete(users).where(users.c.id == user_id))
        return None
    return int(user_id)


@functools.cache
def _device_user_inserts(dialect: str) -> tuple[Insert, Insert]:
    """The two inserts of :func:`create_device_user` in ``dialect``, built once."""
    return (
        dialect_insert(dialect, users)
        .on_conflict_do_nothing(index_elements=["workspace_id", "external_id"])
        .returning(users.c.id),
        dialect_insert(dialect, user_devices).on_conflict_do_nothing(),
    )


def move_device(
    conn: Connection, workspace_id: str, device_id: str, user_id: int, *, now: datetime | None = None
) -> None:
    """Point ``device_id`` at ``user_id`` (Braze's ``changeUser`` on a device another identified user owned)."""
    conn.execute(
        update(user_devices)
        .where(user_devices.c.workspace_id == workspace_id, user_devices.c.device_id == device_id)
        .values(user_id=user_id, last_seen_at=now or utcnow())
    )


def claim_external_id(
    conn: Connection, workspace_id: str, user_id: int, external_id: str, *, now: datetime | None = None
) -> bool:
    """Give an anonymous or alias-only user ``external_id``; False if another user holds it (maybe just now).

    Runs in a savepoint so that losing a race against a request creating the same external id leaves the
    caller's transaction usable: it then merges into the winner instead.
    """
    try:
        with conn.begin_nested():
            changed = conn.execute(
                update(users)
                .where(users.c.workspace_id == workspace_id, users.c.id == user_id, users.c.external_id.is_(None))
                .values(external_id=external_id, updated_at=now or utcnow())
            ).rowcount
    except IntegrityError:
        return False
    return bool(changed)


def merge_users(
    conn: Connection, workspace_id: str, source_user_id: int, target_user_id: int, *, now: datetime | None = None
) -> MergeResult:
    """Merge the profile ``source_user_id`` into ``target_user_id`` and remove the source.

    Used by ``/users/identify`` (alias-only profile into the profile with that external id) and by the SDK
    endpoint (anonymous device profile into the profile named by ``changeUser``). What moves:

    - aliases, except one whose label the target already holds: the target keeps its own alias for that
      label and the source's alias is removed with the source (a user holds one name per label);
    - every device id (so the devices stay visible on the kept profile);
    - profile attributes and custom attributes the target lacks (the target's values win);
    - all events and purchases;
    - cohort memberships: the target joins every cohort the source was in (no duplicates).

    The kept profile's ``created_at`` becomes the earlier of the two.
    """
    if source_user_id == target_user_id:
        raise InvalidRequest("cannot merge a user into itself")
    now = now or utcnow()
    # Before the user rows: imports in flight may have matched the source (see lock_workspace_memberships).
    lock_workspace_memberships(conn, workspace_id, exclusive=True)
    # Lock in id order so two merges touching the same pair cannot deadlock.
    locked = {}
    for uid in sorted((source_user_id, target_user_id)):
        row = get_user(conn, workspace_id, uid, lock=True)
        if row is None:
            raise InvalidRequest(f"user {uid} does not exist in this workspace")
        locked[uid] = row
    source, target = locked[source_user_id], locked[target_user_id]

    target_labels = set(
        conn.execute(select(user_aliases.c.alias_label).where(user_aliases.c.user_id == target_user_id)).scalars()
    )
    source_aliases = aliases_of(conn, source_user_id)
    moved = [a for a in source_aliases if a.alias_label not in target_labels]
    dropped = [a for a in source_aliases if a.alias_label in target_labels]
    if moved:
        conn.execute(
            update(user_aliases)
            .where(
                user_aliases.c.user_id == source_user_id,
                user_aliases.c.alias_label.in_([a.alias_label for a in moved]),
            )
            .values(user_id=target_user_id)
        )

    devices_moved = conn.execute(
        update(user_devices)
        .where(user_devices.c.workspace_id == workspace_id, user_devices.c.user_id == source_user_id)
        .values(user_id=target_user_id)
    ).rowcount

    copied: list[str] = []
    values: dict[str, Any] = {"updated_at": now}
    for column in PROFILE_COLUMNS:
        if target[column] is None and source[column] is not None:
            values[column] = source[column]
            copied.append(column)
    source_custom = dict(source["custom_attributes"] or {})
    target_custom = dict(target["custom_attributes"] or {})
    missing = sorted(set(source_custom) - set(target_custom))
    if missing:
        values["custom_attributes"] = {**target_custom, **{k: source_custom[k] for k in missing}}
        copied.extend(f"custom_attributes.{k}" for k in missing)
    if as_utc(source["created_at"]) < as_utc(target["created_at"]):
        values["created_at"] = source["created_at"]
    conn.execute(update(users).where(users.c.id == target_user_id).values(**values))

    events_moved = conn.execute(
        update(user_events)
        .where(user_events.c.workspace_id == workspace_id, user_events.c.user_id == source_user_id)
        .values(user_id=target_user_id)
    ).rowcount
    purchases_moved = conn.execute(
        update(user_purchases)
        .where(user_purchases.c.workspace_id == workspace_id, user_purchases.c.user_id == source_user_id)
        .values(user_id=target_user_id)
    ).rowcount

    theirs = cohort_members.alias("theirs")
    source_memberships = and_(cohort_members.c.user_id == source_user_id, in_workspace_cohorts(conn, workspace_id))
    memberships = (
        select(cohort_members.c.cohort_pk, literal(target_user_id, BigInteger()), cohort_members.c.added_at)
        .where(source_memberships)
        .where(
            ~exists().where(and_(theirs.c.cohort_pk == cohort_members.c.cohort_pk, theirs.c.user_id == target_user_id))
        )
    )
    added = conn.execute(
        upsert_insert(conn, cohort_members)
        .from_select(["cohort_pk", "user_id", "added_at"], memberships)
        .on_conflict_do_nothing()
    ).rowcount

    # Memberships have no foreign key (see schema.cohort_members); cascades remove the rest (dropped aliases).
    conn.execute(delete(cohort_members).where(source_memberships))
    conn.execute(delete(users).where(users.c.id == source_user_id))
    return MergeResult(
        source_user_id=source_user_id,
        target_user_id=target_user_id,
        aliases_moved=moved,
        aliases_dropped=dropped,
        devices_moved=int(devices_moved),
        attributes_copied=copied,
        events_moved=int(events_moved),
        purchases_moved=int(purchases_moved),
        cohort_memberships_added=int(added),
    )


def delete_users(conn: Connection, workspace_id: str, user_ids: list[int]) -> int:
    """Remove users; their aliases, devices, events and purchases go with them (cascade), then memberships."""
    if not user_ids:
        return 0
    lock_workspace_memberships(conn, workspace_id, exclusive=True)
    # Scoped to this workspace's users: the membership table has no workspace column nor foreign key.
    owned = [
        int(uid)
        for uid in conn.execute(
            select(users.c.id).where(users.c.workspace_id == workspace_id, users.c.id.in_(user_ids))
        ).scalars()
    ]
    if not owned:
        return 0
    conn.execute(
        delete(cohort_members).where(cohort_members.c.user_id.in_(owned), in_workspace_cohorts(conn, workspace_id))
    )
    return int(conn.execute(delete(users).where(users.c.id.in_(owned))).rowcount)
