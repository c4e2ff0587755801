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
from cohortflow.sync.errors import RunFinished, SyncLocked, UnknownObject
from cohortflow.sync.state import StateStore
from cohortflow.sync.state.schema import sync_locks, sync_runs

QUEUED = "queued"
QUERYING = "querying"
PLANNING = "planning"
SENDING = "sending"
SUCCEEDED = "succeeded"
FAILED = "failed"
PARTIAL = "partial"
CANCELLED = "cancelled"
FINAL_STATUSES = frozenset({SUCCEEDED, FAILED, PARTIAL, CANCELLED})
ACTIVE_STATUSES = frozenset({QUERYING, PLANNING, SENDING})

# A lock whose heartbeat is older than this is taken over even from another host.
LOCK_TTL = timedelta(minutes=5)
HEARTBEAT_SECONDS = 15.0
# How soon a running run notices a cancel request made from another process.
CANCEL_POLL_SECONDS = 1.0
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
    reconcile: bool = False
    retry_rejected: bool = False
    trigger: str | None = None
    requested_at: datetime | None = None
    cancel_requested_at: datetime | None = None
    worker_id: str | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINAL_STATUSES

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "sync": self.sync_name,
            "status": self.status,
            "dry_run": self.dry_run,
            "full_resync": self.full_resync,
            "reconcile": self.reconcile,
            "retry_rejected": self.retry_rejected,
            "trigger": self.trigger,
            "requested_at": self.requested_at.isoformat() if self.requested_at else None,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "cancel_requested_at": self.cancel_requested_at.isoformat() if self.cancel_requested_at else None,
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
        reconcile=bool(row.reconcile),
        retry_rejected=bool(row.retry_rejected),
        trigger=row.trigger,
        requested_at=as_utc(row.requested_at) if row.requested_at else None,
        cancel_requested_at=as_utc(row.cancel_requested_at) if row.cancel_requested_at else None,
        worker_id=row.worker_id,
    )


@dataclass(frozen=True)
class RunOptions:
    """What kind of run: the flags of ``cohortflow sync run`` and of a trigger."""

    dry_run: bool = False
    full_resync: bool = False
    reconcile: bool = False
    retry_rejected: bool = False

    def as_values(self) -> dict[str, bool]:
        return {
            "dry_run": self.dry_run,
            "full_resync": self.full_resync,
            "reconcile": self.reconcile,
            "retry_rejected": self.retry_rejected,
        }


def insert_run(
    conn: Connection,
    sync_name: str,
    options: RunOptions,
    *,
    status: str,
    now: datetime,
    trigger: str | None = None,
    worker_id: str | None = None,
) -> str:
    run_id = str(uuid.uuid4())
    conn.execute(
        sync_runs.insert().values(
            id=run_id,
            sync_name=sync_name,
            status=status,
            **options.as_values(),
            trigger=trigger,
            requested_at=now,
            worker_id=worker_id,
            started_at=now,
            phases={},
            counts={},
            errors=[],
            host=socket.gethostname(),
            pid=os.getpid(),
        )
    )
    return run_id


def create_run(
    store: StateStore,
    sync_name: str,
    *,
    dry_run: bool,
    full_resync: bool,
    reconcile: bool = False,
    retry_rejected: bool = False,
    trigger: str | None = "cli",
) -> str:
    options = RunOptions(dry_run, full_resync, reconcile, retry_rejected)
    with store.transaction() as conn:
        return insert_run(conn, sync_name, options, status=QUERYING, now=store.clock(), trigger=trigger)


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


def process_is_dead(host: str, pid: int, heartbeat_at: datetime, now: datetime, ttl: timedelta) -> bool:
    """Whether the process that wrote ``heartbeat_at`` is gone: its beat is older than ``ttl``, or it ran on
    this host and no longer exists (so a local ``kill -9`` is noticed at once, not after the TTL)."""
    if now - as_utc(heartbeat_at) > ttl:
        return True
    if host != socket.gethostname() or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def lock_holder_is_dead(row: Any, now: datetime) -> bool:
    """Whether a ``sync_locks`` row's run is gone, so its lock may be taken over."""
    return process_is_dead(row.host, row.pid, row.heartbeat_at, now, LOCK_TTL)


