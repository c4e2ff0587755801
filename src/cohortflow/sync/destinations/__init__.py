"""Destinations: the Braze Cohorts partner API and the /users/track custom-attribute mode."""

from __future__ import annotations

import httpx

from cohortflow.sync.config import BrazeCohortsDestination, DestinationConfig, SyncConfig
from cohortflow.sync.debugger import RequestRecorder
from cohortflow.sync.destinations.base import BatchOutcome, SyncDestination
from cohortflow.sync.destinations.braze_cohorts import BrazeCohortsClient, BrazeCohortsSync, derived_cohort_id
from cohortflow.sync.destinations.braze_users_track import BrazeUsersTrackClient, BrazeUsersTrackSync


def open_client(
    config: DestinationConfig,
    transport: httpx.AsyncBaseTransport | None = None,
    recorder: RequestRecorder | None = None,
) -> BrazeCohortsClient | BrazeUsersTrackClient:
    if isinstance(config, BrazeCohortsDestination):
        return BrazeCohortsClient(config, transport, recorder)
    return BrazeUsersTrackClient(config, transport, recorder)


def bind_sync(
    config: DestinationConfig,
    sync_name: str,
    sync: SyncConfig,
    transport: httpx.AsyncBaseTransport | None = None,
    recorder: RequestRecorder | None = None,
) -> SyncDestination:
    client = open_client(config, transport, recorder)
    if isinstance(client, BrazeCohortsClient):
        return BrazeCohortsSync(client, sync_name, sync)
    return BrazeUsersTrackSync(client, sync_name, sync)


__all__ = [
    "BatchOutcome",
    "BrazeCohortsClient",
    "BrazeCohortsSync",
    "BrazeUsersTrackClient",
    "BrazeUsersTrackSync",
    "SyncDestination",
    "bind_sync",
    "derived_cohort_id",
    "open_client",
]
