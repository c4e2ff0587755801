"""Membership as a custom attribute through ``/users/track``: real Braze without partner credentials.

What RudderStack and Grouparoo do: each member gets ``<attribute>: true``; a departed member gets
``<attribute>: null``, which removes the attribute. ``_update_existing_only`` is set for every object so a
sync never creates users, as with the cohort import API. Device ids cannot name a user here; rows that
resolve to one are rejected with ``unsupported_by_destination``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx

from cohortflow.redact import redact_url
from cohortflow.sync.config import BrazeUsersTrackDestination, SyncConfig
from cohortflow.sync.debugger import RequestRecorder
from cohortflow.sync.destinations.base import BatchOutcome
from cohortflow.sync.destinations.http import post_json, recorded
from cohortflow.sync.errors import ReconcileUnsupported
from cohortflow.sync.identifiers import ALIAS, DEVICE_ID, EXTERNAL_ID
from cohortflow.sync.state import Identity
from cohortflow.wire.cohort_export import ExportedMember

MAX_OBJECTS_PER_REQUEST = 75


class BrazeUsersTrackClient:
    def __init__(
        self,
        config: BrazeUsersTrackDestination,
        transport: httpx.AsyncBaseTransport | None = None,
        recorder: RequestRecorder | None = None,
    ) -> None:
        self.config = config
        self.base_url = config.rest_endpoint.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=config.timeout_seconds,
            transport=recorded(transport, config.concurrency + 2, recorder),
            headers={"authorization": f"Bearer {config.rest_api_key.get_secret_value()}"},
        )

    async def track(self, attribute: str, ids: Sequence[Identity], *, remove: bool) -> BatchOutcome:
        objects: list[dict[str, Any]] = []
        value = None if remove else True
        for kind, label, ident in ids:
            if kind == EXTERNAL_ID:
                objects.append({"external_id": ident, "_update_existing_only": True, attribute: value})
            elif kind == ALIAS:
                objects.append(
                    {
                        "user_alias": {"alias_name": ident, "alias_label": label},
                        "_update_existing_only": True,
                        attribute: value,
                    }
                )
        answer = await post_json(self._http, "/users/track", {"attributes": objects}, "tracking users")
        processed = answer.get("attributes_processed") if isinstance(answer, dict) else None
        return BatchOutcome(changed=processed if isinstance(processed, int) else None)

    async def test(self) -> str:
        await post_json(self._http, "/users/track", {"attributes": []}, "testing the REST API key")
        return f"{redact_url(self.base_url)}: /users/track accepted the REST API key"

    async def aclose(self) -> None:
        await self._http.aclose()


class BrazeUsersTrackSync:
    unsupported_kinds: tuple[str, ...] = (DEVICE_ID,)
    cohort_name: str | None = None

    def __init__(self, client: BrazeUsersTrackClient, sync_name: str, sync: SyncConfig) -> None:
        assert sync.attribute is not None
        self.client = client
        self.attribute = sync.attribute
        self.batch_size = min(client.config.batch_size, MAX_OBJECTS_PER_REQUEST)
        self.target = f"braze_users_track {redact_url(client.base_url)} attribute={self.attribute}"

    async def name_cohort(self) -> None:
        return None

    async def send(self, ids: Sequence[Identity], *, remove: bool) -> BatchOutcome:
        return await self.client.track(self.attribute, ids, remove=remove)

    def export_members(self) -> AsyncIterator[list[ExportedMember]]:
        raise ReconcileUnsupported(
            "reconcile needs a destination that can export a cohort's members (a cohortflow platform through "
            "braze_cohorts); Braze's /users/track cannot list who holds an attribute"
        )

    async def aclose(self) -> None:
        await self.client.aclose()
