"""Accounts and sessions in SQL tables, for every product built on the kit.

Both web apps keep their users (``id, email, password_hash, disabled_at, last_login_at``) and sessions
(``token_hash, user_id, csrf_token, created_at, expires_at``) in their own database, so every server process
sees them and disabling a user or changing its password ends its sessions at once. Only the tables differ.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime

from sqlalchemy import Connection, Table, delete, insert, select, update

from cohortflow.clock import as_utc, utcnow
from cohortflow.web.sessions import Session

UnitOfWork = Callable[[], AbstractContextManager[Connection]]

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")


def normalize_email(email: str) -> str:
    """The account's key: trimmed and lower-cased. ``ValueError`` when it is not an e-mail address."""
    normalized = email.strip().lower()
    if not _EMAIL.match(normalized) or len(normalized) > 320:
        raise ValueError(f"{email!r} is not an e-mail address")
    return normalized


def generate_password() -> str:
    """A password for a new account, shown once (about 96 bits)."""
    return secrets.token_urlsafe(12)


class SqlSessionStore:
    """The kit's :class:`~cohortflow.web.sessions.SessionStore` over a sessions table and its users table.

    ``write`` opens a writing transaction, ``read`` a reading one (on SQLite the platform's read does not wait
    for the writer lock, so loading a session on every page never queues behind a send).
    """

    def __init__(self, sessions: Table, users: Table, *, write: UnitOfWork, read: UnitOfWork) -> None:
        self.sessions = sessions
        self.users = users
        self._write = write
        self._read = read

    def create(self, token_digest: str, session: Session) -> None:
        s = self.sessions.c
        now = utcnow()
        with self._write() as conn:
            # Expired sessions of this user go when it signs in again, so the table does not grow forever.
            conn.execute(delete(self.sessions).where(s.user_id == session.user_id, s.expires_at <= now))
            conn.execute(
                insert(self.sessions).values(
                    token_hash=token_digest,
                    user_id=session.user_id,
                    csrf_token=session.csrf_token,
                    created_at=now,
                    expires_at=session.expires_at,
                )
            )

    def load(self, token_digest: str, now: datetime) -> Session | None:
        s, u = self.sessions.c, self.users.c
        with self._read() as conn:
            row = conn.execute(
                select(s.user_id, s.csrf_token, s.expires_at)
                .join_from(self.sessions, self.users, u.id == s.user_id)
                .where(s.token_hash == token_digest, s.expires_at > now, u.disabled_at.is_(None))
            ).first()
        if row is None:
            return None
        return Session(user_id=int(row.user_id), csrf_token=str(row.csrf_token), expires_at=as_utc(row.expires_at))

    def delete(self, token_digest: str) -> None:
        with self._write() as conn:
            conn.execute(delete(self.sessions).where(self.sessions.c.token_hash == token_digest))


class SqlAccounts:
    """The kit's :class:`~cohortflow.web.kit.Accounts` over a users table."""

    def __init__(self, users: Table, *, write: UnitOfWork, read: UnitOfWork) -> None:
        self.users = users
        self._write = write
        self._read = read

    def credentials(self, email: str) -> tuple[int, str] | None:
        u = self.users.c
        with self._read() as conn:
            row = conn.execute(
                select(u.id, u.password_hash).where(u.email == email.strip().lower(), u.disabled_at.is_(None))
            ).first()
        return (int(row.id), str(row.password_hash)) if row else None

    def logged_in(self, user_id: int, new_password_hash: str | None) -> None:
        values: dict[str, object] = {"last_login_at": utcnow()}
        if new_password_hash:
            values["password_hash"] = new_password_hash
        with self._write() as conn:
            conn.execute(update(self.users).where(self.users.c.id == user_id).values(**values))
