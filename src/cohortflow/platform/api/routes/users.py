"""Braze's users API: ``/users/track``, ``/users/identify``, ``/users/alias/new``, ``/users/delete``,
``/users/export/ids``.

Every endpoint authenticates with ``Authorization: Bearer <REST API key>``; the key selects the workspace and
the request reads and writes that workspace only. Each request runs in one transaction: a rejected request
(400) changes nothing, and one that PostgreSQL aborts for a deadlock with a concurrent request runs again.
The rules live in :mod:`cohortflow.platform.users`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from cohortflow.platform import track_request, tracking, user_export, users
from cohortflow.platform.api.deps import RestWorkspace, Runtime
from cohortflow.platform.api.errors import MessageResponse

router = APIRouter(prefix="/users", tags=["users"])


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": MessageResponse, "description": "Invalid body: the message names the field and the rule"},
    401: {"model": MessageResponse, "description": "Missing, unknown or revoked REST API key"},
    413: {"model": MessageResponse, "description": "Body over 4 MB"},
    # Listing 4XX also keeps FastAPI from documenting a 422 this API never sends (validation errors are 400).
    "4XX": {"model": MessageResponse, "description": "Any other client error, with a message"},
}


@router.post(
    "/track",
    status_code=201,
    response_model=track_request.TrackResponse,
    response_model_exclude_none=True,
    responses=_ERRORS,
    summary="Record attributes, events and purchases",
    description=(
        "Up to 75 objects in each of `attributes`, `events` and `purchases`; each names its user by exactly one "
        "of `external_id`, `user_alias` or `braze_id`. Users named by `external_id` are created when missing; "
        "with `user_alias`, `_update_existing_only` defaults to true (set it to false to create an alias-only "
        "user). `null` removes an attribute. Standard attributes are validated; other keys are custom "
        "attributes. Any invalid object rejects the whole request (400) and nothing changes; objects naming a "
        "user that may not be created are skipped and listed in `errors`."
    ),
)
def track(
    body: track_request.TrackRequest, workspace_id: RestWorkspace, runtime: Runtime
) -> track_request.TrackResponse:
    now = runtime.clock()
    return runtime.in_transaction(lambda conn: tracking.track(conn, workspace_id, body, now=now))


@router.post(
    "/identify",
    status_code=201,
    response_model=users.IdentifyResponse,
    response_model_exclude_none=True,
    responses=_ERRORS,
    summary="Identify alias-only users with an external id",
    description=(
        "Up to 50 `aliases_to_identify`. An alias-only profile gets the external id; if a user with that "
        "external id exists, the alias-only profile is merged into it (aliases, devices, attributes it lacks, "
        "events, purchases, cohort memberships) and removed. When the existing user already has an alias "
        "with the same label, the profiles are not combined (Braze's rule) and the object is listed in `errors`."
    ),
)
def identify(body: users.IdentifyRequest, workspace_id: RestWorkspace, runtime: Runtime) -> users.IdentifyResponse:
    now = runtime.clock()
    return runtime.in_transaction(lambda conn: users.identify(conn, workspace_id, body, now=now))


@router.post(
    "/alias/new",
    status_code=201,
    response_model=users.NewAliasesResponse,
    responses=_ERRORS,
    summary="Add aliases to users, or create alias-only users",
    description=(
        "Up to 50 `user_aliases`. With `external_id`, the alias is added to that user (which must exist); "
        "without, an alias-only user is created. A label and name pair is unique in the workspace and a user "
        "holds one name per label: a conflict rejects the whole request (400)."
    ),
)
def alias_new(body: users.NewAliasesRequest, workspace_id: RestWorkspace, runtime: Runtime) -> users.NewAliasesResponse:
    now = runtime.clock()
    return runtime.in_transaction(lambda conn: users.new_aliases(conn, workspace_id, body, now=now))


@router.post(
    "/delete",
    status_code=201,
    response_model=users.DeleteResponse,
    responses=_ERRORS,
    summary="Delete users",
    description=(
        "Up to 50 identifiers in total across `external_ids`, `user_aliases` and `braze_ids`. The users, their "
        "aliases, devices, events, purchases and cohort memberships are removed. Unknown identifiers are ignored."
    ),
)
def delete(body: users.DeleteRequest, workspace_id: RestWorkspace, runtime: Runtime) -> users.DeleteResponse:
    return runtime.in_transaction(lambda conn: users.delete(conn, workspace_id, body))


@router.post(
    "/export/ids",
    status_code=201,
    response_model=user_export.ExportResponse,
    response_model_exclude_none=True,
    responses=_ERRORS,
    summary="Export user profiles by identifier",
    description=(
        "Up to 50 `external_ids` and `user_aliases` together, plus `braze_id` and at most one of `device_id`, "
        "`email_address` or `phone`. Returns each profile with its aliases, devices, custom attributes, event "
        "and purchase summaries and the partner cohorts it belongs to; `fields_to_export` narrows the fields. "
        "Identifiers naming no user are listed in `invalid_user_ids` (aliases in `invalid_user_aliases`)."
    ),
)
def export_ids(
    body: user_export.ExportRequest, workspace_id: RestWorkspace, runtime: Runtime
) -> user_export.ExportResponse:
    with runtime.read() as conn:
        return user_export.export_ids(conn, workspace_id, body)
