"""Deliver a plan: batches to the destination, each acknowledged batch committed to state at once.

- Removes go first, then adds, so a user whose identifier changed kind (e.g. device id -> external id) is
  removed under the old one before being added under the new one; if some removes could not be delivered,
  adds wait for the next run rather than risk that order.
- At most ``concurrency`` batches are in flight; a token bucket (aiolimiter) holds the request rate.
- Before a batch goes out, one small transaction records it (``sync_batches``); the transaction that
  records its acknowledgement deletes that record. A batch whose answer never arrives (a crash, a timeout,
  retries run out, a 2xx that is not Braze's success) stays recorded: *uncertain*, and the next plan sends
  its identities their desired state (see planner.py).
- 429, 423, 5xx and timeouts are retried with exponential backoff and full jitter (tenacity), never sooner
  than the destination's ``Retry-After``. A batch that still fails stays uncertain for the next run.
- 400 (or 413): the batch is split in halves until the bad identifiers are alone; each is rejected with the
  destination's reason (recorded in ``sync_failures``, quarantined after enough runs) and the rest is
  delivered. A 400 is applied by no receiver, so rejected identifiers are certain, not uncertain.
- 401/403, or a 2xx that is not a success, stops the run at once: nothing else is sent.
- After each acknowledged batch, one transaction records the membership change and the run's counts.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiolimiter import AsyncLimiter
from sqlalchemy import Connection
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from cohortflow.sync.config import RetryConfig
from cohortflow.sync.debugger import RequestRecorder, current_attempt, save_samples
from cohortflow.sync.destinations.base import BatchOutcome, SyncDestination
from cohortflow.sync.errors import DestinationBadAnswer, DestinationRejected, DestinationUnavailable
from cohortflow.sync.identifiers import describe
from cohortflow.sync.planner import ADD, REMOVE, Plan
from cohortflow.sync.runs import heartbeat, update_run
from cohortflow.sync.state import Identity, StateStore

SAMPLE_SIZE = 5
MAX_ERROR_KINDS = 10
SPLIT_STATUSES = frozenset({400, 413})

Progress = Callable[[str, int, int | None], None]
T = TypeVar("T")


@dataclass
class DeliveryTotals:
    added: int = 0
    removed: int = 0
    failed_adds: int = 0
    failed_removes: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    requests: int = 0
    retried_requests: int = 0
    matched: int = 0
    unmatched: int = 0
    unchanged: int = 0
    # Memberships the destination reports it really changed (added / removed users), when it reports counts.
    members_added: int = 0
    members_removed: int = 0
    reported_counts: bool = False
    not_attempted: int = 0
    # Rejections that reached the sync's quarantine threshold in this run: warnings, not failures.
    newly_quarantined: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "added": self.added,
            "removed": self.removed,
            "failed_adds": self.failed_adds,
            "failed_removes": self.failed_removes,
            "rejected_by_destination": dict(self.rejected),
            "requests": self.requests,
            "retried_requests": self.retried_requests,
            "not_attempted": self.not_attempted,
            "newly_quarantined": self.newly_quarantined,
        }
        if self.reported_counts:
            out.update(
                matched=self.matched,
                unmatched=self.unmatched,
                unchanged=self.unchanged,
                members_added=self.members_added,
                members_removed=self.members_removed,
            )
        return out

    def note_error(self, reason: str, ids: Sequence[Identity]) -> None:
        for entry in self.errors:
            if entry["reason"] == reason:
                entry["count"] += len(ids)
                room = SAMPLE_SIZE - len(entry["samples"])
                entry["samples"].extend(describe(i) for i in ids[: max(room, 0)])
                return
        if len(self.errors) < MAX_ERROR_KINDS:
            self.errors.append(
                {"reason": reason, "count": len(ids), "samples": [describe(i) for i in ids[:SAMPLE_SIZE]]}
            )


def rate_limiter(per_hour: int) -> AsyncLimiter:
    """A token bucket holding ``per_hour`` with a burst of about one second's worth (never a whole hour's)."""
    if per_hour >= 3600:
        return AsyncLimiter(per_hour / 3600, 1)
    return AsyncLimiter(1, 3600 / per_hour)


class _Fatal(Exception):
    pass


# How one batch ended: acknowledged and its record closed in the same commit; settled piecewise (split by a
# 400: every identifier acknowledged or rejected) with its record still to close; or left uncertain.
_CLOSED, _SETTLED, _UNCERTAIN = "closed", "settled", "uncertain"


class Delivery:
    def __init__(
        self,
        *,
        destination: SyncDestination,
        store: StateStore,
        sync_name: str,
        run_id: str,
        concurrency: int,
        rate_limit_per_hour: int,
        retry: RetryConfig,
        base_counts: dict[str, Any],
        progress: Progress | None = None,
        quarantine_after: int = 3,
        cancel: threading.Event | None = None,
        recorder: RequestRecorder | None = None,
    ) -> None:
        self.destination = destination
        self.store = store
        self.sync_name = sync_name
        self.run_id = run_id
        self.concurrency = concurrency
        self.limiter = rate_limiter(rate_limit_per_hour)
        self.retry = retry
        self.totals = DeliveryTotals()
        self.base_counts = base_counts
        self.progress = progress
        self.quarantine_after = quarantine_after
        self._fatal: BaseException | None = None
        self._done = 0
        self._total = 0
        self._tasks: set[asyncio.Task[None]] = set()
        # After a batch exhausts its retries the destination is likely down: finish what is in flight and
        # leave the rest of the plan to the next run instead of grinding through every batch's retries.
        self._gave_up = False
        # Set from another thread when the run is cancelled: checked between batches, exactly like giving up
        # (the batches in flight finish and are recorded; the rest is left for the next run).
        self._cancel = cancel
        self.recorder = recorder
        self._not_attempted = 0
        # A SQLite commit is a few milliseconds of local work: done on the event loop's thread it costs about
        # a third less CPU than handing it to a worker thread (no hand-off, no GIL ping-pong), which is what
        # delivery spends most of its CPU on while it holds the rate limit. A networked state database
        # (PostgreSQL) waits on round trips instead, so its commits stay off the loop.
        self._commit_inline = store.engine.dialect.name == "sqlite"
        # Whether the failures table may hold identifiers of this op (else confirming skips clearing it).
        self._may_have_failed = {ADD: True, REMOVE: True}

    # ------------------------------------------------------------ one request, retried

    def _wait(self, state: RetryCallState) -> float:
        backoff = wait_random_exponential(
            multiplier=self.retry.initial_backoff_seconds, max=self.retry.max_backoff_seconds
        )
        delay = float(backoff(state))
        exc = state.outcome.exception() if state.outcome else None
        retry_after = getattr(exc, "retry_after", None)
        return max(delay, float(retry_after)) if retry_after is not None else delay

    def _stop(self, state: RetryCallState) -> bool:
        if stop_after_attempt(self.retry.max_attempts)(state):
            return True
        exc = state.outcome.exception() if state.outcome else None
        retry_after = getattr(exc, "retry_after", None)
        return retry_after is not None and retry_after > self.retry.max_retry_after_seconds

    def _before_sleep(self, _state: RetryCallState) -> None:
        self.totals.retried_requests += 1
        # A retry may wait long (backoff, Retry-After): show the failed attempts in the debugger now.
        self.flush_samples()

    def flush_samples(self) -> None:
        if self.recorder is not None:
            samples = self.recorder.drain()
            if samples:
                with self.store.transaction() as conn:
                    save_samples(conn, self.run_id, samples)

    def _samples(self, conn: Connection) -> None:
        if self.recorder is not None:
            save_samples(conn, self.run_id, self.recorder.drain())

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """``fn()`` under the rate limit, retried like a batch; a final transient failure is raised."""
        async for attempt in AsyncRetrying(
            stop=self._stop,
            wait=self._wait,
            retry=retry_if_exception_type(DestinationUnavailable),
            before_sleep=self._before_sleep,
            reraise=True,
        ):
            with attempt:
                async with self.limiter:
                    self.totals.requests += 1
                    current_attempt.set(attempt.retry_state.attempt_number)
                    return await fn()
        raise AssertionError("unreachable: tenacity reraises the last error")

    async def _send(self, ids: Sequence[Identity], remove: bool) -> BatchOutcome:
        return await self.call(lambda: self.destination.send(ids, remove=remove))

    # ------------------------------------------------------------ commits

    def _counts(self) -> dict[str, Any]:
        return {**self.base_counts, **self.totals.as_dict()}

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        if self._commit_inline:
            return fn(*args)
        return await asyncio.to_thread(fn, *args)

    def _open(self, op: str, ids: Sequence[Identity]) -> str:
        with self.store.transaction() as conn:
            return self.store.open_batch(conn, self.sync_name, self.run_id, op, ids)

    def _commit(self, op: str, ids: Sequence[Identity], outcome: BatchOutcome, batch_id: str | None) -> None:
        totals = self.totals
        if op == ADD:
            totals.added += len(ids)
        else:
            totals.removed += len(ids)
        if outcome.matched is not None:
            totals.reported_counts = True
            totals.matched += outcome.matched
            totals.unmatched += outcome.unmatched or 0
            totals.unchanged += outcome.unchanged or 0
            if op == ADD:
                totals.members_added += outcome.changed or 0
            else:
                totals.members_removed += outcome.changed or 0
        with self.store.transaction() as conn:
            self.store.confirm(conn, self.sync_name, op, ids, clear_failures=self._may_have_failed[op])
            if batch_id is not None:
                self.store.close_batch(conn, batch_id)
            update_run(conn, self.run_id, counts=self._counts(), errors=totals.errors)
            heartbeat(conn, self.sync_name, self.run_id, self.store.clock())
            self._samples(conn)

    def _close(self, batch_id: str) -> None:
        with self.store.transaction() as conn:
            self.store.close_batch(conn, batch_id)

    def _reject(self, op: str, ids: Sequence[Identity], reason: str) -> None:
        totals = self.totals
        totals.rejected[reason] = totals.rejected.get(reason, 0) + len(ids)
        totals.note_error("rejected: " + reason, ids)
        with self.store.transaction() as conn:
            runs = self.store.record_rejections(conn, self.sync_name, op, ids, reason, self.run_id)
            if runs >= self.quarantine_after:
                totals.newly_quarantined += len(ids)
            update_run(conn, self.run_id, counts=self._counts(), errors=totals.errors)
            self._samples(conn)

    def _uncertain(self, op: str, ids: Sequence[Identity], batch_id: str, reason: str) -> None:
        totals = self.totals
        if op == ADD:
            totals.failed_adds += len(ids)
        else:
            totals.failed_removes += len(ids)
        totals.note_error("failed: " + reason, ids)
        with self.store.transaction() as conn:
            self.store.fail_batch(conn, batch_id, reason)
            update_run(conn, self.run_id, counts=self._counts(), errors=totals.errors)
            self._samples(conn)

    # ------------------------------------------------------------ batches

    async def _deliver_batch(self, op: str, ids: list[Identity]) -> None:
        batch_id = await self._db(self._open, op, ids)
        if await self._deliver(op, ids, batch_id, whole=True) == _SETTLED:
            await self._db(self._close, batch_id)

    async def _deliver(self, op: str, ids: list[Identity], batch_id: str, *, whole: bool) -> str:
        try:
            outcome = await self._send(ids, op == REMOVE)
        except DestinationRejected as exc:
            if exc.status not in SPLIT_STATUSES:
                # Not about identifiers (a wrong partner path, a removed endpoint): no batch can succeed.
                raise _Fatal() from exc
            if len(ids) == 1:
                await self._db(self._reject, op, ids, exc.message)
                self._advance(1)
                return _SETTLED
            half = len(ids) // 2
            first = await self._deliver(op, ids[:half], batch_id, whole=False)
            second = await self._deliver(op, ids[half:], batch_id, whole=False)
            return _UNCERTAIN if _UNCERTAIN in (first, second) else _SETTLED
        except DestinationUnavailable as exc:
            self._gave_up = True
            await self._db(self._uncertain, op, ids, batch_id, exc.message)
            self._advance(len(ids))
            return _UNCERTAIN
        except DestinationBadAnswer as exc:
            await self._db(self._uncertain, op, ids, batch_id, exc.message)
            raise _Fatal() from exc
        await self._db(self._commit, op, ids, outcome, batch_id if whole else None)
        self._advance(len(ids))
        return _CLOSED if whole else _SETTLED

    def _advance(self, n: int) -> None:
        self._done += n
        if self.progress is not None:
            self.progress("sending", self._done, self._total)

    async def _guarded(self, op: str, ids: list[Identity], slots: asyncio.Semaphore) -> None:
        try:
            await self._deliver_batch(op, ids)
        except asyncio.CancelledError:
            raise
        except _Fatal as exc:
            self._stop_all(exc.__cause__ or exc)
        except Exception as exc:  # 401, another terminal answer, or the state database failing
            self._stop_all(exc)
        finally:
            slots.release()

    def _stop_all(self, exc: BaseException) -> None:
        if self._fatal is None:
            self._fatal = exc
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()

    def _stopping(self) -> bool:
        return self._gave_up or (self._cancel is not None and self._cancel.is_set())

    async def _phase(self, plan: Plan, op: str) -> None:
        slots = asyncio.Semaphore(self.concurrency)
        try:
            for batch in plan.batches(op, self.destination.batch_size):
                await slots.acquire()
                if self._cancel is not None and self._cancel.is_set():
                    self._gave_up = True
                if self._fatal is not None or self._gave_up:
                    slots.release()
                    if self._gave_up and self._fatal is None:
                        self._not_attempted += len(batch)
                        continue
                    break
                task = asyncio.create_task(self._guarded(op, batch, slots))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
        finally:
            for task in self._tasks:
                task.cancel()
        if self._fatal is not None:
            raise self._fatal

    async def deliver(self, plan: Plan) -> DeliveryTotals:
        self._total = plan.counts.adds + plan.counts.removes
        self._may_have_failed = {ADD: plan.has_rejections, REMOVE: plan.has_rejections}
        await self._phase(plan, REMOVE)
        if self.totals.failed_removes or self._stopping():
            # Adds after an undelivered remove could be undone by it later; the next run sends both in order.
            self.totals.not_attempted = self._not_attempted + plan.counts.adds
            return self.totals
        await self._phase(plan, ADD)
        self.totals.not_attempted = self._not_attempted
        return self.totals
