"""Durable sync state: confirmed membership, failures, runs and locks (see :mod:`.schema`)."""

from cohortflow.sync.state.store import IDENTITY_SCHEMA, Identity, StateStore, SyncState

__all__ = ["IDENTITY_SCHEMA", "Identity", "StateStore", "SyncState"]
