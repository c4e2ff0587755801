"""The platform's error tree. HTTP status codes are assigned in :mod:`cohortflow.platform.api.errors` only."""

from __future__ import annotations

from cohortflow.errors import CohortflowError, TerminalError, TransientError


class PlatformError(CohortflowError):
    """Root of the platform's errors."""


class InvalidRequest(PlatformError, TerminalError):
    """The request is malformed; ``message`` is Braze's sentence where Braze has one."""


class AuthenticationFailed(PlatformError, TerminalError):
    """A key is missing, unknown, invalidated or not allowed here."""


class PermissionDenied(PlatformError, TerminalError):
    """Authenticated, but not allowed to touch this resource."""


class NotFound(PlatformError, TerminalError):
    """The named object does not exist (in this workspace)."""


class AlreadyExists(PlatformError, TerminalError):
    """A unique name or identifier is taken."""


class PayloadTooLarge(PlatformError, TerminalError):
    """The body is over the size limit."""


class ResourceLocked(PlatformError, TransientError):
    """Another import holds the cohort longer than the bounded wait."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimited(PlatformError, TransientError):
    """The partner spent its hourly request budget."""

    def __init__(self, message: str, *, limit: int, remaining: int, reset_at: int, retry_after: float) -> None:
        super().__init__(message)
        self.limit = limit
        self.remaining = remaining
        self.reset_at = reset_at
        self.retry_after = retry_after


class Unavailable(PlatformError, TransientError):
    """The database or another dependency failed in a way worth retrying."""
