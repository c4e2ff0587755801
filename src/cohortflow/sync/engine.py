"""One sync run, end to end: query, plan, send, commit, record.

This is the public entry point (the CLI, a scheduler or an API call :func:`run_sync`)::

    with load_workspace("cohortflow.yaml") as ws:
        result = run_sync(ws, "vip_customers")
        print(result.status, result.counts["added"])
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import duckdb
import pyarrow as pa
import structlog

from cohortflow.aio import run_blocking
from cohortflow.settings import get_settings
from cohortflow.sync.debugger import RequestRecorder, save_samples
from cohortflow.sync.delivery import Delivery, DeliveryTotals
from cohortflow.sync.destinations import bind_sync
from cohortflow.sync.destinations.base import SyncDestination
from cohortflow.sync.errors import ModelError, RunCancelled, SyncError
from cohortflow.sync.planner import ADD, MEMBER_IDENTITY_SCHEMA, REMOVE, Plan, build_plan
from cohortflow.sync.runs import (
    CANCELLED,
    FAILED,
    PARTIAL,
    PLANNING,
    SENDING,
    SUCCEEDED,
    Heartbeat,
    acquire_lock,
    cancel_requested,
    create_run,
    finish_run,
    get_run,
    release_lock,
    update_run,
)
from cohortflow.sync.state import StateStore
from cohortflow.sync.workspace import Workspace

log = structlog.get_logger("cohortflow.sync")

Progress = Callable[[str, int, int | None], None]
T = TypeVar("T")


@dataclass
class RunResult:
    run_id: str
    sync: str
    status: str
    dry_run: bool
    full_resync: bool
    reconcile: bool = False
    target: str = ""
    counts: dict[str, Any] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)
    message: str | None = None
    samples: dict[str, list[str]] = field(default_factory=dict)  # planned adds/removes (dry runs)
    error: SyncError | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.status == SUCCEEDED

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "sync": self.sync,
            "status": self.status,
            "dry_run": self.dry_run,
            "full_resync": self.full_resync,
            "reconcile": self.reconcile,
            "target": self.target,
            "counts": self.counts,
            "phases": self.phases,
            "errors": self.errors,
            "message": self.message,
            "samples": self.samples,
        }


class _Phases:
    def __init__(self) -> None:
        self.times: dict[str, float] = {}
        self._name: str | None = None
        self._start = 0.0

    def enter(self, name: str | None) -> None:
        now = time.monotonic()
        if self._name is not None:
            self.times[self._name] = round(self.times.get(self._name, 0.0) + now - self._start, 4)
        self._name, self._start = name, now


def _model_errors(plan: Plan) -> list[dict[str, Any]]:
    return [
        {"reason": f"rejected row: {r.reason}", "count": r.count, "samples": [f"primary key {s}" for s in r.samples]}
        for r in plan.counts.rejected
    ]


def run_sync(
    workspace: Workspace,
    name: str,
    *,
    dry_run: bool = False,
    full_resync: bool = False,
    reconcile: bool = False,
    retry_rejected: bool = False,
    progress: Progress | None = None,
    run_id: str | None = None,
    cancel: threading.Event | None = None,
    trigger: str | None = "cli",
) -> RunResult:
    """Run sync ``name`` once and return its record.

    ``full_resync`` sends every member again and removes every confirmed or uncertain one the model lacks;
    ``reconcile`` reads the cohort's real membership from the destination (a cohortflow platform) and repairs
    drift both ways; ``retry_rejected`` sends quarantined identifiers again.

    ``run_id`` names a run record that already exists and, unless a dry run, already holds the sync's lock
    (``sync serve`` claims a queued run that way); without it a record is created and the lock taken here.
    Setting ``cancel`` (or a cancel request in the state database, from any process) stops the run after the
    batches in flight: it ends ``cancelled`` with exactly what was confirmed recorded.

    Errors during the run end it as ``failed`` in the result (``result.error`` holds the exception); an
    unknown name raises :class:`UnknownObject`, and a lock held by a live run raises :class:`SyncLocked`
    (the attempt is recorded as a failed run). Non-cohortflow exceptions (bugs) are recorded and re-raised.
    """
    store = workspace.store
    try:
        sync = workspace.sync(name)
        model = workspace.sync_model(name)
        source = workspace.source(model.source)
        dest_config = workspace.destination(sync.destination)
        recorder = RequestRecorder(get_settings().sync.debugger_samples_per_run, store.clock)
        destination = bind_sync(dest_config, name, sync, recorder=recorder)
    except SyncError as exc:
        if run_id is not None:  # a claimed run: its record and lock exist, close them
            finish_run(store, run_id, FAILED, message=exc.message)
            release_lock(store, name, run_id)
        raise

    if run_id is None:
        run_id = create_run(
            store,
            name,
            dry_run=dry_run,
            full_resync=full_resync,
            reconcile=reconcile,
            retry_rejected=retry_rejected,
            trigger=trigger,
        )
        if not dry_run:
            try:
                acquire_lock(store, name, run_id)
            except SyncError as exc:
                finish_run(store, run_id, FAILED, message=exc.message)
                run_blocking(destination.aclose())
                raise
    result = RunResult(
        run_id=run_id,
        sync=name,
        status=FAILED,
        dry_run=dry_run,
        full_resync=full_resync,
        reconcile=reconcile,
        target=destination.target,
    )
    phases = _Phases()
    phases.enter("querying")
    counts: dict[str, Any] = {}
    errors: list[dict[str, Any]] = []
    heartbeat = Heartbeat(store, name, run_id, locked=not dry_run, cancel=cancel)
    stop = heartbeat.cancel
    closed = False

    def check_cancel() -> None:
        if stop.is_set():
            raise RunCancelled("cancelled before anything was sent; nothing changed at the destination")

    try:
        heartbeat.__enter__()
        if cancel_requested(store, run_id):
            stop.set()
        check_cancel()

        def planning() -> None:
            phases.enter("planning")
            with store.transaction() as conn:
                update_run(conn, run_id, status=PLANNING, phases=phases.times)

        state = store.get(name)
        stale = state is not None and state.target != destination.target
        actual = None
        if reconcile:
            # The export runs in an event loop of its own and closes its client: delivery gets a new one.
            actual = run_blocking(_export(destination))
            with store.transaction() as conn:
                save_samples(conn, run_id, recorder.drain())
            destination = bind_sync(dest_config, name, sync, recorder=recorder)
            check_cancel()
        if not dry_run:
            store.compact_uncertain(name, run_id)
        with build_plan(
            sync_name=name,
            sync=sync,
            model=model,
            source=source,
            store=store,
            full_resync=full_resync,
            confirmed_is_stale=stale,
            unsupported_kinds=destination.unsupported_kinds,
            on_rows=(lambda n: progress("querying", n, None)) if progress else None,
            on_planning=planning,
            quarantine_after=None if retry_rejected else sync.quarantine_after_runs,
            actual_members=iter(actual) if actual is not None else None,
        ) as plan:
            counts = plan.counts.as_dict()
            errors = _model_errors(plan)
            result.samples = {"adds": plan.sample(ADD), "removes": plan.sample(REMOVE)}
            if dry_run:
                phases.enter(None)
                result.status = SUCCEEDED
            else:
                check_cancel()
                phases.enter("sending")
                with store.transaction() as conn:
                    plan.uncertain_batch_ids += store.bind_target(conn, name, destination.target, run_id)
                    if reconcile:
                        store.replace_members(conn, name, plan.members_truth())
                    for op in (ADD, REMOVE):
                        store.forget_rejections(conn, name, op, plan.stale_rejections(op))
                    update_run(conn, run_id, status=SENDING, phases=phases.times, counts=counts, errors=errors)
                closed = True  # _send closes the client inside its own event loop
                totals = run_blocking(
                    _send(
                        workspace,
                        name,
                        run_id,
                        destination,
                        plan,
                        counts,
                        full_resync or reconcile,
                        progress,
                        stop,
                        recorder,
                    )
                )
                counts = {**counts, **totals.as_dict()}
                errors = errors + totals.errors
                phases.enter(None)
                # Rejections that reached quarantine are warnings (listed by `cohortflow sync rejected`).
                rejected = sum(totals.rejected.values()) - totals.newly_quarantined
                delivered_all = not (totals.failed_adds or totals.failed_removes or rejected or totals.not_attempted)
                result.status = SUCCEEDED if delivered_all else PARTIAL
                if not totals.not_attempted:
                    # Every planned batch has a record of its own now (closed or uncertain), so the uncertain
                    # batches this plan resolved say nothing more.
                    with store.transaction() as conn:
                        store.drop_batches(conn, plan.uncertain_batch_ids)
                    if plan.counts.adds or plan.counts.removes or stale or reconcile:
                        _save_snapshot(plan, store, name, run_id)
                if stop.is_set() and totals.not_attempted:
                    result.status = CANCELLED
                    result.message = (
                        f"cancelled: stopped after the batches in flight; {totals.not_attempted} identifier(s) "
                        "not attempted (the next run sends them)"
                    )
                elif not delivered_all:
                    result.message = (
                        f"{totals.failed_adds + totals.failed_removes} identifier(s) failed, "
                        f"{rejected} rejected, {totals.not_attempted} not attempted; the next run retries them"
                    )
                elif totals.newly_quarantined or plan.counts.quarantined:
                    result.message = (
                        f"{totals.newly_quarantined + plan.counts.quarantined} identifier(s) quarantined after "
                        f"repeated rejections (cohortflow sync rejected {name}; --retry-rejected sends them again)"
                    )
    except RunCancelled as exc:
        phases.enter(None)
        result.status, result.message = CANCELLED, exc.message
    except SyncError as exc:
        phases.enter(None)
        result.status, result.message, result.error = FAILED, exc.message, exc
        if isinstance(exc, ModelError) and exc.samples:
            errors = [*errors, {"reason": exc.message, "count": exc.count, "samples": exc.samples}]
    except BaseException as exc:
        phases.enter(None)
        finish_run(store, run_id, FAILED, message=f"internal error: {type(exc).__name__}: {exc}", phases=phases.times)
        if not dry_run:
            release_lock(store, name, run_id)
        raise
    finally:
        heartbeat.__exit__(None, None, None)
        if not closed:
            run_blocking(destination.aclose())
    if result.status in (FAILED, CANCELLED) and not dry_run:
        # The counts written per batch are the truth for what was delivered before a failure; a run that stopped
        # on a cancel has its final totals in ``counts`` already (including what it did not attempt).
        counts = {**get_run(store, run_id).counts, **counts}
    result.counts, result.phases, result.errors = counts, phases.times, errors
    finish_run(store, run_id, result.status, phases=phases.times, counts=counts, errors=errors, message=result.message)
    if not dry_run:
        release_lock(store, name, run_id)
    log.info("sync run finished", sync=name, run_id=run_id, status=result.status, message=result.message)
    return result


async def _export(destination: SyncDestination) -> list[pa.RecordBatch]:
    """The destination's members as identity rows (member number, kind, label, value), for reconcile.

    Device ids count only for anonymous members, the only ones they match; the export lists no others.
    """
    out: list[pa.RecordBatch] = []
    number = 0
    try:
        async for page in destination.export_members():
            rows: list[tuple[int, str, str, str]] = []
            for m in page:
                number += 1
                if m.external_id is not None:
                    rows.append((number, "e", "", m.external_id))
                rows.extend((number, "a", a.alias_label, a.alias_name) for a in m.aliases)
                rows.extend((number, "d", "", d) for d in m.device_ids)
            if rows:
                columns = list(zip(*rows, strict=True))
                out.append(
                    pa.RecordBatch.from_arrays(
                        [pa.array(columns[0], pa.int64()), *(pa.array(c, pa.string()) for c in columns[1:])],
                        schema=MEMBER_IDENTITY_SCHEMA,
                    )
                )
    finally:
        await destination.aclose()
    return out


def _save_snapshot(plan: Plan, store: StateStore, name: str, run_id: str) -> None:
    try:
        plan.save_confirmed(store, name, run_id)
    except (OSError, duckdb.Error) as exc:  # a cache: the next plan reads the state database instead
        log.warning("could not write the membership snapshot", sync=name, error=str(exc))


async def _send(
    workspace: Workspace,
    name: str,
    run_id: str,
    destination: SyncDestination,
    plan: Plan,
    counts: dict[str, Any],
    full_resync: bool,
    progress: Progress | None,
    cancel: threading.Event | None = None,
    recorder: RequestRecorder | None = None,
) -> DeliveryTotals:
    delivery: Delivery | None = None
    try:
        store = workspace.store
        state = store.get(name)
        tuning = workspace.destination(workspace.sync(name).destination)
        delivery = Delivery(
            destination=destination,
            store=store,
            sync_name=name,
            run_id=run_id,
            concurrency=tuning.concurrency,
            rate_limit_per_hour=tuning.rate_limit_per_hour,
            retry=tuning.retry,
            base_counts=counts,
            progress=progress,
            quarantine_after=workspace.sync(name).quarantine_after_runs,
            cancel=cancel,
            recorder=recorder,
        )
        has_changes = plan.counts.adds > 0 or plan.counts.removes > 0
        cohort_name = destination.cohort_name
        if cohort_name is not None and (
            has_changes or full_resync or state is None or state.cohort_name != cohort_name
        ):
            # Once per run, before any membership change: creates the cohort or renames it.
            await delivery.call(destination.name_cohort)
            with store.transaction() as conn:
                store.set_cohort_name(conn, name, cohort_name)
        return await delivery.deliver(plan)
    finally:
        await destination.aclose()
        if delivery is not None:
            delivery.flush_samples()
