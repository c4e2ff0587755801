"""The frequency capping form: a rule in Braze's words ("no more than N <channel> messages per user every M
<unit>") to and from the messaging domain's :class:`FrequencyCap`.

Only translation lives here. The limits are read off ``FrequencyCap``'s own fields and checked by validating it,
so the words beside a field cannot drift from what the domain (and the API) accept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import get_args

from pydantic import ValidationError
from starlette.datastructures import FormData

from cohortflow.platform.messaging.frequency import FrequencyCap
from cohortflow.platform.messaging.messages import Channel

CHANNELS: tuple[str, ...] = get_args(Channel)
CHANNEL_LABELS = {"email": "Email", "webhook": "Webhook"}
# Largest first: a period is shown in the largest unit that divides it exactly.
UNITS = {"weeks": 604800, "days": 86400, "hours": 3600, "minutes": 60}
# Periods set through the API or the CLI need not be whole minutes; they are shown and kept in seconds.
SECONDS = "seconds"


def split_period(seconds: int) -> tuple[int, str]:
    for unit, size in UNITS.items():
        if seconds % size == 0:
            return seconds // size, unit
    return seconds, SECONDS


def period_words(seconds: int) -> str:
    """``86400`` → "1 day", ``7200`` → "2 hours"."""
    count, unit = split_period(seconds)
    return f"{count:,} {unit[:-1] if count == 1 else unit}"


def channel_label(channel: str) -> str:
    return CHANNEL_LABELS.get(channel, channel)


def rule_words(cap: FrequencyCap) -> str:
    """The rule as Braze words it: "No more than 2 email messages per user every 1 day"."""
    plural = "message" if cap.max_messages == 1 else "messages"
    return (
        f"No more than {cap.max_messages:,} {channel_label(cap.channel).lower()} {plural} per user "
        f"every {period_words(cap.period_seconds)}"
    )


def _bounds(name: str) -> tuple[int, int]:
    """A ``FrequencyCap`` field's ``ge`` and ``le``."""
    metadata = FrequencyCap.model_fields[name].metadata
    low = next(int(m.ge) for m in metadata if hasattr(m, "ge"))
    high = next(int(m.le) for m in metadata if hasattr(m, "le"))
    return low, high


def _whole(text: str) -> int | None:
    # ASCII only: str.isdigit accepts "²", which int() refuses; a number too long to convert is no number either.
    if not (text.isascii() and text.isdigit()):
        return None
    try:
        return int(text)
    except ValueError:
        return None


def messages_error() -> str:
    low, high = _bounds("max_messages")
    return f"Enter a whole number of messages from {low:,} to {high:,}."


def period_error() -> str:
    low, high = _bounds("period_seconds")
    return f"Enter a whole number of minutes, hours, days or weeks, from {period_words(low)} to {period_words(high)}."


@dataclass
class CapForm:
    """The fields as typed (kept as text, so a refused form shows what was entered)."""

    channel: str = "email"
    max_messages: str = ""
    every: str = "1"
    unit: str = "days"
    errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_form(cls, form: FormData) -> CapForm:
        def text(name: str) -> str:
            value = form.get(name)
            return value.strip() if isinstance(value, str) else ""

        return cls(channel=text("channel"), max_messages=text("max_messages"), every=text("every"), unit=text("unit"))

    @classmethod
    def from_cap(cls, cap: FrequencyCap) -> CapForm:
        every, unit = split_period(cap.period_seconds)
        return cls(channel=cap.channel, max_messages=str(cap.max_messages), every=str(every), unit=unit)

    @property
    def units(self) -> list[str]:
        """The unit choices, smallest first; seconds only for a period that needs them."""
        return [*reversed(UNITS), *([SECONDS] if self.unit == SECONDS else [])]

    def cap(self) -> FrequencyCap | None:
        """The cap, or None with each problem in ``errors`` under its field's name."""
        self.errors = {}
        if self.channel not in CHANNELS:
            self.errors["channel"] = (
                "Choose a channel: " + " or ".join(CHANNEL_LABELS[c].lower() for c in CHANNELS) + "."
            )
        count = _whole(self.max_messages)
        if count is None:
            self.errors["max_messages"] = messages_error()
        every, size = _whole(self.every), (1 if self.unit == SECONDS else UNITS.get(self.unit))
        if every is None or size is None:
            self.errors["period"] = period_error()
        if self.errors or count is None or every is None or size is None:
            return None
        try:
            return FrequencyCap.model_validate(
                {"channel": self.channel, "max_messages": count, "period_seconds": every * size}
            )
        except ValidationError as exc:
            for problem in exc.errors():
                if problem["loc"][:1] == ("max_messages",):
                    self.errors["max_messages"] = messages_error()
                else:
                    self.errors["period"] = period_error()
            return None
