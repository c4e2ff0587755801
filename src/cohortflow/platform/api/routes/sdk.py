"""SDK-style device data ingestion: ``POST /sdk/data`` (rules in :mod:`cohortflow.platform.sdk`).

Authenticated by the workspace's app key in the body as ``api_key``, the way Braze's SDKs send it.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from cohortflow.platform import sdk
from cohortflow.platform.api.deps import Runtime
from cohortflow.platform.api.errors import MessageResponse
from cohortflow.platform.api.sdk_lane import ingest_device_data

router = APIRouter(prefix="/sdk", tags=["sdk"])


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": MessageResponse, "description": "Invalid body: the message names the field and the rule"},
    401: {"model": MessageResponse, "description": "Missing, unknown or revoked app key (`api_key`)"},
    413: {"model": MessageResponse, "description": "Body over 4 MB"},
    # Listing 4XX also keeps FastAPI from documenting a 422 this API never sends (validation errors are 400).
    "4XX": {"model": MessageResponse, "description": "Any other client error, with a message"},
}


@router.post(
    "/data",
    status_code=201,
    response_model=sdk.SdkDataResponse,
    responses=_ERRORS,
    summary="Ingest one device's data (device id, changeUser, attributes, events)",
    description=(
        "Authenticate with the workspace's app key in the body as `api_key`. A new `device_id` creates an "
        "anonymous user owning it. `external_id` is the SDK's changeUser: it identifies the device's anonymous "
        "user, or merges it into the existing profile with that external id; on a device of another identified "
        "user it moves the device to the named user (created if missing). The device id stays visible on the "
        "identified profile, but cohort import no longer matches it (device ids match anonymous users only). "
        "`attributes` follow /users/track's rules; `events` without `time` are recorded now."
    ),
)
def data(body: sdk.SdkDataRequest, runtime: Runtime) -> sdk.SdkDataResponse:
    # Valid bodies are usually served by the lane in front of the app (api/sdk_lane.py), with this same call;
    # this route documents the endpoint and answers everything else.
    return ingest_device_data(runtime, body)