def lock_in(conn: Connection, sync_name: str, run_id: str, now: datetime) -> None:
    """Take the sync's lock for ``run_id`` inside ``conn``'s transaction, or raise :class:`SyncLocked`.

    A dead holder's lock is taken over and its run closed as abandoned. Run inside a savepoint when the
    caller wants to carry on after :class:`SyncLocked` (a concurrent insert fails the statement).
    """
    values = {
        "run_id": run_id,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "acquired_at": now,
        "heartbeat_at": now,
    }
    query = select(sync_locks).where(sync_locks.c.sync_name == sync_name)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = conn.execute(query).first()
    if row is None:
        try:
            conn.execute(sync_locks.insert().values(sync_name=sync_name, **values))
        except IntegrityError as exc:  # another process inserted the lock row between our SELECT and INSERT
            raise SyncLocked(f"sync {sync_name!r} is already running; one run at a time per sync") from exc
        return
    if not lock_holder_is_dead(row, now):
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


def acquire_lock(store: StateStore, sync_name: str, run_id: str) -> None:
    """Take the sync's lock for ``run_id`` or raise :class:`SyncLocked` naming the holder."""
    try:
        with store.transaction() as conn:
            lock_in(conn, sync_name, run_id, store.clock())
    except IntegrityError as exc:  # the insert raced on commit (SQLite reports it there)
        raise SyncLocked(f"sync {sync_name!r} is already running; one run at a time per sync") from exc


def request_cancel(store: StateStore, run_id: str) -> RunRecord:
    """Ask a run to stop: a queued run is cancelled at once; a running one stops after its batches in flight
    (its process sees the request within a second). Cancelling a finished run is an error."""
    now = store.clock()
    with store.transaction() as conn:
        row = conn.execute(select(sync_runs).where(sync_runs.c.id == run_id)).first()
        if row is None:
            raise UnknownObject(f"no run {run_id!r} in the state database")
        if row.status in FINAL_STATUSES:
            raise RunFinished(f"run {run_id} already ended ({row.status}); there is nothing to cancel")
        values: dict[str, Any] = {"cancel_requested_at": row.cancel_requested_at or now}
        if row.status == QUEUED:
            values.update(status=CANCELLED, finished_at=now, message="cancelled before it started")
        conn.execute(update(sync_runs).where(sync_runs.c.id == run_id).values(**values))
    return get_run(store, run_id)


def cancel_requested(store: StateStore, run_id: str) -> bool:
    with store.engine.connect() as conn:
        value = conn.execute(
            select(sync_runs.c.cancel_requested_at).where(sync_runs.c.id == run_id)
        ).scalar_one_or_none()
    return value is not None


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
    """A background thread for a run's whole life: keeps the lock fresh (when the run holds one) while planning
    or sending runs long, and turns a cancel request written in the state database (by the API, the web app or
    ``cohortflow sync cancel``, from any process) into ``cancel``, which the engine and delivery check."""

    def __init__(
        self,
        store: StateStore,
        sync_name: str,
        run_id: str,
        every: float = HEARTBEAT_SECONDS,
        *,
        locked: bool = True,
        cancel: threading.Event | None = None,
        cancel_poll: float = CANCEL_POLL_SECONDS,
    ) -> None:
        self._store, self._sync, self._run, self._every = store, sync_name, run_id, every
        self._locked = locked
        self.cancel = cancel if cancel is not None else threading.Event()
        self._poll = min(cancel_poll, every)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{sync_name}", daemon=True)

    def _loop(self) -> None:
        waited = 0.0
        while not self._stop.wait(self._poll):
            waited += self._poll
            try:
                if not self.cancel.is_set() and cancel_requested(self._store, self._run):
                    self.cancel.set()
                if self._locked and waited >= self._every:
                    waited = 0.0
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
