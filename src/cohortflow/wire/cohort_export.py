"""Cohort membership export: ``POST /partners/{partner}/cohorts/members``, an extension not in Braze.

A sync tool reads a cohort's real membership page by page to repair drift (members it believes it sent but the
platform lacks, or the reverse). Shared by the platform (receiver) and the sync tool (sender) like
:mod:`cohortflow.wire.cohort_import`, whose credentials, alias model and messages it reuses.

Request: both keys in the body (never in a URL), the ``cohort_id``, an optional ``cursor`` (``null`` or the
``next_cursor`` of the previous page) and an optional ``limit`` (1..10,000, default 5,000). The response lists
members in a stable order (the platform's internal user id); ``next_cursor`` is ``null`` on the last page. The
cursor is opaque: a client passes it back unchanged. A cohort that was never created is not an error:
``exists: false`` and no members.
"""

from __future__ import annotations

from typing import Any, Final

from pydantic import BaseModel, Field

from cohortflow.wire.cohort_import import (
    Alias,
    Credentials,
    Messages,
    WireValidationError,
    parse_cohort_id,
)

DEFAULT_EXPORT_LIMIT: Final = 5_000
MAX_EXPORT_LIMIT: Final = 10_000
MAX_CURSOR_LENGTH: Final = 200


class ExportMessages:
    """The export's own 400 messages (``cohort_id`` keeps Braze's sentence, :attr:`Messages.COHORT_ID_INVALID`)."""

    LIMIT_INVALID: Final = f"limit must be an integer from 1 to {MAX_EXPORT_LIMIT:,}"
    CURSOR_INVALID: Final = "cursor must be null or the next_cursor of a previous page"
    UNKNOWN_FIELDS: Final = "Unknown field(s) in request body: {fields}"


class CohortMembersRequest(Credentials):
    """``POST /partners/{partner}/cohorts/members`` (unknown fields are rejected, as in every request model)."""

    cohort_id: str
    cursor: str | None = None
    limit: int = Field(default=DEFAULT_EXPORT_LIMIT, ge=1, le=MAX_EXPORT_LIMIT)


class ExportedMember(BaseModel):
    """One member. ``device_ids`` are listed only for anonymous users (no ``external_id``): only those match by
    device id, so an identified user's devices would let a client send identifiers that match nothing."""

    external_id: str | None
    aliases: list[Alias]
    device_ids: list[str]


class CohortMembersPage(BaseModel):
    message: str = Messages.SUCCESS
    cohort_id: str
    exists: bool
    members: list[ExportedMember]
    next_cursor: str | None


_FIELDS: Final = frozenset(CohortMembersRequest.model_fields)


def parse_cohort_members_request(body: Any) -> CohortMembersRequest:
    """Validate a ``/cohorts/members`` body after authentication succeeded; each bad field has one message."""
    if not isinstance(body, dict):
        raise WireValidationError(Messages.BODY_NOT_JSON_OBJECT)
    unknown = sorted(str(key) for key in set(body) - _FIELDS)
    if unknown:
        raise WireValidationError(ExportMessages.UNKNOWN_FIELDS.format(fields=", ".join(unknown)))
    cohort_id = parse_cohort_id(body)
    cursor = body.get("cursor")
    if cursor is not None and (
        not isinstance(cursor, str) or not cursor or len(cursor) > MAX_CURSOR_LENGTH or not cursor.isascii()
    ):
        raise WireValidationError(ExportMessages.CURSOR_INVALID)
    limit = body.get("limit", DEFAULT_EXPORT_LIMIT)
    # bool is an int in Python; ``true`` is not a page size.
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_EXPORT_LIMIT:
        raise WireValidationError(ExportMessages.LIMIT_INVALID)
    return CohortMembersRequest(
        partner_api_key=str(body["partner_api_key"]),
        client_secret=str(body["client_secret"]),
        cohort_id=cohort_id,
        cursor=cursor,
        limit=limit,
    )
