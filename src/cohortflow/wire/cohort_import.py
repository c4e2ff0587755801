"""Typed models and exact messages of Braze's partner cohort import API.

Source: https://www.braze.com/docs/partners/isv_partners/cohort_import (see ``shared/braze-contract.md``).

Parsing is written by hand rather than left to Pydantic's generic errors because Braze answers each
malformed field with one fixed sentence, and existing connectors match on those sentences. The parse
functions take the already-decoded JSON value and either return a typed model or raise
:class:`WireValidationError` carrying the exact message.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field

MAX_IDENTIFIERS_PER_REQUEST: Final = 1_000
# Decision (Braze documents no limit): empty change objects cost server CPU without counting against the 1,000
# identifiers, so a 4 MB body of 262,000 of them cost seconds. A sender needs at most one add and one remove object.
MAX_CHANGE_OBJECTS_PER_REQUEST: Final = 100
MAX_PAYLOAD_BYTES: Final = 4 * 1024 * 1024
DEFAULT_RATE_LIMIT_PER_HOUR: Final = 250_000
# Braze documents no length limits; these are the receiver's storage limits, shared so a sender can check first.
MAX_COHORT_ID_LENGTH: Final = 512
MAX_COHORT_NAME_LENGTH: Final = 1_024


class Messages:
    """Braze's exact response messages, in one place for both sides."""

    COHORT_ID_INVALID: Final = "cohort_id must be a valid string"
    COHORT_CHANGES_INVALID: Final = (
        "cohort_changes must be an array of objects each with key user_ids and/or device_ids mapping to an "
        "array of strings, or an aliases object"
    )
    TOO_MANY_IDENTIFIERS: Final = "Only 1,000 user_ids, device_ids, and aliases are allowed per request"
    TOO_MANY_CHANGE_OBJECTS: Final = "Only 100 objects are allowed in cohort_changes per request"
    NAME_INVALID: Final = "name must be a non-empty string"
    NAME_TOO_LONG: Final = "name must be at most 1,024 characters"
    CREATED_AT_INVALID: Final = "created_at must be a valid time as an ISO-8601 string"
    INVALID_PARTNER_API_KEY: Final = "Invalid Partner API key"
    INVALID_CLIENT_SECRET: Final = "Invalid client secret"
    PARTNER_NOT_ENABLED: Final = "Partner not enabled for client with client secret: {masked_secret}"
    UNAUTHORIZED: Final = "Unauthorized access"
    RESOURCE_LOCKED: Final = "Resource locked"
    RATE_LIMITED: Final = "API rate limit exceeded"
    PAYLOAD_TOO_LARGE: Final = "Payload too large: the request body exceeds 4 MB"
    BODY_NOT_JSON_OBJECT: Final = "Request body must be a JSON object"
    SUCCESS: Final = "success"


