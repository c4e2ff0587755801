"""Delivery channels: webhook (HTTP POST) and email (SMTP), many messages in flight (:mod:`.concurrent`)."""

from cohortflow.platform.messaging.channels.base import DeliveryError, DeliveryRejected, DeliveryUnavailable
from cohortflow.platform.messaging.channels.email import OutgoingEmail
from cohortflow.platform.messaging.channels.webhook import OutgoingWebhook

__all__ = [
    "DeliveryError",
    "DeliveryRejected",
    "DeliveryUnavailable",
    "OutgoingEmail",
    "OutgoingWebhook",
]
