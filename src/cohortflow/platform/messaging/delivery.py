"""One message to one user: reachability, per-user rendering, and the channel call.

Campaign sends and Canvas message steps both come through here, so a user is reachable, a template
fails, or a channel refuses in exactly the same way wherever the message comes from.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from cohortflow.aio import run_blocking
from cohortflow.platform.messaging.channels import DeliveryError, OutgoingEmail, OutgoingWebhook
from cohortflow.platform.messaging.channels.concurrent import ConcurrentChannels
from cohortflow.platform.messaging.messages import EmailMessageSpec, WebhookMessageSpec
from cohortflow.platform.messaging.templates import TemplateRenderError, render, render_json, user_context
from cohortflow.settings import MessagingSettings

# The same test as the segments' reachable count (SQL ``LIKE '%_@_%._%'`` and no space), so a send skips
# exactly the members the segment size calls unreachable.
_REACHABLE_EMAIL = re.compile(r"^[^ ]+@[^ ]+\.[^ ]+$", re.DOTALL)

Status = Literal["sent", "failed", "skipped"]


@dataclass(frozen=True)
class Outcome:
    status: Status
    reason: str | None = None


def unreachable_reason(channel: str, profile: Mapping[Any, Any]) -> str | None:
    """Why ``profile`` cannot get a message on ``channel``, or ``None`` when it can.

    Email needs a valid address and no unsubscribe; a webhook needs an identified user (an external id)
    because the receiver has nothing else to key the message on.
    """
    if channel == "email":
        email = profile.get("email")
        if not email:
            return "unreachable: no email address"
        if not _REACHABLE_EMAIL.match(str(email)):
            return "unreachable: invalid email address"
        if profile.get("email_subscribe") == "unsubscribed":
            return "unreachable: unsubscribed from email"
        return None
    if not profile.get("external_id"):
        return "unreachable: anonymous user (webhooks need an external_id)"
    return None


def render_message(
    message: EmailMessageSpec | WebhookMessageSpec, profile: Mapping[Any, Any], idempotency_key: str
) -> OutgoingEmail | OutgoingWebhook:
    """``message`` for one user, rendered as a send renders it; :class:`TemplateRenderError` says what failed."""
    context = user_context(profile)
    if isinstance(message, EmailMessageSpec):
        return OutgoingEmail(
            from_address=message.from_address,
            to_address=str(profile.get("email") or ""),
            subject=render(message.subject, context),
            text=render(message.text, context),
            html=render(message.html, context) if message.html is not None else None,
            idempotency_key=idempotency_key,
            reply_to=message.reply_to,
        )
    return OutgoingWebhook(
        url=message.url,
        body=render_json(message.body, context),
        idempotency_key=idempotency_key,
        headers=dict(message.headers),
        timeout_seconds=message.timeout_seconds,
    )


def prepare(
    message: EmailMessageSpec | WebhookMessageSpec, profile: Mapping[Any, Any], idempotency_key: str
) -> OutgoingEmail | OutgoingWebhook | Outcome:
    """The message ready for its channel, or the outcome without a channel call (unreachable, template error)."""
    reason = unreachable_reason(message.channel, profile)
    if reason is not None:
        return Outcome("skipped", reason)
    try:
        return render_message(message, profile, idempotency_key)
    except TemplateRenderError as exc:
        return Outcome("failed", exc.reason)


class Deliverer:
    """One message at a time, outside a send (a send delivers through :mod:`.engine`), on the same channels."""

    def __init__(self, settings: MessagingSettings) -> None:
        self._settings = settings

    def deliver(
        self, message: EmailMessageSpec | WebhookMessageSpec, profile: Mapping[Any, Any], idempotency_key: str
    ) -> Outcome:
        """Deliver ``message`` to ``profile``; never raises for a per-user problem."""
        prepared = prepare(message, profile, idempotency_key)
        if isinstance(prepared, Outcome):
            return prepared
        return run_blocking(self._send(prepared))

    async def _send(self, outgoing: OutgoingEmail | OutgoingWebhook) -> Outcome:
        channels = ConcurrentChannels(self._settings)
        try:
            await channels.send(outgoing)
        except DeliveryError as exc:
            return Outcome("failed", exc.message)
        finally:
            await channels.close()
        return Outcome("sent")

    def close(self) -> None:
        """Nothing is held between messages."""
