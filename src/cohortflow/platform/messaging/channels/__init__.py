"""Delivery channels: webhook (HTTP POST) and email (SMTP). Each delivers one rendered message."""

from cohortflow.platform.messaging.channels.base import DeliveryError, DeliveryRejected, DeliveryUnavailable
from cohortflow.platform.messaging.channels.email import EmailChannel, OutgoingEmail
from cohortflow.platform.messaging.channels.webhook import OutgoingWebhook, WebhookChannel

__all__ = [
    "DeliveryError",
    "DeliveryRejected",
    "DeliveryUnavailable",
    "EmailChannel",
    "OutgoingEmail",
    "OutgoingWebhook",
    "WebhookChannel",
]
