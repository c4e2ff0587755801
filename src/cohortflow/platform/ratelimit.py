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
from typing import Any

import structlog
from limits import RateLimitItemPerHour
from limits.storage import SlidingWindowCounterSupport, Storage, storage_from_string
from limits.strategies import FixedWindowRateLimiter, RateLimiter, SlidingWindowCounterRateLimiter
from limits.util import WindowStats
from sqlalchemy import Connection, Engine, case, delete, select
from sqlalchemy.exc import SQLAlchemyError

from cohortflow.platform.errors import RateLimited
from cohortflow.platform.store.locking import bounded_transaction
from cohortflow.platform.store.schema import rate_limit_counters
from cohortflow.platform.store.upsert import upsert_insert
from cohortflow.settings import PlatformSettings
from cohortflow.wire.cohort_import import Messages

log = structlog.get_logger(__name__)

_NAMESPACE = "cohortflow-partner"
DATABASE_STORAGE = "database"


class DatabaseStorage(Storage):
    """A ``limits`` storage in the platform database: one ``rate_limit_counters`` row per key.

    A hit is one upsert committed before the request's own transaction (so it counts even when the request
    then fails, and the counter row stays locked only for a moment). A window that has ended restarts at the
    next hit, so rows never need sweeping. A lock wait past ``lock_wait_seconds`` is :class:`ResourceLocked`,
    as for the request it belongs to.
    """

    STORAGE_SCHEME = None

    def __init__(self, engine: Engine, lock_wait_seconds: float) -> None:
        super().__init__(wrap_exceptions=False)
        self.engine = engine
        self.lock_wait_seconds = lock_wait_seconds

    @property
    def base_exceptions(self) -> type[Exception]:
        return SQLAlchemyError

    def hit_window(self, key: str, expiry: int, amount: int = 1, conn: Connection | None = None) -> tuple[int, float]:
        """Add ``amount`` to ``key``'s window and return its count and end (epoch seconds) after the hit.

        One statement: the fixed window's whole hit, and everything ``X-RateLimit-*`` needs. With ``conn`` it
        runs in that transaction (the caller commits it, before its request's own work).
        """
        if conn is None:
            # Bounded like the request's own transaction: on SQLite this write waits for the one writer lock.
            with bounded_transaction(self.engine, self.lock_wait_seconds) as own:
                return self.hit_window(key, expiry, amount, own)
        now = time.time()
        c = rate_limit_counters.c
        insert = upsert_insert(conn, rate_limit_counters).values(key=key, count=amount, expires_at=now + expiry)
        ended = c.expires_at <= now
        statement = insert.on_conflict_do_update(
            index_elements=[c.key],
            set_={
                "count": case((ended, insert.excluded.count), else_=c.count + insert.excluded.count),
                "expires_at": case((ended, insert.excluded.expires_at), else_=c.expires_at),
            },
        ).returning(c.count, c.expires_at)
        count, expires_at = conn.execute(statement).one()
        return int(count), float(expires_at)

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        return self.hit_window(key, expiry, amount)[0]

    def _live(self, key: str, column: Any) -> Any:
        c = rate_limit_counters.c
        with bounded_transaction(self.engine, self.lock_wait_seconds) as conn:
            return conn.execute(select(column).where(c.key == key, c.expires_at > time.time())).scalar()

    def get(self, key: str) -> int:
        return int(self._live(key, rate_limit_counters.c.count) or 0)

    def get_expiry(self, key: str) -> float:
        expires_at = self._live(key, rate_limit_counters.c.expires_at)
        return float(expires_at) if expires_at is not None else time.time()

    def check(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.execute(select(1))
            return True
        except SQLAlchemyError:
            return False

    def reset(self) -> int | None:
        with bounded_transaction(self.engine, self.lock_wait_seconds) as conn:
            return int(conn.execute(delete(rate_limit_counters)).rowcount)

    def clear(self, key: str) -> None:
        with bounded_transaction(self.engine, self.lock_wait_seconds) as conn:
            conn.execute(delete(rate_limit_counters).where(rate_limit_counters.c.key == key))


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
