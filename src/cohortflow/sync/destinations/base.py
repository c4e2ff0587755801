"""What the delivery loop needs from a destination, whatever its wire protocol."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from cohortflow.sync.state import Identity
from cohortflow.wire.cohort_export import ExportedMember


@dataclass(frozen=True)
class BatchOutcome:
    """What the destination said about one acknowledged batch (None: it did not say)."""

    matched: int | None = None
    unmatched: int | None = None
    changed: int | None = None  # added or removed
    unchanged: int | None = None


class SyncDestination(Protocol):
    """A destination bound to one sync (its cohort or attribute)."""

    batch_size: int
    unsupported_kinds: tuple[str, ...]
    # Where membership lives; confirmed state is reset when it changes.
    target: str
    # The name to give the cohort this run, or None when the destination has no names to manage.
    cohort_name: str | None

    async def name_cohort(self) -> None: ...

    async def send(self, ids: Sequence[Identity], *, remove: bool) -> BatchOutcome: ...

    def export_members(self) -> AsyncIterator[list[ExportedMember]]:
        """The members the destination really holds (reconcile); raises ReconcileUnsupported when it can't say."""
        ...

    async def aclose(self) -> None: ...
