"""The rate limiter's database storage, through the ``limits`` strategy the platform uses with it."""

from __future__ import annotations

import time
import uuid

import pytest
from limits import RateLimitItemPerSecond
from limits.strategies import FixedWindowRateLimiter

from cohortflow.platform.errors import ResourceLocked
from cohortflow.platform.ratelimit import DatabaseStorage, PartnerRateLimiter
from cohortflow.platform.runtime import PlatformRuntime
from cohortflow.platform.store.schema import rate_limit_counters


def test_counts_within_a_window_and_restarts_after_it(runtime: PlatformRuntime) -> None:
    storage = DatabaseStorage(runtime.engine, lock_wait_seconds=1.0)
    limiter = FixedWindowRateLimiter(storage)
    item = RateLimitItemPerSecond(3, 1)
    who = uuid.uuid4().hex
    assert [limiter.hit(item, who) for _ in range(4)] == [True, True, True, False]
    stats = limiter.get_window_stats(item, who)
    assert stats.remaining == 0
    assert time.time() < stats.reset_time <= time.time() + 1.0
    assert limiter.hit(item, "someone else")  # keys are independent
    time.sleep(max(0.0, stats.reset_time - time.time()) + 0.05)
    assert limiter.get_window_stats(item, who).remaining == 3  # an ended window reads as empty
    assert limiter.hit(item, who)  # and restarts at the next hit
    assert storage.get(item.key_for(who)) == 1
    storage.clear(item.key_for(who))
    assert storage.get(item.key_for(who)) == 0
    assert storage.check()


def test_a_busy_counter_is_resource_locked_not_a_free_pass(runtime: PlatformRuntime) -> None:
    """A counter locked past the bounded wait is 423 for the request, never an uncounted request."""
    limiter = PartnerRateLimiter(10, "database", runtime.engine, lock_wait_seconds=0.3)
    partner = f"p-{uuid.uuid4().hex[:8]}"
    limiter.hit(partner)
    with runtime.engine.connect() as holder:
        holder.begin()
        # Locks the counter row on PostgreSQL; on SQLite any write transaction holds the one writer lock.
        holder.execute(rate_limit_counters.update().values(count=rate_limit_counters.c.count))
        with pytest.raises(ResourceLocked):
            limiter.hit(partner)
        holder.rollback()
    assert limiter.hit(partner).remaining == 8
