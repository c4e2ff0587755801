"""Login throttling: failed sign-ins are counted per account and per client address in a fixed window.

Counting goes through a ``limits`` storage supplied by the product, so that with several server processes the
count is shared (the platform passes its database storage).
"""

from __future__ import annotations

from limits import RateLimitItem, parse
from limits.storage import Storage
from limits.strategies import FixedWindowRateLimiter

_NAMESPACE = "cohortflow-login"


class LoginThrottle:
    def __init__(
        self, storage: Storage, *, per_account: str = "10 per 15 minutes", per_address: str = "50 per 15 minutes"
    ) -> None:
        self._limiter = FixedWindowRateLimiter(storage)
        self._account: RateLimitItem = parse(per_account)
        self._address: RateLimitItem = parse(per_address)

    def allowed(self, account: str, address: str) -> bool:
        return self._limiter.test(self._account, _NAMESPACE, "account", account.lower()) and self._limiter.test(
            self._address, _NAMESPACE, "address", address
        )

    def failed(self, account: str, address: str) -> None:
        self._limiter.hit(self._account, _NAMESPACE, "account", account.lower())
        self._limiter.hit(self._address, _NAMESPACE, "address", address)

    def succeeded(self, account: str) -> None:
        self._limiter.clear(self._account, _NAMESPACE, "account", account.lower())
