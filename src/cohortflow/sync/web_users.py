"""Who may sign in to the sync web app, with which role, and their sessions (in the state database).

Two roles: an **admin** configures (sources, models, destinations, syncs, secrets) and does everything an
operator does; an **operator** sees everything and runs, dry-runs, cancels, but changes no configuration.
Users and sessions live in the state database, so every ``sync serve`` process sees them, and resetting a
password or disabling a user ends its sessions at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from cohortflow.clock import as_utc
from cohortflow.sync.errors import Forbidden, InvalidInput, UnknownObject
from cohortflow.sync.state import StateStore
from cohortflow.sync.state.schema import sync_web_sessions, sync_web_users
from cohortflow.web.accounts import normalize_email
from cohortflow.web.passwords import hash_password


class Role(StrEnum):
    ADMIN = "admin"
    OPERATOR = "operator"


@dataclass(frozen=True)
class WebUser:
    id: int
    email: str
    role: Role
    created_at: datetime
    last_login_at: datetime | None

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


def _email(email: str) -> str:
    try:
        return normalize_email(email)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from exc


def _user(row: object) -> WebUser:
    r: object = row
    return WebUser(
        id=int(r.id),  # type: ignore[attr-defined]
        email=str(r.email),  # type: ignore[attr-defined]
        role=Role(r.role),  # type: ignore[attr-defined]
        created_at=as_utc(r.created_at),  # type: ignore[attr-defined]
        last_login_at=as_utc(r.last_login_at) if r.last_login_at else None,  # type: ignore[attr-defined]
    )


def create_user(store: StateStore, email: str, role: str, password: str) -> WebUser:
    normalized = _email(email)
    try:
        parsed = Role(role)
    except ValueError as exc:
        raise InvalidInput(f"role must be one of {', '.join(r.value for r in Role)}") from exc
    try:
        digest = hash_password(password)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from exc
    try:
        with store.transaction() as conn:
            conn.execute(
                insert(sync_web_users).values(
                    email=normalized, password_hash=digest, role=parsed.value, created_at=store.clock()
                )
            )
    except IntegrityError as exc:
        raise InvalidInput(f"a web app user {normalized!r} already exists") from exc
    return find_user(store, normalized)


def find_user(store: StateStore, email: str) -> WebUser:
    with store.engine.connect() as conn:
        row = conn.execute(
            select(sync_web_users).where(
                sync_web_users.c.email == email.strip().lower(), sync_web_users.c.disabled_at.is_(None)
            )
        ).first()
    if row is None:
        raise UnknownObject(f"no web app user {email!r}")
    return _user(row)


def get_user(store: StateStore, user_id: int) -> WebUser | None:
    with store.engine.connect() as conn:
        row = conn.execute(
            select(sync_web_users).where(sync_web_users.c.id == user_id, sync_web_users.c.disabled_at.is_(None))
        ).first()
    return _user(row) if row else None


def list_users(store: StateStore) -> list[WebUser]:
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(sync_web_users).where(sync_web_users.c.disabled_at.is_(None)).order_by(sync_web_users.c.email)
        ).all()
    return [_user(r) for r in rows]


def set_password(store: StateStore, email: str, password: str) -> WebUser:
    user = find_user(store, email)
    try:
        digest = hash_password(password)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from exc
    with store.transaction() as conn:
        conn.execute(update(sync_web_users).where(sync_web_users.c.id == user.id).values(password_hash=digest))
        conn.execute(delete(sync_web_sessions).where(sync_web_sessions.c.user_id == user.id))
    return user


def require_admin(user: WebUser) -> None:
    if not user.is_admin:
        raise Forbidden("Only an admin can change the configuration (sources, models, destinations, syncs).")
