"""The sync side's error tree.

Whether the engine may retry is in the type (:class:`~cohortflow.errors.TerminalError` or
:class:`~cohortflow.errors.TransientError`); the CLI maps every :class:`SyncError` to a one-line message
and a non-zero exit code, and a run record keeps the message.
"""

from __future__ import annotations

from cohortflow.errors import CohortflowError, TerminalError, TransientError


class SyncError(CohortflowError):
    """Root of the sync tool's errors."""


class ConfigError(SyncError, TerminalError):
    """``cohortflow.yaml`` is unreadable or invalid; the message names the file, line and key."""


class UnknownObject(SyncError, TerminalError):
    """A sync, model, source, destination or run that the workspace does not declare."""


class SourceUnavailable(SyncError, TerminalError):
    """The warehouse cannot be reached or the query fails. Terminal for this run; the next run tries again."""


class ModelError(SyncError, TerminalError):
    """The model's rows break a rule that fails the whole run (e.g. duplicate primary keys)."""

    def __init__(self, message: str, *, count: int = 0, samples: list[str] | None = None) -> None:
        super().__init__(message)
        self.count = count
        self.samples = samples or []


class SyncLocked(SyncError, TerminalError):
    """Another run of the same sync holds the lock."""


class InvalidInput(SyncError, TerminalError):
    """A request (API body, web form, CLI option) that cannot be carried out as given; nothing was changed."""


class SyncDisabled(SyncError, TerminalError):
    """The sync is disabled (``enabled: false``): it is not scheduled and cannot be triggered."""


class Unauthenticated(SyncError, TerminalError):
    """No valid API token (or session) came with the request."""


class Forbidden(SyncError, TerminalError):
    """The caller is known but its role does not allow this."""


class RunFinished(SyncError, TerminalError):
    """The run already ended, so it cannot be cancelled."""


class RunCancelled(SyncError, TerminalError):
    """Raised inside a run that was asked to stop; the run ends ``cancelled``, keeping what was confirmed."""


class DestinationError(SyncError):
    """Root of errors talking to the destination."""


class DestinationAuthError(DestinationError, TerminalError):
    """401: a wrong or invalidated key. The run stops at once; retrying cannot help."""


class DestinationRejected(DestinationError, TerminalError):
    """400 (or another 4xx): the destination refuses this request as it is."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class DestinationBadAnswer(DestinationError, TerminalError):
    """A 2xx that is not Braze's success (``{"message": "success"}``, with ``received`` equal to what was sent
    when the receiver reports counts): something else answered, so the batch may or may not be applied."""


class ReconcileUnsupported(SyncError, TerminalError):
    """Reconcile needs a destination that can export a cohort's members (a cohortflow platform)."""


class StateUnavailable(SyncError, TransientError):
    """The sync state database cannot be reached."""


class DestinationUnavailable(DestinationError, TransientError):
    """429, 423, 5xx, a timeout or a dropped connection: worth retrying after a delay."""

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
