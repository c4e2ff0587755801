"""The per-partner request budget of the partner cohort import API (Braze: 250,000 requests an hour).

Counting is the ``limits`` library's: a sliding-window counter (O(1) per hit and without the double burst a
fixed window allows at its edges) where the storage supports it, a fixed window otherwise. With ``memory://``
the budget is per process; point ``rate_limit_storage_uri`` at Redis to share it between API workers.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

import structlog
from limits import RateLimitItemPerHour
from limits.storage import SlidingWindowCounterSupport, Storage, storage_from_string
from limits.strategies import FixedWindowRateLimiter, RateLimiter, SlidingWindowCounterRateLimiter

from cohortflow.platform.errors import RateLimited
from cohortflow.settings import PlatformSettings
from cohortflow.wire.cohort_import import Messages

log = structlog.get_logger(__name__)

_NAMESPACE = "cohortflow-partner"


@dataclass(frozen=True)
class RateLimitStatus:
    """The partner's budget after this request, as the ``X-RateLimit-*`` headers report it."""

    limit: int
    remaining: int
    reset_at: int
    """Epoch seconds at which the budget next grows."""


class PartnerRateLimiter:
    def __init__(self, per_hour: int, storage_uri: str) -> None:
        self.item = RateLimitItemPerHour(per_hour, namespace=_NAMESPACE)
        storage = storage_from_string(storage_uri)
        if not isinstance(storage, Storage):
            raise ValueError(f"rate_limit_storage_uri {storage_uri!r} names an asyncio storage; use a sync one")
        self.storage = storage
        self.strategy: RateLimiter = (
            SlidingWindowCounterRateLimiter(self.storage)
            if isinstance(self.storage, SlidingWindowCounterSupport)
            else FixedWindowRateLimiter(self.storage)
        )

    def hit(self, partner_name: str) -> RateLimitStatus:
        """Spend one request of ``partner_name``'s budget, or raise :class:`RateLimited`."""
        try:
            allowed = self.strategy.hit(self.item, partner_name)
            stats = self.strategy.get_window_stats(self.item, partner_name)
        except Exception as exc:  # a rate limiter outage must not take the import API down with it
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


_limiters: dict[tuple[int, str], PartnerRateLimiter] = {}
_limiters_lock = threading.Lock()


def limiter_for(settings: PlatformSettings) -> PartnerRateLimiter:
    """The process's limiter for these settings (one shared counter store per limit and storage)."""
    key = (settings.rate_limit_per_hour, settings.rate_limit_storage_uri)
    with _limiters_lock:
        limiter = _limiters.get(key)
        if limiter is None:
            limiter = _limiters[key] = PartnerRateLimiter(*key)
        return limiter
