"""The users API's identity endpoints: ``/users/identify``, ``/users/alias/new`` and ``/users/delete``, as Braze
documents them (https://www.braze.com/docs/api/endpoints/user_data/). ``/users/track`` is
:mod:`cohortflow.platform.tracking` and ``/users/export/ids`` :mod:`cohortflow.platform.user_export`; the typed
edge they share is :mod:`cohortflow.platform.user_requests`.

Decisions where Braze is silent or where we differ, all compatible with its documented behaviour:

- ``/users/identify``: an alias that is unknown, already identified with another external id, or whose
  label the target profile already uses (Braze: "the user profiles are not combined") is skipped and
  reported in ``errors``; the others are applied.
- ``/users/delete`` accepts ``external_ids``, ``user_aliases`` and ``braze_ids`` together (at most 50 in
  total); Braze asks for one kind per request, which remains valid here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)
from sqlalchemy import Connection

from cohortflow.clock import utcnow
from cohortflow.platform import identity
from cohortflow.platform.errors import InvalidRequest
from cohortflow.platform.identity import AliasKey
from cohortflow.platform.user_requests import (
    TOO_MANY_ALIASES,
    TOO_MANY_IDS,
    BrazeId,
    ExternalId,
    RequestBody,
    UserAlias,
    check_total_size,
    validation_error,
)

# ------------------------------------------------------------------------------------------------------ identify


class AliasToIdentify(BaseModel):
    model_config = ConfigDict(extra="forbid")

    external_id: ExternalId
    user_alias: UserAlias


class IdentifyRequest(RequestBody):
    """``POST /users/identify``: at most 50 aliases to identify."""

    model_config = ConfigDict(extra="forbid")

    aliases_to_identify: list[AliasToIdentify]

    @model_validator(mode="before")
    @classmethod
    def _limits(cls, data: Any) -> Any:
        check_total_size(data, ("aliases_to_identify",), TOO_MANY_ALIASES)
        return data


class IdentifyError(BaseModel):
    type: str
    input_array: Literal["aliases_to_identify"] = "aliases_to_identify"
    index: int


class IdentifyResponse(BaseModel):
    message: str = "success"
    aliases_processed: int
    identified: int = Field(description="Alias-only profiles that received the external id.")
    merged: int = Field(description="Alias-only profiles merged into an existing profile with that external id.")
    errors: list[IdentifyError] | None = None


def identify(
    conn: Connection, workspace_id: str, request: IdentifyRequest, *, now: datetime | None = None
) -> IdentifyResponse:
    now = now or utcnow()
    identified = merged = 0
    errors: list[IdentifyError] = []
    for index, item in enumerate(request.aliases_to_identify):
        alias = item.user_alias.key()
        source_id = identity.find_by_alias(conn, workspace_id, alias)
        if source_id is None:
            errors.append(IdentifyError(type="user_alias does not exist", index=index))
            continue
        source = identity.get_user(conn, workspace_id, source_id, lock=True)
        assert source is not None
        if source["external_id"] == item.external_id:
            continue  # already identified with this id: a retried request changes nothing
        if source["external_id"] is not None:
            errors.append(IdentifyError(type="user_alias is already identified with another external_id", index=index))
            continue
        target_id = identity.find_by_external_id(conn, workspace_id, item.external_id)
        if target_id is None:
            if identity.claim_external_id(conn, workspace_id, source_id, item.external_id, now=now):
                identified += 1
                continue
            # Another request created the external id meanwhile: merge into it instead.
            target_id = identity.find_by_external_id(conn, workspace_id, item.external_id)
            if target_id is None:
                errors.append(IdentifyError(type="external_id is being changed concurrently; retry", index=index))
                continue
        target_labels = {a.alias_label for a in identity.aliases_of(conn, target_id)}
        if alias.alias_label in target_labels:
            errors.append(
                IdentifyError(
                    type="the user with this external_id already has an alias with this alias_label; "
                    "profiles not combined",
                    index=index,
                )
            )
            continue
        identity.merge_users(conn, workspace_id, source_id, target_id, now=now)
        merged += 1
    return IdentifyResponse(
        aliases_processed=len(request.aliases_to_identify) - len(errors),
        identified=identified,
        merged=merged,
        errors=errors or None,
    )


# ----------------------------------------------------------------------------------------------------- alias/new


class NewUserAlias(BaseModel):
    model_config = ConfigDict(extra="forbid")

    external_id: ExternalId | None = None
    alias_name: Annotated[str, StringConstraints(min_length=1, max_length=identity.MAX_ALIAS_NAME_LENGTH)]
    alias_label: Annotated[str, StringConstraints(min_length=1, max_length=identity.MAX_ALIAS_LABEL_LENGTH)]


class NewAliasesRequest(RequestBody):
    """``POST /users/alias/new``: at most 50 aliases."""

    model_config = ConfigDict(extra="forbid")

    user_aliases: list[NewUserAlias]

    @model_validator(mode="before")
    @classmethod
    def _limits(cls, data: Any) -> Any:
        check_total_size(data, ("user_aliases",), TOO_MANY_ALIASES)
        return data


class NewAliasesResponse(BaseModel):
    message: str = "success"
    aliases_processed: int
    users_created: int = Field(description="Alias-only users created (objects without external_id).")


def new_aliases(
    conn: Connection, workspace_id: str, request: NewAliasesRequest, *, now: datetime | None = None
) -> NewAliasesResponse:
    """Add aliases to identified users or create alias-only users; any conflict rejects the whole request."""
    now = now or utcnow()
    created = 0
    for index, item in enumerate(request.user_aliases):
        alias = AliasKey(alias_label=item.alias_label, alias_name=item.alias_name)
        where = f"user_aliases[{index}]"
        if item.external_id is None:
            if identity.find_by_alias(conn, workspace_id, alias) is not None:
                raise InvalidRequest(
                    f"{where}: alias {alias.alias_name!r} with label {alias.alias_label!r} already exists "
                    "(a label and name pair is unique in the workspace)"
                )
            identity.create_alias_only_user(conn, workspace_id, alias, now=now)
            created += 1
            continue
        user_id = identity.find_by_external_id(conn, workspace_id, item.external_id)
        if user_id is None:
            raise InvalidRequest(f"{where}: no user has external_id {item.external_id!r}")
        try:
            identity.add_alias(conn, workspace_id, user_id, alias, now=now)
        except InvalidRequest as exc:
            raise InvalidRequest(f"{where}: {exc.message}") from exc
    return NewAliasesResponse(aliases_processed=len(request.user_aliases), users_created=created)


# -------------------------------------------------------------------------------------------------------- delete


class DeleteRequest(RequestBody):
    """``POST /users/delete``: at most 50 identifiers in total."""

    model_config = ConfigDict(extra="forbid")

    external_ids: list[ExternalId] | None = None
    user_aliases: list[UserAlias] | None = None
    braze_ids: list[BrazeId] | None = None

    @model_validator(mode="before")
    @classmethod
    def _limits(cls, data: Any) -> Any:
        check_total_size(data, ("external_ids", "user_aliases", "braze_ids"), TOO_MANY_IDS)
        return data

    @model_validator(mode="after")
    def _something(self) -> Self:
        if not (self.external_ids or self.user_aliases or self.braze_ids):
            raise validation_error(
                "empty", "the request must contain at least one of external_ids, user_aliases or braze_ids"
            )
        return self


class DeleteResponse(BaseModel):
    message: str = "success"
    deleted: int = Field(description="Users deleted (identifiers naming no user are ignored).")


def delete(conn: Connection, workspace_id: str, request: DeleteRequest) -> DeleteResponse:
    ids: set[int] = set()
    for ext in request.external_ids or []:
        if (uid := identity.find_by_external_id(conn, workspace_id, ext)) is not None:
            ids.add(uid)
    for alias in request.user_aliases or []:
        if (uid := identity.find_by_alias(conn, workspace_id, alias.key())) is not None:
            ids.add(uid)
    for bid in request.braze_ids or []:
        if (uid := identity.find_by_braze_id(conn, workspace_id, bid)) is not None:
            ids.add(uid)
    return DeleteResponse(deleted=identity.delete_users(conn, workspace_id, sorted(ids)))
