"""Braze's partner cohort import API: ``POST /partners/{partner}/cohorts`` and ``.../cohorts/users``.

Plus two extensions not in Braze: the cohort list ``POST /partners/{partner}/cohorts/list`` and the membership
export ``POST /partners/{partner}/cohorts/members``. Credentials travel in the JSON body,
as Braze defines it. Every request goes through the same steps, in this order:

1. decode the body (400 if it is not a JSON object; 413 over 4 MB is the body-size middleware's);
2. authenticate the partner API key against the path's partner (401 ``Invalid Partner API key`` /
   ``Unauthorized access``);
3. spend one request of the partner's hourly budget (429 with ``X-RateLimit-*`` and ``Retry-After``);
4. authenticate the client secret (401 ``Invalid client secret`` / ``Partner not enabled ...``);
5. validate the fields with Braze's exact messages (400);
6. call the domain, in one transaction whose lock waits end in 423 ``Resource locked``.

Bodies are parsed by hand (see :mod:`cohortflow.wire.cohort_import`) because each malformed field has one fixed
Braze sentence; the request schemas are still published in the OpenAPI document.
"""

from __future__ import annotations

from typing import Any

import orjson
import structlog
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from cohortflow.platform import audit, cohort_export, cohorts
from cohortflow.platform.api.body import json_object
from cohortflow.platform.api.deps import Runtime
from cohortflow.platform.api.errors import MessageResponse
from cohortflow.platform.errors import RateLimited
from cohortflow.platform.import_keys import authenticate_client_secret
from cohortflow.platform.partners import Partner, authenticate_partner
from cohortflow.platform.ratelimit import RateLimitStatus
from cohortflow.platform.runtime import PlatformRuntime
from cohortflow.platform.store.locking import bounded_transaction
from cohortflow.wire.cohort_export import CohortMembersPage, CohortMembersRequest, parse_cohort_members_request
from cohortflow.wire.cohort_import import (
    CohortListRequest,
    CohortListResponse,
    CohortNameRequest,
    CohortUsersRequest,
    ImportCounts,
    ImportResponse,
    Messages,
    parse_cohort_name_request,
    parse_cohort_users_request,
)

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/partners/{partner}", tags=["partner cohort import"])


