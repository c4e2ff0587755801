"""Device data ingestion, as Braze's app SDKs send it: a device id, optionally ``changeUser``, attributes, events.

This is how anonymous users, and users who were anonymous and later identified, come to exist:

- A device id the workspace has never seen creates an anonymous user (no external id) owning that device.
- ``external_id`` is the SDK's ``changeUser``:

  - on an anonymous device user, when no user has that external id, the anonymous user becomes identified
    (it keeps its device, attributes and events);
  - when a user with that external id exists, the anonymous user is merged into it
    (:func:`cohortflow.platform.identity.merge_users`) and removed;
  - on a device whose user is identified with a different external id, the device moves to the user with
    the new external id (created if missing), as Braze's SDK starts a new profile for the new user.

  Either way the device id stays on the identified profile (``/users/export/ids`` shows it), but cohort
  import matches device ids only for users without an external id, so it no longer matches there.
- Attributes follow the same rules as ``/users/track`` and apply to the user the device belongs to after
  ``changeUser``; events are recorded for that user (a missing ``time`` means now).

Authentication: the workspace's app key in the body as ``api_key``, like Braze's SDK requests. App keys
identify an app and ship inside it, so they only select the workspace; they grant nothing else.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import Connection, insert

from cohortflow.clock import utcnow
from cohortflow.platform import identity
from cohortflow.platform.errors import InvalidRequest
from cohortflow.platform.profile_attributes import ProfileAttributes, ProfileChanges
from cohortflow.platform.store.schema import user_events
from cohortflow.platform.track_request import EventFields
from cohortflow.platform.tracking import apply_profile_changes, event_row, new_profile_values
from cohortflow.platform.user_requests import MAX_TRACK_OBJECTS, DeviceId, ExternalId, RequestBody, validation_error

MAX_SDK_EVENTS = MAX_TRACK_OBJECTS


class SdkDataRequest(RequestBody):
    """``POST /sdk/data``: one device's batch of data."""

    model_config = ConfigDict(extra="forbid")

    api_key: str | None = Field(default=None, description="The workspace's app key (as Braze's SDKs send it).")
    device_id: DeviceId = Field(description="The SDK's device identifier.")
    external_id: ExternalId | None = Field(default=None, description="The SDK's changeUser(external_id).")
    attributes: ProfileAttributes | None = Field(
        default=None, description="User attributes, with the same rules as /users/track (null removes)."
    )
    events: list[EventFields] | None = Field(default=None, description=f"At most {MAX_SDK_EVENTS} custom events.")

    @model_validator(mode="before")
    @classmethod
    def _limits(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("events"), list) and len(data["events"]) > MAX_SDK_EVENTS:
            raise validation_error(
                "too_many",
                f"events has {len(data['events'])} objects; at most {MAX_SDK_EVENTS} are allowed per request",
            )
        return data

    @model_validator(mode="after")
    def _no_blank_device(self) -> Self:
        if not self.device_id.strip():
            raise validation_error("device_id", "device_id must be a non-empty string")
        return self


class SdkDataResponse(BaseModel):
    message: str = "success"
    braze_id: str = Field(description="The profile the device belongs to after this request.")
    external_id: str | None = Field(description="Its external id; null while the user is anonymous.")
    device_id: str
    user_created: bool = Field(description="The device was new, so an anonymous user was created for it.")
    identified: bool = Field(description="changeUser gave the anonymous user the external id.")
    merged: bool = Field(description="changeUser merged the anonymous user into the existing profile.")
    device_moved: bool = Field(description="changeUser moved the device from another identified user.")
    attributes_processed: int
    events_processed: int


def ingest(
    conn: Connection, workspace_id: str, request: SdkDataRequest, *, now: datetime | None = None
) -> SdkDataResponse:
    now = now or utcnow()
    first = _first_request_of_device(conn, workspace_id, request, now)
    if first is not None:
        return first
    device_id = request.device_id
    user_id, created = identity.get_or_create_device_user(conn, workspace_id, device_id, now=now)
    identified = merged = moved = False

    if request.external_id is not None:
        user = identity.get_user(conn, workspace_id, user_id, lock=True)
        if user is None:
            raise InvalidRequest("the device's user was removed by a concurrent request; retry")
        current = user["external_id"]
        if current is None:
            if identity.find_by_external_id(conn, workspace_id, request.external_id) is None and (
                identity.claim_external_id(conn, workspace_id, user_id, request.external_id, now=now)
            ):
                identified = True
            else:
                target = identity.find_by_external_id(conn, workspace_id, request.external_id)
                if target is None:
                    raise InvalidRequest("external_id is being changed by a concurrent request; retry")
                identity.merge_users(conn, workspace_id, user_id, target, now=now)
                user_id, merged = target, True
        elif current != request.external_id:
            target, _ = identity.get_or_create_by_external_id(conn, workspace_id, request.external_id, now=now)
            identity.move_device(conn, workspace_id, device_id, target, now=now)
            user_id, moved = target, True

    attributes_processed = 0
    if request.attributes is not None:
        apply_profile_changes(conn, workspace_id, user_id, request.attributes.changes, now=now, where="attributes")
        attributes_processed = 1
    events = _record_events(conn, workspace_id, user_id, request, now)

    final = identity.get_user(conn, workspace_id, user_id)
    assert final is not None
    return SdkDataResponse(
        braze_id=final["braze_id"],
        external_id=final["external_id"],
        device_id=device_id,
        user_created=created,
        identified=identified,
        merged=merged,
        device_moved=moved,
        attributes_processed=attributes_processed,
        events_processed=len(events),
    )


def _first_request_of_device(
    conn: Connection, workspace_id: str, request: SdkDataRequest, now: datetime
) -> SdkDataResponse | None:
    """The first request of a device (an app install, the most common request) in a few statements: its user
    is inserted with its attributes, and with the external id of a ``changeUser`` nobody holds yet, which is
    where the general path would end. None when the device is known, when ``changeUser`` names an existing
    profile (a merge) or when a concurrent request got there first: the general path then applies."""
    if identity.find_by_device(conn, workspace_id, request.device_id) is not None:
        return None
    external_id = request.external_id
    if external_id is not None and identity.find_by_external_id(conn, workspace_id, external_id) is not None:
        return None
    changes = request.attributes.changes if request.attributes is not None else ProfileChanges()
    values = new_profile_values(workspace_id, external_id, changes, now=now, where="attributes")
    user_id = identity.create_device_user(conn, workspace_id, request.device_id, values, now=now)
    if user_id is None:
        return None
    events = _record_events(conn, workspace_id, user_id, request, now)
    return SdkDataResponse(
        braze_id=values["braze_id"],
        external_id=external_id,
        device_id=request.device_id,
        user_created=True,
        identified=external_id is not None,
        merged=False,
        device_moved=False,
        attributes_processed=int(request.attributes is not None),
        events_processed=len(events),
    )


def _record_events(
    conn: Connection, workspace_id: str, user_id: int, request: SdkDataRequest, now: datetime
) -> list[EventFields]:
    events = request.events or []
    if events:
        conn.execute(
            insert(user_events),
            [event_row(workspace_id, user_id, e.name, e.at(now), e.properties) for e in events],
        )
    return events