class WireValidationError(ValueError):
    """A request body that breaks the contract; ``message`` is Braze's exact sentence."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Alias(_Strict):
    alias_name: str
    alias_label: str


class CohortChange(_Strict):
    user_ids: list[str] = Field(default_factory=list)
    device_ids: list[str] = Field(default_factory=list)
    aliases: list[Alias] = Field(default_factory=list)
    should_remove: bool = False

    @property
    def identifier_count(self) -> int:
        return len(self.user_ids) + len(self.device_ids) + len(self.aliases)


class Credentials(_Strict):
    partner_api_key: str
    client_secret: str


class CohortNameRequest(Credentials):
    """``POST /partners/{partner}/cohorts``."""

    cohort_id: str
    name: str
    created_at: datetime


class CohortUsersRequest(Credentials):
    """``POST /partners/{partner}/cohorts/users``."""

    cohort_id: str
    cohort_changes: list[CohortChange]

    @property
    def identifier_count(self) -> int:
        return sum(change.identifier_count for change in self.cohort_changes)


class CohortListRequest(Credentials):
    """Extension (not in Braze): ``POST /partners/{partner}/cohorts/list``."""


class ImportCounts(BaseModel):
    """What one ``/cohorts/users`` request did. Braze clients ignore these extra fields."""

    received: int = 0
    matched: int = 0
    unmatched: int = 0
    added: int = 0
    removed: int = 0
    unchanged: int = 0


class ImportResponse(ImportCounts):
    message: str = Messages.SUCCESS


class CohortSummary(BaseModel):
    cohort_id: str
    name: str
    size: int
    created_at: datetime | None = None
    last_import_at: datetime | None = None


class CohortListResponse(BaseModel):
    message: str = Messages.SUCCESS
    cohorts: list[CohortSummary]


def _require_mapping(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise WireValidationError(Messages.BODY_NOT_JSON_OBJECT)
    return body


def _non_empty_string(value: Any) -> bool:
    return isinstance(value, str) and value.strip() != ""


def parse_credentials(body: Any) -> tuple[Any, Any]:
    """The two secrets, untyped: authentication decides what a missing or malformed one means."""
    body = _require_mapping(body)
    return body.get("partner_api_key"), body.get("client_secret")


def parse_cohort_id(body: dict[str, Any]) -> str:
    cohort_id: Any = body.get("cohort_id")
    # A NUL cannot be stored (PostgreSQL text refuses it), so such an id is not a valid string either.
    if not _non_empty_string(cohort_id) or len(cohort_id) > MAX_COHORT_ID_LENGTH or "\x00" in cohort_id:
        raise WireValidationError(Messages.COHORT_ID_INVALID)
    assert isinstance(cohort_id, str)
    return cohort_id


def parse_created_at(value: Any) -> datetime:
    if not isinstance(value, str) or not value.strip():
        raise WireValidationError(Messages.CREATED_AT_INVALID)
    text = value.strip()
    # Python < 3.11 lacked "Z"; 3.11's fromisoformat takes every ISO-8601 profile clients send.
    try:
        parsed = datetime.fromisoformat(text)
        # An offset that pushes the instant outside datetime's range (e.g. year 1 at +01:00) has no UTC value.
        if parsed.tzinfo is not None:
            parsed.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise WireValidationError(Messages.CREATED_AT_INVALID) from exc
    return parsed


def _parse_string_list(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(_non_empty_string(item) for item in value):
        raise WireValidationError(Messages.COHORT_CHANGES_INVALID)
    return list(value)


def _parse_aliases(value: Any) -> list[Alias]:
    if not isinstance(value, list):
        raise WireValidationError(Messages.COHORT_CHANGES_INVALID)
    aliases = []
    for item in value:
        if (
            not isinstance(item, dict)
            or set(item) != {"alias_name", "alias_label"}
            or not _non_empty_string(item["alias_name"])
            or not _non_empty_string(item["alias_label"])
        ):
            raise WireValidationError(Messages.COHORT_CHANGES_INVALID)
        aliases.append(Alias(alias_name=item["alias_name"], alias_label=item["alias_label"]))
    return aliases


_CHANGE_KEYS: Final = frozenset({"user_ids", "device_ids", "aliases", "should_remove"})


def parse_cohort_changes(value: Any) -> list[CohortChange]:
    """Validate ``cohort_changes``; unknown keys are rejected so a typo never silently does nothing."""
    if not isinstance(value, list):
        raise WireValidationError(Messages.COHORT_CHANGES_INVALID)
    # Counted before any object is looked at, so an oversized list costs nothing but its JSON decoding.
    if len(value) > MAX_CHANGE_OBJECTS_PER_REQUEST:
        raise WireValidationError(Messages.TOO_MANY_CHANGE_OBJECTS)
    changes: list[CohortChange] = []
    total = 0
    for item in value:
        if not isinstance(item, dict) or not item or not set(item) <= _CHANGE_KEYS:
            raise WireValidationError(Messages.COHORT_CHANGES_INVALID)
        if not {"user_ids", "device_ids", "aliases"} & set(item):
            raise WireValidationError(Messages.COHORT_CHANGES_INVALID)
        should_remove = item.get("should_remove", False)
        if not isinstance(should_remove, bool):
            raise WireValidationError(Messages.COHORT_CHANGES_INVALID)
        change = CohortChange(
            user_ids=_parse_string_list(item.get("user_ids", [])),
            device_ids=_parse_string_list(item.get("device_ids", [])),
            aliases=_parse_aliases(item.get("aliases", [])),
            should_remove=should_remove,
        )
        total += change.identifier_count
        if total > MAX_IDENTIFIERS_PER_REQUEST:
            raise WireValidationError(Messages.TOO_MANY_IDENTIFIERS)
        changes.append(change)
    return changes


def parse_cohort_name_request(body: Any) -> CohortNameRequest:
    """Validate a ``/cohorts`` body after authentication succeeded."""
    body = _require_mapping(body)
    cohort_id = parse_cohort_id(body)
    name: Any = body.get("name")
    if not _non_empty_string(name) or "\x00" in name:
        raise WireValidationError(Messages.NAME_INVALID)
    if len(name) > MAX_COHORT_NAME_LENGTH:
        raise WireValidationError(Messages.NAME_TOO_LONG)
    created_at = parse_created_at(body.get("created_at"))
    return CohortNameRequest(
        partner_api_key=str(body["partner_api_key"]),
        client_secret=str(body["client_secret"]),
        cohort_id=cohort_id,
        name=name,
        created_at=created_at,
    )


def parse_cohort_users_request(body: Any) -> CohortUsersRequest:
    """Validate a ``/cohorts/users`` body after authentication succeeded."""
    body = _require_mapping(body)
    cohort_id = parse_cohort_id(body)
    changes = parse_cohort_changes(body.get("cohort_changes"))
    return CohortUsersRequest(
        partner_api_key=str(body["partner_api_key"]),
        client_secret=str(body["client_secret"]),
        cohort_id=cohort_id,
        cohort_changes=changes,
    )


def mask_secret(secret: str) -> str:
    """Show a short prefix only: error messages must never echo a whole key."""
    prefix = secret[:4] if len(secret) >= 12 else ""
    return f"{prefix}…" if prefix else "…"
