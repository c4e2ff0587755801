"""Delivery failures, split by whether trying the same message again can help."""

from __future__ import annotations

from cohortflow.errors import TerminalError, TransientError
from cohortflow.platform.errors import PlatformError


class DeliveryError(PlatformError):
    """A message could not be delivered; ``message`` is the reason written to the send log."""


class DeliveryRejected(DeliveryError, TerminalError):
    """The receiver refused this message (HTTP 4xx, SMTP 5xx): sending it again fails the same way."""


class DeliveryUnavailable(DeliveryError, TransientError):
    """The receiver could not be reached or asked us to come back later (timeouts, HTTP 5xx/429, SMTP 4xx)."""
