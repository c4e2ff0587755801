"""The delivery engine: campaign sends and Canvas message steps, in batches, many messages in flight.

A *queue* is a set of delivery rows (``campaign_deliveries`` of one send, ``canvas_deliveries`` of one Canvas
step) that start ``pending``. Any number of workers drain the same queue:

1. **Claim** a batch in one transaction: ``pending -> claimed`` with the worker's id and a claim deadline
   (``claimed_until``), picked in user id order from the worker's cursor, ``FOR UPDATE SKIP LOCKED`` on PostgreSQL
   so that workers take disjoint batches without waiting on each other (SQLite serializes writers, so the
   conditional UPDATE alone decides). The claim also re-checks that the send or Canvas is still running: once a
   stop commits, nothing more is claimed.
2. **Send** the batch concurrently (``webhook_connections`` requests in flight, ``smtp_connections`` SMTP
   sessions), paced by the campaign's rate limit.
3. **Record** the outcomes in one transaction per batch, only on rows this worker still holds.

While a batch is out, the next one is claimed, and the previous batch's outcomes commit. So at most about three
batches per worker are *in flight*: claimed and not yet recorded. If the worker dies (``kill -9``), those rows stay
``claimed`` until their deadline passes; then any worker claims them again and resends them with the same
idempotency key (``Idempotency-Key`` header, ``Message-ID``), derived from the queue and the user, so a receiver
can drop the duplicates. No other row is ever sent twice: a row leaves ``pending`` once, and a ``sent``/``failed``
/``skipped`` row is never claimed again. A live worker renews its claims' deadline while it works.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog
from aiolimiter import AsyncLimiter
from sqlalchemy import ColumnElement, Engine, Table, or_, select, update

from cohortflow.aio import run_blocking
from cohortflow.clock import Clock
from cohortflow.platform.messaging import frequency
from cohortflow.platform.messaging.channels import DeliveryError
from cohortflow.platform.messaging.channels.concurrent import ConcurrentChannels
from cohortflow.platform.messaging.delivery import Outcome, prepare
from cohortflow.platform.messaging.messages import EmailMessageSpec, WebhookMessageSpec
from cohortflow.platform.messaging.templates import PROFILE_COLUMNS
from cohortflow.platform.store.schema import users
from cohortflow.settings import MessagingSettings

log = structlog.get_logger(__name__)

STOPPED_REASON = "stopped"
# How often a worker re-reads whether its send (or Canvas) was stopped: the longest a stop takes to be seen.
HEARTBEAT_SECONDS = 0.2


@dataclass(frozen=True)
class Queue:
    """One stream of messages: the rows of ``table`` matching ``scope``, all carrying ``message``."""

    table: Table
    scope: tuple[ColumnElement[bool], ...]
    message: EmailMessageSpec | WebhookMessageSpec
    workspace_id: str
    # True while the send (or Canvas) may still send; claims include it, so a committed stop ends claiming.
    running: ColumnElement[bool]
    # The idempotency key of the message to one claimed row (its ``user_id`` and ``extra`` columns).
    key: Callable[[Mapping[str, Any]], str]
    extra: tuple[Any, ...] = ()
    rate_limit_per_minute: int | None = None
    ignore_frequency_caps: bool = False


@dataclass
class DrainResult:
    attempted: int = 0
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    stopped: bool = False


def drain(
    engine: Engine,
    settings: MessagingSettings,
    queue: Queue,
    owner: str,
    *,
    clock: Clock,
    batch_size: int | None = None,
    keep: Callable[[], bool] | None = None,
) -> DrainResult:
    """Deliver every row of ``queue`` this worker can claim; returns when none is left to claim.

    ``keep`` (renewing a lease the caller holds) runs on every heartbeat; when it returns False, claiming stops.
    """
    work = _Drain(engine, settings, queue, owner, clock, batch_size or settings.delivery_batch_size, keep)
    return run_blocking(work.run())


class _Drain:
    def __init__(
        self,
        engine: Engine,
        settings: MessagingSettings,
        queue: Queue,
        owner: str,
        clock: Clock,
        batch_size: int,
        keep: Callable[[], bool] | None,
    ) -> None:
        self.keep = keep
        self.engine = engine
        self.settings = settings
        self.queue = queue
        self.owner = owner
        self.clock = clock
        self.batch_size = batch_size
        self.lease = timedelta(seconds=settings.send_lease_seconds)
        self.cursor = 0
        # Rows this worker has claimed and not yet recorded: what it renews, found by key, not by a scan.
        self.held: set[int] = set()
        self.held_lock = threading.Lock()  # claims, outcomes and renewals run in different threads
        self.stale_done = False
        self.stopped = asyncio.Event()
        self.result = DrainResult()
        rate = queue.rate_limit_per_minute
        # A bucket of one: messages evenly spaced, no burst at the start of each minute.
        self.limiter = AsyncLimiter(1, 60.0 / rate) if rate else None
        if rate:
            # About a second of messages per batch, so outcomes (and the stats) keep up with a slow send.
            self.batch_size = min(batch_size, max(1, rate // 60))
        with engine.connect() as conn:
            self.cap = (
                None
                if queue.ignore_frequency_caps
                else frequency.active_cap(conn, queue.workspace_id, queue.message.channel)
            )
        self.postgres = engine.dialect.name == "postgresql"

    async def run(self) -> DrainResult:
        channels = ConcurrentChannels(self.settings)
        heartbeat = asyncio.create_task(self._heartbeat())
        recording: asyncio.Task[None] | None = None
        try:
            next_batch = asyncio.create_task(asyncio.to_thread(self._claim))
            while True:
                batch = await next_batch
                if not batch:
                    break
                # Claim the next batch while this one is out, so the database never waits on the network.
                next_batch = asyncio.create_task(asyncio.to_thread(self._claim))
                outcomes = await self._send(channels, batch)
                if recording is not None:
                    await recording
                recording = asyncio.create_task(asyncio.to_thread(self._record, outcomes))
            if recording is not None:
                await recording
        finally:
            heartbeat.cancel()
            await channels.close()
        self.result.stopped = self.stopped.is_set()
        return self.result

    # --- database (run in threads) -------------------------------------------------------------------

    def _claim(self) -> list[dict[str, Any]]:
        if self.stopped.is_set():
            return []
        batch = self._claim_rows(stale=False)
        if not batch and not self.stale_done:
            # Rows a dead worker left claimed: its in-flight window, resent with the same idempotency keys.
            self.stale_done = True
            batch = self._claim_rows(stale=True)
        return batch

    def _claim_rows(self, *, stale: bool) -> list[dict[str, Any]]:
        q, d = self.queue, self.queue.table
        now = self.clock()
        if stale:
            which: list[ColumnElement[bool]] = [
                d.c.status == "claimed",
                or_(d.c.claimed_until.is_(None), d.c.claimed_until < now),
            ]
        else:
            which = [d.c.status == "pending", d.c.user_id > self.cursor]
        pick = select(d.c.user_id).where(*q.scope, *which).order_by(d.c.user_id).limit(self.batch_size)
        if self.postgres:
            pick = pick.with_for_update(skip_locked=True)
        with self.engine.begin() as conn:
            if not conn.execute(select(q.running)).scalar():
                self.stopped.set()
                return []
            # Two statements rather than ``UPDATE ... WHERE user_id IN (SELECT ... LIMIT)``: the planner cannot
            # turn a list of ids into a nested loop over the whole queue, whatever the table's statistics say
            # (right after a send's audience is written they say the queue is empty).
            picked = [int(u) for u in conn.execute(pick).scalars()]
            if not picked:
                return []
            claimed = (
                conn.execute(
                    update(d)
                    .where(*q.scope, *which, d.c.user_id.in_(picked))
                    .values(
                        status="claimed",
                        attempts=d.c.attempts + 1,
                        claimed_by=self.owner,
                        claimed_until=now + self.lease,
                        updated_at=now,
                    )
                    .returning(d.c.user_id, d.c.attempts, *q.extra)
                )
                .mappings()
                .all()
            )
            if not claimed:
                return []
            rows = {int(r["user_id"]): dict(r) for r in claimed}
            with self.held_lock:
                self.held.update(rows)
            if not stale:
                self.cursor = max(self.cursor, max(rows))
            if self.cap is not None:
                keys = {uid: q.key(row) for uid, row in rows.items()}
                capped = frequency.reserve(conn, self.cap, q.message.channel, keys, now)
                if capped:
                    self._finish(conn, {("skipped", frequency.CAPPED_REASON): sorted(capped)}, now)
                    self.result.counts["skipped"] += len(capped)
                    with self.held_lock:
                        self.held.difference_update(capped)
                    for uid in capped:
                        del rows[uid]
            for profile in conn.execute(select(*PROFILE_COLUMNS).where(users.c.id.in_(list(rows)))).mappings():
                rows[int(profile["id"])]["profile"] = profile
        return sorted(rows.values(), key=lambda r: int(r["user_id"]))

    def _finish(self, conn: Any, groups: Mapping[tuple[str, str | None], list[int]], now: datetime) -> None:
        d = self.queue.table
        for (status, reason), user_ids in groups.items():
            conn.execute(
                update(d)
                .where(
                    *self.queue.scope, d.c.user_id.in_(user_ids), d.c.status == "claimed", d.c.claimed_by == self.owner
                )
                .values(status=status, reason=reason, claimed_until=None, updated_at=now)
            )

    def _record(self, outcomes: Sequence[tuple[Mapping[str, Any], Outcome]]) -> None:
        groups: dict[tuple[str, str | None], list[int]] = defaultdict(list)
        unsent: list[str] = []
        for row, outcome in outcomes:
            groups[(outcome.status, outcome.reason[:1000] if outcome.reason else None)].append(int(row["user_id"]))
            self.result.counts[outcome.status] += 1
            if outcome.status != "sent":
                unsent.append(self.queue.key(row))
        with self.engine.begin() as conn:
            self._finish(conn, groups, self.clock())
            if self.cap is not None:
                frequency.release(conn, unsent)
        with self.held_lock:
            self.held.difference_update(int(row["user_id"]) for row, _ in outcomes)

    def _still_running(self) -> bool:
        with self.engine.connect() as conn:
            return bool(conn.execute(select(self.queue.running)).scalar())

    def _renew(self) -> None:
        d = self.queue.table
        with self.held_lock:
            held = sorted(self.held)
        if not held:
            return
        with self.engine.begin() as conn:
            conn.execute(
                update(d)
                .where(
                    *self.queue.scope,
                    d.c.user_id.in_(held),
                    d.c.status == "claimed",
                    d.c.claimed_by == self.owner,
                )
                .values(claimed_until=self.clock() + self.lease)
            )

    async def _heartbeat(self) -> None:
        """Notices a stop within ``HEARTBEAT_SECONDS``, and keeps this worker's claims from expiring while it works."""
        renewed = time.monotonic()
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            if not await asyncio.to_thread(self._still_running):
                self.stopped.set()
            if self.keep is not None and not await asyncio.to_thread(self.keep):
                self.stopped.set()
            if time.monotonic() - renewed > self.lease.total_seconds() / 3:
                await asyncio.to_thread(self._renew)
                renewed = time.monotonic()

    # --- sending -----------------------------------------------------------------------------------------

    async def _send(
        self, channels: ConcurrentChannels, batch: list[dict[str, Any]]
    ) -> list[tuple[Mapping[str, Any], Outcome]]:
        outcomes = await asyncio.gather(*(self._one(channels, row) for row in batch))
        self.result.attempted += len(batch)
        return list(zip(batch, outcomes, strict=True))

    async def _paced(self) -> bool:
        """Wait for the rate limit's next slot; False when the send is stopped first."""
        if self.limiter is None or self.stopped.is_set():
            return not self.stopped.is_set()
        slot = asyncio.ensure_future(self.limiter.acquire())
        stop = asyncio.ensure_future(self.stopped.wait())
        await asyncio.wait((slot, stop), return_when=asyncio.FIRST_COMPLETED)
        for waiting in (slot, stop):
            waiting.cancel()
        return slot.done() and not slot.cancelled() and not self.stopped.is_set()

    async def _one(self, channels: ConcurrentChannels, row: Mapping[str, Any]) -> Outcome:
        profile = row.get("profile")
        if profile is None:
            return Outcome("skipped", "user no longer exists")
        outgoing = prepare(self.queue.message, profile, self.queue.key(row))
        if isinstance(outgoing, Outcome):
            return outgoing
        if not await self._paced():
            return Outcome("skipped", STOPPED_REASON)
        try:
            await channels.send(outgoing)
        except DeliveryError as exc:
            return Outcome("failed", exc.message)
        except Exception as exc:
            # A bug or a library surprise must fail this message, not the batch: a batch that raised would stay
            # claimed and be resent after the claim runs out, again and again.
            log.exception("delivery failed unexpectedly", error=type(exc).__name__)
            return Outcome("failed", f"internal error: {type(exc).__name__}")
        return Outcome("sent")
