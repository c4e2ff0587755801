"""The exception root shared by both sides.

Following dlt's habit, whether an error is worth retrying is encoded in the type: every concrete error
also derives from :class:`TerminalError` (give up: retrying the same thing fails the same way) or
:class:`TransientError` (retry later, possibly after the delay the error carries).
"""

from __future__ import annotations


class CohortflowError(Exception):
    """Root of every error cohortflow raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class TerminalError(CohortflowError):
    """Marker: retrying the same operation cannot succeed."""


class TransientError(CohortflowError):
    """Marker: the same operation may succeed later."""

    retry_after: float | None = None
