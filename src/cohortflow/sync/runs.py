"""Run records and the one-run-per-sync lock, both in the state database.

A run's counts are written in the same transaction as each batch's confirmed membership, so after a
``kill -9`` the record still agrees with the state. The killed run's record is closed as ``failed`` by the
next run that takes its lock over.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, select, update
from sqlalchemy.exc import IntegrityError

from cohortflow.clock import as_utc
from cohortflow.sync.errors import SyncLocked, UnknownObject
from cohortflow.sync.state import StateStore
from cohortflow.sync.state.schema import sync_locks, sync_runs

QUERYING = "querying"
PLANNING = "planning"
SENDING = "sending"
SUCCEEDED = "succeeded"
FAILED = "failed"
PARTIAL = "partial"
FINAL_STATUSES = frozenset({SUCCEEDED, FAILED, PARTIAL})

# A lock whose heartbeat is older than this is taken over even from another host.
LOCK_TTL = timedelta(minutes=5)
HEARTBEAT_SECONDS = 15.0
ABANDONED = "abandoned: the process running it stopped before finishing (killed?); the next run converged"


@dataclass
class RunRecord:
    id: str
    sync_name: str
    status: str
    dry_run: bool
    full_resync: bool
    started_at: datetime
    finished_at: datetime | None
    phases: dict[str, float] = field(default_factory=dict)
    counts: dict[str, Any] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)
    message: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "sync": self.sync_name,
            "status": self.status,
            "dry_run": self.dry_run,
            "full_resync": self.full_resync,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "phases": self.phases,
            "counts": self.counts,
            "errors": self.errors,
            "message": self.message,
        }


def _record(row: Any) -> RunRecord:
    return RunRecord(
        id=row.id,
        sync_name=row.sync_name,
        status=row.status,
        dry_run=bool(row.dry_run),
        full_resync=bool(row.full_resync),
        started_at=as_utc(row.started_at),
        finished_at=as_utc(row.finished_at) if row.finished_at else None,
        phases=dict(row.phases or {}),
        counts=dict(row.counts or {}),
        errors=list(row.errors or []),
        message=row.message,
    )


def create_run(store: StateStore, sync_name: str, *, dry_run: bool, full_resync: bool) -> str:
    run_id = str(uuid.uuid4())
    with store.transaction() as conn:
        conn.execute(
            sync_runs.insert().values(
                id=run_id,
                sync_name=sync_name,
                status=QUERYING,
                dry_run=dry_run,
                full_resync=full_resync,
                started_at=store.clock(),
                phases={},
                counts={},
                errors=[],
                host=socket.gethostname(),
                pid=os.getpid(),
            )
        )
    return run_id


def update_run(conn: Connection, run_id: str, **values: Any) -> None:
    conn.execute(update(sync_runs).where(sync_runs.c.id == run_id).values(**values))


def finish_run(store: StateStore, run_id: str, status: str, **values: Any) -> None:
    with store.transaction() as conn:
        update_run(conn, run_id, status=status, finished_at=store.clock(), **values)


def get_run(store: StateStore, run_id: str) -> RunRecord:
    with store.engine.connect() as conn:
        row = conn.execute(select(sync_runs).where(sync_runs.c.id == run_id)).first()
    if row is None:
        raise UnknownObject(f"no run {run_id!r} in the state database")
    return _record(row)


def list_runs(store: StateStore, sync_name: str, limit: int = 20) -> list[RunRecord]:
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(sync_runs)
            .where(sync_runs.c.sync_name == sync_name)
            .order_by(sync_runs.c.started_at.desc(), sync_runs.c.id)
            .limit(limit)
        ).all()
    return [_record(r) for r in rows]


def _holder_is_dead(row: Any, now: datetime) -> bool:
    if now - as_utc(row.heartbeat_at) > LOCK_TTL:
        return True
    if row.host != socket.gethostname():
        return False
    if row.pid == os.getpid():
        return False
    try:
        os.kill(row.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def acquire_lock(store: StateStore, sync_name: str, run_id: str) -> None:
    """Take the sync's lock for ``run_id`` or raise :class:`SyncLocked` naming the holder."""
    now = store.clock()
    values = {
        "run_id": run_id,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "acquired_at": now,
        "heartbeat_at": now,
    }
    try:
        with store.transaction() as conn:
            query = select(sync_locks).where(sync_locks.c.sync_name == sync_name)
            if conn.dialect.name == "postgresql":
                query = query.with_for_update()
            row = conn.execute(query).first()
            if row is None:
                conn.execute(sync_locks.insert().values(sync_name=sync_name, **values))
                return
            if not _holder_is_dead(row, now):
                raise SyncLocked(
                    f"sync {sync_name!r} is already running (run {row.run_id}, pid {row.pid} on {row.host}); "
                    "one run at a time per sync"
                )
            conn.execute(update(sync_locks).where(sync_locks.c.sync_name == sync_name).values(**values))
            conn.execute(
                update(sync_runs)
                .where(sync_runs.c.id == row.run_id, sync_runs.c.status.not_in(FINAL_STATUSES))
                .values(status=FAILED, finished_at=now, message=ABANDONED)
            )
    except IntegrityError as exc:  # another process inserted the lock row between our SELECT and INSERT
        raise SyncLocked(f"sync {sync_name!r} is already running; one run at a time per sync") from exc


def heartbeat(conn: Connection, sync_name: str, run_id: str, now: datetime) -> None:
    conn.execute(
        update(sync_locks)
        .where(sync_locks.c.sync_name == sync_name, sync_locks.c.run_id == run_id)
        .values(heartbeat_at=now)
    )


def release_lock(store: StateStore, sync_name: str, run_id: str) -> None:
    with store.transaction() as conn:
        conn.execute(sync_locks.delete().where(sync_locks.c.sync_name == sync_name, sync_locks.c.run_id == run_id))


class Heartbeat:
    """Keeps the lock fresh from a background thread while planning or sending runs long."""

    def __init__(self, store: StateStore, sync_name: str, run_id: str, every: float = HEARTBEAT_SECONDS) -> None:
        self._store, self._sync, self._run, self._every = store, sync_name, run_id, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{sync_name}", daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self._every):
            try:
                with self._store.transaction() as conn:
                    heartbeat(conn, self._sync, self._run, self._store.clock())
            except Exception:  # a missed beat only matters after LOCK_TTL; the next one retries
                continue

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
