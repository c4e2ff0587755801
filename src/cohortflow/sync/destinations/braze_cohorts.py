"""The *Braze Cohorts* destination: Braze's partner cohort import API, or our platform, which speaks it.

Request bodies are built with the shared wire models (:mod:`cohortflow.wire`), so the sender cannot drift
from what the receiver parses. Credentials travel in the body, as Braze specifies.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx

from cohortflow.clock import utcnow
from cohortflow.redact import redact_url
from cohortflow.sync.config import BrazeCohortsDestination, CreateCohort, SyncConfig
from cohortflow.sync.debugger import RequestRecorder
from cohortflow.sync.destinations.base import BatchOutcome
from cohortflow.sync.destinations.http import post_json, recorded
from cohortflow.sync.errors import DestinationBadAnswer, DestinationRejected, ReconcileUnsupported
from cohortflow.sync.identifiers import cohort_change
from cohortflow.sync.state import Identity
from cohortflow.wire import (
    CohortListRequest,
    CohortListResponse,
    CohortNameRequest,
    CohortSummary,
    CohortUsersRequest,
    ImportCounts,
)
from cohortflow.wire.cohort_export import CohortMembersPage, CohortMembersRequest, ExportedMember

TEST_COHORT_ID = "cohortflow-connection-test"


def derived_cohort_id(sync_name: str) -> str:
    """Stable across runs and machines: the same sync always updates the same cohort."""
    return f"cohortflow-{sync_name}"


class BrazeCohortsClient:
    """The partner cohort import API of one destination (endpoint, partner and keys)."""

    def __init__(
        self,
        config: BrazeCohortsDestination,
        transport: httpx.AsyncBaseTransport | None = None,
        recorder: RequestRecorder | None = None,
    ) -> None:
        self.config = config
        self.base_url = config.rest_endpoint.rstrip("/")
        self._prefix = f"/partners/{config.partner}"
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=config.timeout_seconds,
            transport=recorded(transport, config.concurrency + 2, recorder),
        )

    def _creds(self) -> dict[str, str]:
        return {
            "partner_api_key": self.config.partner_api_key.get_secret_value(),
            "client_secret": self.config.data_import_key.get_secret_value(),
        }

    async def name_cohort(self, cohort_id: str, name: str) -> None:
        body = CohortNameRequest(**self._creds(), cohort_id=cohort_id, name=name, created_at=utcnow())
        await post_json(self._http, f"{self._prefix}/cohorts", body.model_dump(mode="json"), "naming the cohort")

    async def update(self, cohort_id: str, ids: Sequence[Identity], *, remove: bool) -> BatchOutcome:
        changes = [cohort_change(ids, remove=remove)] if ids else []
        body = CohortUsersRequest(**self._creds(), cohort_id=cohort_id, cohort_changes=changes)
        payload: dict[str, Any] = body.model_dump(mode="json", exclude_defaults=True)
        payload["cohort_changes"] = [c.model_dump(mode="json", exclude_defaults=True) for c in changes]
        path = f"{self._prefix}/cohorts/users"
        answer = await post_json(self._http, path, payload, "updating the cohort")
        if "received" in answer and answer["received"] != len(ids):
            # A receiver that counts (ours does) and counted something else did not apply this request.
            raise DestinationBadAnswer(
                f"updating the cohort: POST {redact_url(self.base_url + path)} reported received="
                f"{answer['received']!r} for a request of {len(ids)} identifier(s)"
            )
        if "matched" not in answer:
            return BatchOutcome()  # real Braze documents no counts
        try:
            counts = ImportCounts.model_validate({k: answer[k] for k in ImportCounts.model_fields if k in answer})
        except ValueError as exc:
            raise DestinationBadAnswer(
                f"updating the cohort: POST {redact_url(self.base_url + path)} reported unreadable counts: {exc}"
            ) from exc
        return BatchOutcome(
            matched=counts.matched,
            unmatched=counts.unmatched,
            changed=counts.added + counts.removed,
            unchanged=counts.unchanged,
        )

    async def test(self) -> str:
        """Prove the keys with an empty change list (a 2xx changes nothing)."""
        await self.update(TEST_COHORT_ID, [], remove=False)
        return f"{redact_url(self.base_url)}: partner {self.config.partner!r} accepted the keys"

    async def list_cohorts(self) -> list[CohortSummary] | None:
        """The cohort-list extension of our platform; None when the destination does not offer it."""
        body = CohortListRequest(**self._creds()).model_dump(mode="json")
        try:
            answer = await post_json(self._http, f"{self._prefix}/cohorts/list", body, "listing cohorts")
        except DestinationRejected as exc:
            if exc.status in (404, 405):
                return None
            raise
        return CohortListResponse.model_validate(answer).cohorts

    async def export_members(self, cohort_id: str, page_size: int = 5000) -> AsyncIterator[list[ExportedMember]]:
        """The cohort's members, a page at a time, through our platform's export extension (not in Braze)."""
        path = f"{self._prefix}/cohorts/members"
        cursor: str | None = None
        while True:
            body = CohortMembersRequest(**self._creds(), cohort_id=cohort_id, cursor=cursor, limit=page_size)
            try:
                answer = await post_json(self._http, path, body.model_dump(mode="json"), "exporting the cohort")
            except DestinationRejected as exc:
                if exc.status in (404, 405):
                    raise ReconcileUnsupported(
                        f"{redact_url(self.base_url)} offers no cohort export (POST {path} answered {exc.status}); "
                        "reconcile works against a cohortflow platform, real Braze has no such API"
                    ) from exc
                raise
            try:
                page = CohortMembersPage.model_validate(answer)
            except ValueError as exc:
                raise DestinationBadAnswer(
                    f"exporting the cohort: POST {redact_url(self.base_url + path)} answered an unreadable page: {exc}"
                ) from exc
            yield page.members
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def aclose(self) -> None:
        await self._http.aclose()


class BrazeCohortsSync:
    """The client bound to one sync's cohort."""

    unsupported_kinds: tuple[str, ...] = ()

    def __init__(self, client: BrazeCohortsClient, sync_name: str, sync: SyncConfig) -> None:
        assert sync.cohort is not None
        self.client = client
        self.batch_size = client.config.batch_size
        if isinstance(sync.cohort, CreateCohort):
            self.cohort_id = sync.cohort.cohort_id or derived_cohort_id(sync_name)
            self.cohort_name: str | None = sync.cohort.name
        else:
            self.cohort_id = sync.cohort.cohort_id
            self.cohort_name = None
        self.target = (
            f"braze_cohorts {redact_url(client.base_url)} partner={client.config.partner} cohort={self.cohort_id}"
        )

    async def name_cohort(self) -> None:
        if self.cohort_name is not None:
            await self.client.name_cohort(self.cohort_id, self.cohort_name)

    async def send(self, ids: Sequence[Identity], *, remove: bool) -> BatchOutcome:
        return await self.client.update(self.cohort_id, ids, remove=remove)

    def export_members(self) -> AsyncIterator[list[ExportedMember]]:
        return self.client.export_members(self.cohort_id)

    async def aclose(self) -> None:
        await self.client.aclose()
