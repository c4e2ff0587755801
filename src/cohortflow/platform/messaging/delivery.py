"""One message to one user: reachability, per-user rendering, and the channel call.

Campaign sends and Canvas message steps both come through here, so a user is reachable, a template
fails, or a channel refuses in exactly the same way wherever the message comes from.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from cohortflow.platform.messaging.channels import (
    DeliveryError,
    EmailChannel,
    OutgoingEmail,
    OutgoingWebhook,
    WebhookChannel,
)
from cohortflow.platform.messaging.messages import EmailMessageSpec, WebhookMessageSpec
from cohortflow.platform.messaging.templates import TemplateRenderError, render, render_json, user_context
from cohortflow.settings import MessagingSettings

# ``lost``: another process claimed the message first; nothing was sent and nothing is to be recorded.
# The same test as the segments' reachable count (SQL ``LIKE '%_@_%._%'`` and no space), so a send skips
# exactly the members the segment size calls unreachable.
_REACHABLE_EMAIL = re.compile(r"^[^ ]+@[^ ]+\.[^ ]+$", re.DOTALL)

Status = Literal["sent", "failed", "skipped", "lost"]


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


class Deliverer:
    """Holds the channel connections for one run (one SMTP session, one HTTP connection pool)."""

    def __init__(self, settings: MessagingSettings) -> None:
        self._settings = settings
        self._email: EmailChannel | None = None
        self._webhook: WebhookChannel | None = None

    def _email_channel(self) -> EmailChannel:
        if self._email is None:
            self._email = EmailChannel(self._settings)
        return self._email

    def _webhook_channel(self) -> WebhookChannel:
        if self._webhook is None:
            self._webhook = WebhookChannel(
                timeout_seconds=self._settings.webhook_timeout_seconds,
                max_attempts=self._settings.delivery_max_attempts,
                retry_initial_seconds=self._settings.delivery_retry_initial_seconds,
            )
        return self._webhook

    def deliver(
        self,
        message: EmailMessageSpec | WebhookMessageSpec,
        profile: Mapping[Any, Any],
        idempotency_key: str,
        *,
        before_send: Callable[[], bool] | None = None,
    ) -> Outcome:
        """Deliver ``message`` to ``profile``; never raises for a per-user problem.

        ``before_send`` runs after the user is known reachable and the message rendered, right before the
        channel call; it claims the message (and paces the send). When it returns False the message is not
        sent and the outcome is ``lost`` (someone else holds the claim).
        """
        reason = unreachable_reason(message.channel, profile)
        if reason is not None:
            return Outcome("skipped", reason)
        try:
            outgoing = render_message(message, profile, idempotency_key)
        except TemplateRenderError as exc:
            return Outcome("failed", exc.reason)
        if before_send is not None and not before_send():
            return Outcome("lost")
        try:
            if isinstance(outgoing, OutgoingEmail):
                self._email_channel().send(outgoing)
            else:
                self._webhook_channel().send(outgoing)
        except DeliveryError as exc:
            return Outcome("failed", exc.message)
        return Outcome("sent")

    def close(self) -> None:
        if self._email is not None:
            self._email.close()
        if self._webhook is not None:
            self._webhook.close()


class Pacer:
    """Spaces messages evenly to honour a per-minute rate limit (no bursts, so receivers see a steady rate)."""

    def __init__(
        self,
        per_minute: int | None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._interval = 60.0 / per_minute if per_minute else 0.0
        self._monotonic = monotonic
        self._next = monotonic()
        self._sleep = sleep

    def ready(self) -> bool:
        """Wait for the next slot; usable as :meth:`Deliverer.deliver`'s ``before_send``."""
        self.wait()
        return True

    def wait(self) -> None:
        if not self._interval:
            return
        now = self._monotonic()
        if self._next > now:
            self._sleep(self._next - now)
            now = self._next
        self._next = max(self._next, now) + self._interval