def _inline_refs(schema: Any, defs: dict[str, Any]) -> Any:
    """Replace ``$ref``s to ``$defs`` by their target: an inline request schema cannot carry its own ``$defs``."""
    if isinstance(schema, dict):
        if "$ref" in schema:
            return _inline_refs(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
        return {k: _inline_refs(v, defs) for k, v in schema.items() if k != "$defs"}
    if isinstance(schema, list):
        return [_inline_refs(item, defs) for item in schema]
    return schema


def _request_body(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    inlined = _inline_refs(schema, schema.get("$defs", {}))
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": inlined}}}}


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": MessageResponse, "description": "Malformed body or field (Braze's exact message)"},
    401: {"model": MessageResponse, "description": "Partner API key or client secret rejected"},
    413: {"model": MessageResponse, "description": "Body over 4 MB"},
    423: {"model": MessageResponse, "description": "Another import holds the cohort; retry after Retry-After"},
    429: {"model": MessageResponse, "description": "Partner over its hourly request budget"},
}


def _json(
    content: dict[str, Any], status_code: int, headers: dict[str, str], background: BackgroundTask | None = None
) -> Response:
    return Response(orjson.dumps(content), status_code, headers, "application/json", background)


def _rate_headers(status: RateLimitStatus) -> dict[str, str]:
    return {
        "X-RateLimit-Limit": str(status.limit),
        "X-RateLimit-Remaining": str(status.remaining),
        "X-RateLimit-Reset": str(status.reset_at),
    }


def _spend_budget(runtime: PlatformRuntime, path_partner: str, body: dict[str, Any]) -> tuple[Partner, RateLimitStatus]:
    """Steps 2 and 3 in one transaction of their own, committed before the request's: the hit counts even if
    the request then fails. Bounded like the request's transaction (on SQLite every transaction waits for the
    one writer lock).
    """
    with bounded_transaction(runtime.engine, runtime.settings.cohort_lock_wait_seconds) as conn:
        partner = authenticate_partner(conn, path_partner, body.get("partner_api_key"))
        try:
            return partner, runtime.rate_limiter.hit(partner.name, conn)
        except RateLimited:
            conn.commit()  # the refused request counts too, as Braze counts it
            raise


def _name_cohort(runtime: PlatformRuntime, path_partner: str, body: dict[str, Any]) -> RateLimitStatus:
    partner, budget = _spend_budget(runtime, path_partner, body)
    with bounded_transaction(runtime.engine, runtime.settings.cohort_lock_wait_seconds) as conn:
        grant = authenticate_client_secret(conn, partner, body.get("client_secret"))
        request = parse_cohort_name_request(body)
        cohorts.name_cohort(conn, grant.workspace_id, partner.id, request.cohort_id, request.name, request.created_at)
    return budget


def _import(runtime: PlatformRuntime, path_partner: str, body: dict[str, Any]) -> tuple[ImportCounts, RateLimitStatus]:
    partner, budget = _spend_budget(runtime, path_partner, body)
    with bounded_transaction(runtime.engine, runtime.settings.cohort_lock_wait_seconds) as conn:
        grant = authenticate_client_secret(conn, partner, body.get("client_secret"))
        request = parse_cohort_users_request(body)
        outcome = cohorts.import_changes(
            conn,
            grant.workspace_id,
            partner.id,
            request.cohort_id,
            request.cohort_changes,
            unmatched_sample_size=runtime.settings.audit_unmatched_sample_size,
        )
    return outcome, budget


def _list(runtime: PlatformRuntime, path_partner: str, body: dict[str, Any]) -> tuple[dict[str, Any], RateLimitStatus]:
    partner, budget = _spend_budget(runtime, path_partner, body)
    with runtime.transaction() as conn:
        grant = authenticate_client_secret(conn, partner, body.get("client_secret"))
        found = cohorts.list_cohorts(conn, grant.workspace_id, partner.name)
    listing = CohortListResponse.model_validate(
        {
            "cohorts": [
                {
                    "cohort_id": c.cohort_id,
                    "name": c.name,
                    "size": c.size,
                    "created_at": c.created_at,
                    "last_import_at": c.last_import_at,
                }
                for c in found
            ]
        }
    )
    return listing.model_dump(mode="json"), budget


def _members(runtime: PlatformRuntime, path_partner: str, body: dict[str, Any]) -> tuple[bytes, RateLimitStatus]:
    partner, budget = _spend_budget(runtime, path_partner, body)
    with runtime.transaction() as conn:
        grant = authenticate_client_secret(conn, partner, body.get("client_secret"))
        request = parse_cohort_members_request(body)
        page = cohort_export.export_members(
            conn, grant.workspace_id, partner.id, request.cohort_id, cursor=request.cursor, limit=request.limit
        )
    # Serialized here, in the worker thread: a 10,000-member page is worth keeping off the event loop.
    return orjson.dumps(page.model_dump(mode="json")), budget


def _prune_audit(runtime: PlatformRuntime) -> None:
    try:
        with runtime.transaction() as conn:
            audit.prune_expired(conn, retention_days=runtime.settings.audit_retention_days)
    except Exception as exc:  # pruning is housekeeping; the next slot retries it
        log.warning("audit pruning failed", error=type(exc).__name__)


@router.post(
    "/cohorts",
    status_code=201,
    response_model=MessageResponse,
    responses=_ERRORS,
    summary="Name (or rename) a cohort",
    description="Braze's `/partners/{partner}/cohorts`: creates the cohort `cohort_id` or renames it.",
    openapi_extra=_request_body(CohortNameRequest),
)
async def name_cohort(partner: str, request: Request, runtime: Runtime) -> Response:
    body = await json_object(request)
    budget = await run_in_threadpool(_name_cohort, runtime, partner, body)
    return _json({"message": Messages.SUCCESS}, 201, _rate_headers(budget))


@router.post(
    "/cohorts/users",
    status_code=201,
    response_model=ImportResponse,
    responses=_ERRORS,
    summary="Add users to and remove users from a cohort",
    description=(
        "Braze's `/partners/{partner}/cohorts/users`: at most 1,000 identifiers (`user_ids`, `device_ids`, "
        "`aliases`) over all `cohort_changes`, applied in order, atomically. Unknown identifiers are skipped and "
        "counted; device ids match anonymous users only. The counts are an extension Braze clients ignore."
    ),
    openapi_extra=_request_body(CohortUsersRequest),
)
async def import_cohort_users(partner: str, request: Request, runtime: Runtime) -> Response:
    body = await json_object(request)
    outcome, budget = await run_in_threadpool(_import, runtime, partner, body)
    background = BackgroundTask(_prune_audit, runtime) if audit.prune_due(str(runtime.engine.url)) else None
    return _json(
        ImportResponse(**outcome.model_dump()).model_dump(),
        201,
        _rate_headers(budget),
        background,
    )


@router.post(
    "/cohorts/list",
    response_model=CohortListResponse,
    responses={status: doc for status, doc in _ERRORS.items() if status != 423},
    summary="List the workspace's cohorts of this partner (extension, not in Braze)",
    description="The keys travel in the body, never in the URL. Sizes are current member counts.",
    openapi_extra=_request_body(CohortListRequest),
)
async def list_partner_cohorts(partner: str, request: Request, runtime: Runtime) -> Response:
    body = await json_object(request)
    listing, budget = await run_in_threadpool(_list, runtime, partner, body)
    return _json(listing, 200, _rate_headers(budget))


@router.post(
    "/cohorts/members",
    response_model=CohortMembersPage,
    responses={status: doc for status, doc in _ERRORS.items() if status != 423},
    summary="Export a cohort's members, page by page (extension, not in Braze)",
    description=(
        "The keys travel in the body, never in the URL. Members come in a stable order; pass `next_cursor` back "
        "as `cursor` for the next page (`null` on the last one). `limit` is 1-10,000 (default 5,000). "
        "`device_ids` are listed for anonymous users only, the only users a device id matches. A cohort never "
        "created answers `exists: false` with no members."
    ),
    openapi_extra=_request_body(CohortMembersRequest),
)
async def export_cohort_members(partner: str, request: Request, runtime: Runtime) -> Response:
    body = await json_object(request)
    content, budget = await run_in_threadpool(_members, runtime, partner, body)
    return Response(content, 200, _rate_headers(budget), "application/json")
