"""The per-partner request budget of the partner cohort import API (Braze: 250,000 requests an hour).

Counting is the ``limits`` library's: a sliding-window counter (O(1) per hit and without the double burst a
fixed window allows at its edges) where the storage supports it, a fixed window otherwise.

Where the counters live is ``rate_limit_storage_uri``: ``database`` (the default) keeps them in the platform
database (:class:`DatabaseStorage`, a fixed window), so one budget holds across every server process and
machine on that database; ``memory://`` counts per process (exact only with one worker); any other ``limits``
URI (``redis://host:port``) uses that store.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from functools import partial

import structlog
from limits import RateLimitItemPerHour
from limits.storage import SlidingWindowCounterSupport, Storage, storage_from_string
from limits.strategies import FixedWindowRateLimiter, RateLimiter, SlidingWindowCounterRateLimiter
from limits.util import WindowStats
from sqlalchemy import Connection, Engine

from cohortflow.counters import TableCounterStorage
from cohortflow.platform.errors import RateLimited
from cohortflow.platform.store.locking import bounded_transaction
from cohortflow.platform.store.schema import rate_limit_counters
from cohortflow.settings import PlatformSettings
from cohortflow.wire.cohort_import import Messages

log = structlog.get_logger(__name__)

_NAMESPACE = "cohortflow-partner"
DATABASE_STORAGE = "database"


class DatabaseStorage(TableCounterStorage):
    """A ``limits`` storage in the platform database: one ``rate_limit_counters`` row per key.

    A hit is one upsert committed before the request's own transaction (so it counts even when the request
    then fails, and the counter row stays locked only for a moment). A lock wait past ``lock_wait_seconds`` is
    :class:`ResourceLocked`, as for the request it belongs to: on SQLite this write waits for the one writer lock.
    """

    def __init__(self, engine: Engine, lock_wait_seconds: float) -> None:
        super().__init__(
            engine, rate_limit_counters, transaction=partial(bounded_transaction, engine, lock_wait_seconds)
        )
        self.lock_wait_seconds = lock_wait_seconds


@dataclass(frozen=True)
class RateLimitStatus:
    """The partner's budget after this request, as the ``X-RateLimit-*`` headers report it."""

    limit: int
    remaining: int
    reset_at: int
    """Epoch seconds at which the budget next grows."""


class PartnerRateLimiter:
    def __init__(self, per_hour: int, storage_uri: str, engine: Engine, lock_wait_seconds: float) -> None:
        self.item = RateLimitItemPerHour(per_hour, namespace=_NAMESPACE)
        storage = (
            DatabaseStorage(engine, lock_wait_seconds)
            if storage_uri == DATABASE_STORAGE
            else storage_from_string(storage_uri)
        )
        if not isinstance(storage, Storage):
            raise ValueError(f"rate_limit_storage_uri {storage_uri!r} names an asyncio storage; use a sync one")
        self.storage = storage
        self.strategy: RateLimiter = (
            SlidingWindowCounterRateLimiter(self.storage)
            if isinstance(self.storage, SlidingWindowCounterSupport)
            else FixedWindowRateLimiter(self.storage)
        )

    def hit(self, partner_name: str, conn: Connection | None = None) -> RateLimitStatus:
        """Spend one request of ``partner_name``'s budget, or raise :class:`RateLimited`.

        With the database storage the hit runs in ``conn`` when given (see :meth:`DatabaseStorage.hit_window`),
        and its errors are the database's, as for the request itself.
        """
        if isinstance(self.storage, DatabaseStorage):
            count, expires_at = self.storage.hit_window(
                self.item.key_for(partner_name), self.item.get_expiry(), 1, conn
            )
            allowed, stats = count <= self.item.amount, WindowStats(expires_at, max(0, self.item.amount - count))
        else:
            try:
                allowed = self.strategy.hit(self.item, partner_name)
                stats = self.strategy.get_window_stats(self.item, partner_name)
            except Exception as exc:  # an outage of an external store must not take the import API down
                log.warning("rate limiter unavailable; request allowed", error=type(exc).__name__)
                return RateLimitStatus(self.item.amount, self.item.amount, int(time.time()) + 1)
        reset_at = math.ceil(stats.reset_time)
        if not allowed:
            raise RateLimited(
                Messages.RATE_LIMITED,
                limit=self.item.amount,
                remaining=0,
                reset_at=reset_at,
                retry_after=max(1.0, stats.reset_time - time.time()),
            )
        return RateLimitStatus(self.item.amount, stats.remaining, reset_at)

    @classmethod
    def from_settings(cls, settings: PlatformSettings, engine: Engine) -> PartnerRateLimiter:
        return cls(
            settings.rate_limit_per_hour, settings.rate_limit_storage_uri, engine, settings.cohort_lock_wait_seconds
        )
