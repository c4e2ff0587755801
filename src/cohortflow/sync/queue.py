"""Queued runs: asking for a run (CLI ``trigger``, API, web app, scheduler) and claiming one to run.

A queued run is a ``sync_runs`` row with status ``queued``; the ``sync serve`` process that claims it runs it
under the same id. Claiming is one transaction that checks the global cap, skips syncs that are already running
anywhere, and takes the sync's lock (``sync_locks``) together with marking the run claimed, so two processes
over one state database can never run a sync twice: the lock's primary key forbids it, and on PostgreSQL
candidate rows are read ``FOR UPDATE SKIP LOCKED`` so claimers do not queue behind each other's rows. Claims are
serialized (an advisory transaction lock on PostgreSQL; SQLite's writer lock) because the global cap is a count
that two claimers must not both read as "one slot left".
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, and_, func, select, text, update

from cohortflow.sync.errors import SyncDisabled, SyncLocked
from cohortflow.sync.runs import (
    ABANDONED,
    ACTIVE_STATUSES,
    FAILED,
    QUERYING,
    QUEUED,
    RunOptions,
    insert_run,
    lock_holder_is_dead,
    lock_in,
    process_is_dead,
)
from cohortflow.sync.state import StateStore
from cohortflow.sync.state.schema import sync_locks, sync_runs, sync_workers
from cohortflow.sync.workspace import Workspace

# Any constant shared by every process claiming runs from the same PostgreSQL database.
_PG_CLAIM_LOCK = 0x636C616D
WORKER_TTL = timedelta(seconds=60)


@dataclass(frozen=True)
class ClaimedRun:
    run_id: str
    sync_name: str
    options: RunOptions
    trigger: str | None


def enqueue_in(conn: Connection, sync_name: str, options: RunOptions, trigger: str, now: datetime) -> tuple[str, bool]:
    """Queue a run of ``sync_name`` in ``conn``'s transaction; ``(run id, created)``.

    An identical run already waiting is returned instead of queueing a second one: asking twice while a run
    waits (a double click, a schedule firing while the previous run is still queued) means one run.
    """
    waiting = conn.execute(
        select(sync_runs.c.id)
        .where(
            sync_runs.c.sync_name == sync_name,
            sync_runs.c.status == QUEUED,
            *(getattr(sync_runs.c, k) == v for k, v in options.as_values().items()),
        )
        .limit(1)
    ).scalar_one_or_none()
    if waiting is not None:
        return str(waiting), False
    return insert_run(conn, sync_name, options, status=QUEUED, now=now, trigger=trigger), True


def enqueue_run(workspace: Workspace, sync_name: str, options: RunOptions, trigger: str) -> tuple[str, bool]:
    """Queue a run of a declared, enabled sync for ``sync serve``; ``(run id, created)``."""
    sync = workspace.sync(sync_name)
    if not sync.enabled:
        raise SyncDisabled(f"sync {sync_name!r} is disabled (enabled: false); enable it before running it")
    store = workspace.store
    with store.transaction() as conn:
        return enqueue_in(conn, sync_name, options, trigger, store.clock())


# ------------------------------------------------------------------------------------------------ workers


def beat(store: StateStore, worker_id: str, host: str, pid: int) -> None:
    """Register or refresh a ``sync serve`` process."""
    now = store.clock()
    with store.transaction() as conn:
        done = conn.execute(update(sync_workers).where(sync_workers.c.id == worker_id).values(heartbeat_at=now))
        if not done.rowcount:
            conn.execute(
                sync_workers.insert().values(id=worker_id, host=host, pid=pid, started_at=now, heartbeat_at=now)
            )


def retire(store: StateStore, worker_id: str) -> None:
    with store.transaction() as conn:
        conn.execute(sync_workers.delete().where(sync_workers.c.id == worker_id))


def live_workers(conn: Connection, now: datetime) -> set[str]:
    rows = conn.execute(select(sync_workers)).all()
    return {r.id for r in rows if not process_is_dead(r.host, r.pid, r.heartbeat_at, now, WORKER_TTL)}


def reap(store: StateStore) -> list[str]:
    """Close the runs of ``sync serve`` processes that died (killed, machine lost) as abandoned, and forget those
    processes; returns the closed run ids. The next run of each sync converges, as after any kill."""
    now = store.clock()
    with store.transaction() as conn:
        alive = live_workers(conn, now)
        rows = conn.execute(
            select(sync_runs.c.id, sync_runs.c.worker_id).where(
                sync_runs.c.status.in_(ACTIVE_STATUSES), sync_runs.c.worker_id.is_not(None)
            )
        ).all()
        dead_runs = [r.id for r in rows if r.worker_id not in alive]
        if dead_runs:
            conn.execute(
                update(sync_runs)
                .where(sync_runs.c.id.in_(dead_runs), sync_runs.c.status.in_(ACTIVE_STATUSES))
                .values(status=FAILED, finished_at=now, message=ABANDONED)
            )
        # Dead processes are kept a while so a run page can still say which process ran it.
        conn.execute(
            sync_workers.delete().where(
                sync_workers.c.id.not_in(alive), sync_workers.c.heartbeat_at < now - WORKER_TTL * 10
            )
        )
    return dead_runs


# ------------------------------------------------------------------------------------------------ claiming


def _busy_syncs(conn: Connection, now: datetime, alive: set[str]) -> set[str]:
    """Syncs running anywhere: a live lock holder (any non-dry run, also from the CLI) or an active run of a
    live service process (dry runs hold no lock)."""
    busy = {r.sync_name for r in conn.execute(select(sync_locks)).all() if not lock_holder_is_dead(r, now)}
    active = conn.execute(
        select(sync_runs.c.sync_name, sync_runs.c.worker_id).where(sync_runs.c.status.in_(ACTIVE_STATUSES))
    ).all()
    busy.update(r.sync_name for r in active if r.worker_id is None or r.worker_id in alive)
    return busy


def running_count(conn: Connection, alive: set[str]) -> int:
    rows = conn.execute(
        select(sync_runs.c.worker_id, func.count())
        .where(sync_runs.c.status.in_(ACTIVE_STATUSES), sync_runs.c.worker_id.is_not(None))
        .group_by(sync_runs.c.worker_id)
    ).all()
    return sum(int(n) for worker, n in rows if worker in alive)


def claim_next(
    store: StateStore,
    worker_id: str,
    *,
    max_concurrent: int,
    runnable: set[str],
) -> ClaimedRun | None:
    """Claim the oldest queued run that may start now, or None.

    ``runnable`` names the syncs this process can run (declared and enabled in its workspace file); a queued
    run of any other sync stays queued. The claimed run's record is ``querying`` under ``worker_id`` and, unless
    a dry run, its sync's lock is held for it: hand it to ``run_sync(run_id=...)``.
    """
    with store.transaction() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_CLAIM_LOCK})
        now = store.clock()
        alive = live_workers(conn, now) | {worker_id}
        if running_count(conn, alive) >= max_concurrent:
            return None
        busy = _busy_syncs(conn, now, alive)
        query = (
            select(sync_runs)
            .where(and_(sync_runs.c.status == QUEUED, sync_runs.c.sync_name.in_(runnable - busy)))
            .order_by(sync_runs.c.requested_at, sync_runs.c.id)
            .limit(20)
        )
        if conn.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        for row in conn.execute(query).all():
            if row.sync_name in busy:
                continue
            options = RunOptions(
                bool(row.dry_run), bool(row.full_resync), bool(row.reconcile), bool(row.retry_rejected)
            )
            if not options.dry_run:
                try:
                    with conn.begin_nested():
                        lock_in(conn, row.sync_name, row.id, now)
                except SyncLocked:
                    busy.add(row.sync_name)
                    continue
            conn.execute(
                update(sync_runs)
                .where(sync_runs.c.id == row.id)
                # The clock read after every check: a run that ended for this claim to happen ended before it.
                .values(
                    status=QUERYING,
                    started_at=store.clock(),
                    worker_id=worker_id,
                    host=socket.gethostname(),
                    pid=os.getpid(),
                )
            )
            return ClaimedRun(row.id, row.sync_name, options, row.trigger)
    return None


def queued_runs(store: StateStore, sync_name: str | None = None) -> list[str]:
    query = select(sync_runs.c.id).where(sync_runs.c.status == QUEUED).order_by(sync_runs.c.requested_at)
    if sync_name is not None:
        query = query.where(sync_runs.c.sync_name == sync_name)
    with store.engine.connect() as conn:
        return [str(r) for r in conn.execute(query).scalars()]
