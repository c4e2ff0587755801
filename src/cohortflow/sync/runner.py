"""The run loop of ``sync serve``: schedules, claims queued runs and runs them, a few at a time.

Each tick (every ``poll_seconds``, or at once when woken by a finished run or a new trigger in this process):
refresh this process's heartbeat, close the runs of dead processes, queue what the schedules say is due, run
the per-tick hooks (alerts), then claim queued runs while this process and the whole service are under the
global cap. A claimed run runs in a thread of its own through the engine's :func:`run_sync`, so it is the very
same run as ``cohortflow sync run`` (same state, same guarantees); only who started it differs.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from cohortflow.sync import scheduler
from cohortflow.sync.engine import run_sync
from cohortflow.sync.errors import SyncError
from cohortflow.sync.queue import ClaimedRun, beat, claim_next, reap, retire
from cohortflow.sync.workspace import LiveWorkspace, Workspace

log = structlog.get_logger("cohortflow.sync.runner")

TickHook = Callable[[Workspace], None]


@dataclass
class _Running:
    claimed: ClaimedRun
    cancel: threading.Event
    thread: threading.Thread


class Runner:
    def __init__(
        self,
        live: LiveWorkspace,
        *,
        max_concurrent: int,
        poll_seconds: float = 1.0,
        worker_id: str | None = None,
        hooks: list[TickHook] | None = None,
    ) -> None:
        self.live = live
        self.max_concurrent = max_concurrent
        self.poll_seconds = poll_seconds
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.worker_id = worker_id or f"{self.host}:{self.pid}:{uuid.uuid4().hex[:8]}"
        self.hooks = list(hooks or [])
        self._running: dict[str, _Running] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        beat(self.live.store, self.worker_id, self.host, self.pid)
        self._thread = threading.Thread(target=self._loop, name="cohortflow-runner", daemon=True)
        self._thread.start()
        log.info("sync service runner started", worker=self.worker_id, max_concurrent_runs=self.max_concurrent)

    def stop(self, timeout: float = 60.0) -> None:
        """Stop claiming, ask running runs to stop after their batches in flight, wait for them."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        with self._lock:
            running = list(self._running.values())
        for item in running:
            item.cancel.set()
        for item in running:
            item.thread.join(timeout)
        try:
            retire(self.live.store, self.worker_id)
        except Exception as exc:  # the state database is gone: the heartbeat expires by itself
            log.warning("could not unregister the runner", error=str(exc))

    def wake(self) -> None:
        self._wake.set()

    def running(self) -> list[str]:
        with self._lock:
            return list(self._running)

    # ------------------------------------------------------------------------------------------ the loop

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception as exc:  # the state database may be down for a while; keep trying
                log.error("sync service tick failed", error=f"{type(exc).__name__}: {exc}")
            self._wake.wait(self.poll_seconds)
            self._wake.clear()

    def tick(self) -> list[str]:
        """One pass; returns the ids of the runs it started."""
        workspace = self.live.current()
        store = workspace.store
        beat(store, self.worker_id, self.host, self.pid)
        for run_id in reap(store):
            log.warning("closed a run whose service process stopped", run_id=run_id)
        scheduler.tick(workspace)
        for hook in self.hooks:
            try:
                hook(workspace)
            except Exception as exc:  # one hook failing must not stop scheduling
                log.error("sync service hook failed", hook=getattr(hook, "__name__", repr(hook)), error=str(exc))
        started: list[str] = []
        runnable = {name for name, sync in workspace.config.syncs.items() if sync.enabled}
        while not self._stop.is_set():
            with self._lock:
                if len(self._running) >= self.max_concurrent:
                    break
            claimed = claim_next(store, self.worker_id, max_concurrent=self.max_concurrent, runnable=runnable)
            if claimed is None:
                break
            self._start(workspace, claimed)
            started.append(claimed.run_id)
        return started

    def _start(self, workspace: Workspace, claimed: ClaimedRun) -> None:
        cancel = threading.Event()
        thread = threading.Thread(
            target=self._execute, args=(workspace, claimed, cancel), name=f"run-{claimed.sync_name}", daemon=True
        )
        with self._lock:
            self._running[claimed.run_id] = _Running(claimed, cancel, thread)
        thread.start()

    def _execute(self, workspace: Workspace, claimed: ClaimedRun, cancel: threading.Event) -> None:
        options = claimed.options
        try:
            result = run_sync(
                workspace,
                claimed.sync_name,
                dry_run=options.dry_run,
                full_resync=options.full_resync,
                reconcile=options.reconcile,
                retry_rejected=options.retry_rejected,
                run_id=claimed.run_id,
                cancel=cancel,
                trigger=claimed.trigger,
            )
            log.info("run finished", sync=claimed.sync_name, run_id=claimed.run_id, status=result.status)
        except SyncError as exc:
            log.error("run could not start", sync=claimed.sync_name, run_id=claimed.run_id, error=exc.message)
        except Exception as exc:  # a bug: run_sync recorded it; keep serving the other syncs
            log.exception("run crashed", sync=claimed.sync_name, run_id=claimed.run_id, error=str(exc))
        finally:
            with self._lock:
                self._running.pop(claimed.run_id, None)
            self._wake.set()
