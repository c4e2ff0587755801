"""A message rendered for one chosen user, exactly as a send would render it: the same Liquid context, the same
reachability rule and the same per-user template errors (see :mod:`.delivery`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import Connection, select

from cohortflow.platform import identity
from cohortflow.platform.errors import InvalidRequest, NotFound
from cohortflow.platform.messaging.channels import OutgoingEmail, OutgoingWebhook
from cohortflow.platform.messaging.delivery import render_message, unreachable_reason
from cohortflow.platform.messaging.messages import (
    EmailMessageSpec,
    MessageSpec,
    WebhookMessageSpec,
    check_message_templates,
    validation_message,
)
from cohortflow.platform.messaging.templates import PROFILE_COLUMNS, TemplateRenderError
from cohortflow.platform.store.schema import users

_MESSAGE = TypeAdapter(MessageSpec)


@dataclass(frozen=True)
class MessagePreview:
    """What a send would do for this user: skip it (``skipped``), fail it (``failed``) or send ``outgoing``."""

    user_id: int
    external_id: str | None
    braze_id: str
    skipped: str | None
    failed: str | None
    outgoing: OutgoingEmail | OutgoingWebhook | None


def find_user(conn: Connection, workspace_id: str, ref: str) -> int:
    """The user named by an external ID, or else by a Braze ID, in this workspace."""
    ref = ref.strip()
    if not ref:
        raise InvalidRequest("name a user by external ID or Braze ID")
    user_id = identity.find_by_external_id(conn, workspace_id, ref) or identity.find_by_braze_id(
        conn, workspace_id, ref
    )
    if user_id is None:
        raise NotFound(f"no user with external ID or Braze ID {ref!r} in this workspace")
    return int(user_id)


def preview_message(
    conn: Connection,
    workspace_id: str,
    message: EmailMessageSpec | WebhookMessageSpec | Mapping[str, Any],
    user_ref: str,
) -> MessagePreview:
    """Render ``message`` for the user ``user_ref`` names; :class:`InvalidRequest` if the message is malformed."""
    if not isinstance(message, EmailMessageSpec | WebhookMessageSpec):
        try:
            message = _MESSAGE.validate_python(message)
        except ValidationError as exc:
            raise InvalidRequest(validation_message(exc, what="message")) from exc
    check_message_templates(message)
    user_id = find_user(conn, workspace_id, user_ref)
    profile = conn.execute(select(*PROFILE_COLUMNS).where(users.c.id == user_id)).mappings().one()
    try:
        outgoing: OutgoingEmail | OutgoingWebhook | None = render_message(message, profile, f"cf-preview-{user_id}")
        failed = None
    except TemplateRenderError as exc:
        outgoing, failed = None, exc.reason
    return MessagePreview(
        user_id=user_id,
        external_id=profile["external_id"],
        braze_id=str(profile["braze_id"]),
        skipped=unreachable_reason(message.channel, profile),
        failed=failed,
        outgoing=outgoing,
    )
