"""Transactions whose lock waits are bounded, ending in :class:`ResourceLocked` (423, retryable).

On PostgreSQL the bound is ``lock_timeout`` for the transaction's row locks; on SQLite, which has one writer
for the whole database (``BEGIN IMMEDIATE``), it is the busy timeout for taking the writer lock, and the
process's own writers queue on the engine's writer lock under the same bound (see :mod:`.engine`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError

from cohortflow.platform.errors import ResourceLocked
from cohortflow.wire.cohort_import import Messages

# PostgreSQL SQLSTATEs of a lock wait that gave up: lock_not_available (lock_timeout) and deadlock_detected.
_PG_LOCK_STATES = frozenset({"55P03", "40P01"})


def is_lock_wait_exceeded(exc: DBAPIError) -> bool:
    orig = exc.orig
    if getattr(orig, "sqlstate", None) in _PG_LOCK_STATES:
        return True
    text = str(orig).lower()
    return "database is locked" in text or "database table is locked" in text


@contextmanager
def _lock_errors_as_resource_locked() -> Iterator[None]:
    try:
        yield
    except DBAPIError as exc:
        if is_lock_wait_exceeded(exc):
            # The client already waited the bounded wait; the error's default delay then spaces its retries.
            raise ResourceLocked(Messages.RESOURCE_LOCKED) from exc
        raise


@contextmanager
def bounded_transaction(engine: Engine, lock_wait_seconds: float) -> Iterator[Connection]:
    """A transaction whose lock waits are bounded by ``lock_wait_seconds``, ending in :class:`ResourceLocked`."""
    wait_ms = max(1, round(lock_wait_seconds * 1000))
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            # The writer lock is taken by BEGIN IMMEDIATE, so the busy timeout must be set before the
            # transaction begins; it is restored because the connection goes back to the pool.
            raw: Any = conn.connection.driver_connection
            previous = int(raw.execute("PRAGMA busy_timeout").fetchone()[0])
            raw.execute(f"PRAGMA busy_timeout = {wait_ms}")
            try:
                with _lock_errors_as_resource_locked(), conn.begin():
                    yield conn
            finally:
                raw.execute(f"PRAGMA busy_timeout = {previous}")
        return
    with _lock_errors_as_resource_locked(), engine.begin() as conn:
        conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{wait_ms}ms'")
        yield conn


# The first key of PostgreSQL's two-key advisory locks: this lock's namespace (an arbitrary constant).
_MEMBERSHIP_LOCK_SPACE = 0x636F68


def lock_workspace_memberships(conn: Connection, workspace_id: str, *, exclusive: bool) -> None:
    """Order cohort imports against the removal of users in one workspace, until the transaction ends.

    An import matches users, then writes memberships for them; a merge or deletion removes a user and its
    memberships. Without an order between the two, a user removed after an import matched it and before the
    import committed would keep a membership row (memberships have no foreign key). Imports take this lock
    shared, so they never wait for each other; merges and deletions take it exclusive, so they wait for the
    imports in flight in their workspace and the next imports wait for them. Only PostgreSQL needs it: on
    SQLite every transaction already holds the database's one writer lock.
    """
    if conn.dialect.name != "postgresql":
        return
    function = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
    conn.exec_driver_sql(
        f"SELECT {function}(%(space)s, hashtext(%(workspace)s))",
        {"space": _MEMBERSHIP_LOCK_SPACE, "workspace": workspace_id},
    )
