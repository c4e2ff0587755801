"""The typed edge shared by the users API and the SDK endpoint: limits, Braze's messages, validation helpers,
the request base model and identifier types."""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    StringConstraints,
    model_validator,
)
from pydantic_core import PydanticCustomError

from cohortflow.platform import identity
from cohortflow.platform.bounds import INT64_MAX, INT64_MIN, check_int64
from cohortflow.platform.identity import AliasKey

MAX_TRACK_OBJECTS = 75
MAX_IDS_PER_REQUEST = 50
MAX_STRING_VALUE = 255
MAX_PROPERTY_NAME = 255

GENDERS = ("M", "F", "O", "N", "P")
# Braze attribute keys this platform does not implement; storing them as custom attributes would be wrong.
UNSUPPORTED_ATTRIBUTES = frozenset({"push_tokens", "push_token_import", "subscription_groups"})
IDENTIFIER_KEYS = frozenset({"external_id", "user_alias", "braze_id", "_update_existing_only", "device_id"})

TOO_MANY_TRACK_OBJECTS = (
    "Max Input Length Exceeded: {array} has {count} objects; at most 75 objects are allowed per array per request"
)
TOO_MANY_ALIASES = (
    "The max number of external_ids and aliases per request was exceeded ({count} given; at most 50 per request)"
)
TOO_MANY_IDS = "The max number of ids per request was exceeded ({count} given; at most 50 per request)"


def validation_error(kind: str, message: str) -> PydanticCustomError:
    """A validation error whose text is exactly ``message`` (the context keeps braces in it literal)."""
    return PydanticCustomError(kind, "{message}", {"message": message})


def check_storable(data: Any) -> None:
    """Reject what neither database can store, anywhere in a decoded JSON body: NUL characters (PostgreSQL text
    and JSONB refuse them), lone surrogates (not encodable as UTF-8), non-finite numbers (JSON has none) and
    integers past a signed 64-bit one (SQLite's JSON and the segment filters compare them as such).
    Iterative, so a deeply nested body cannot exhaust the stack."""
    stack = [data]
    pop, push, extend = stack.pop, stack.append, stack.extend
    while stack:
        item = pop()
        kind = type(item)
        # The exact types a JSON decoder produces first (this runs over every value of every request), then
        # their subclasses by the same rules.
        if kind is str:
            _check_text(item)
        elif kind is dict:
            for key, value in item.items():
                if type(key) is str:
                    _check_text(key)
                push(value)
        elif kind is list:
            extend(item)
        elif kind is int:
            if not INT64_MIN <= item <= INT64_MAX:
                _check_number(item)
        elif kind is float:
            if not math.isfinite(item):
                _check_number(item)
        elif kind is bool or item is None:
            continue
        elif isinstance(item, str):
            _check_text(item)
        elif isinstance(item, float) or (isinstance(item, int) and not isinstance(item, bool)):
            _check_number(item)
        elif isinstance(item, dict):
            for key, value in item.items():
                if isinstance(key, str):
                    _check_text(key)
                push(value)
        elif isinstance(item, list):
            extend(item)


def _check_number(number: int | float) -> None:
    if isinstance(number, float):
        if not math.isfinite(number):
            raise validation_error("number", "numbers must be finite (NaN and Infinity are not JSON)")
        return
    try:
        check_int64(number, "integers")
    except ValueError as exc:
        raise validation_error("number", str(exc)) from None


def _check_text(text: str) -> None:
    if "\x00" in text:
        raise validation_error("string", "strings may not contain the NUL character (\\u0000)")
    if text.isascii():
        return  # ASCII has no surrogates: skips encoding the common string
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise validation_error("string", "strings must be valid Unicode (no lone surrogate code points)") from None


class RequestBody(BaseModel):
    """Base of the request bodies: unknown fields rejected, and nothing the databases cannot store."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _storable(cls, data: Any) -> Any:
        check_storable(data)
        return data


# --------------------------------------------------------------------------------------------------- identifiers

NonEmpty = Annotated[str, StringConstraints(min_length=1)]
ExternalId = Annotated[str, StringConstraints(min_length=1, max_length=identity.MAX_EXTERNAL_ID_LENGTH)]
BrazeId = Annotated[str, StringConstraints(min_length=1, max_length=64)]
DeviceId = Annotated[str, StringConstraints(min_length=1, max_length=identity.MAX_DEVICE_ID_LENGTH)]


class UserAlias(BaseModel):
    """Braze's user alias object."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    alias_name: Annotated[str, StringConstraints(min_length=1, max_length=identity.MAX_ALIAS_NAME_LENGTH)]
    alias_label: Annotated[str, StringConstraints(min_length=1, max_length=identity.MAX_ALIAS_LABEL_LENGTH)]

    def key(self) -> AliasKey:
        return AliasKey(alias_label=self.alias_label, alias_name=self.alias_name)


def check_array_sizes(data: Any, names: tuple[str, ...], limit: int, message: str) -> None:
    if not isinstance(data, dict):
        return
    for name in names:
        value = data.get(name)
        if isinstance(value, list) and len(value) > limit:
            raise validation_error("too_many", message.format(array=name, count=len(value)))


def check_total_size(data: Any, names: tuple[str, ...], message: str, limit: int = MAX_IDS_PER_REQUEST) -> None:
    """Refuse a request whose arrays ``names`` hold more than ``limit`` items together, before validating them."""
    if isinstance(data, dict):
        count = sum(len(v) for name in names if isinstance(v := data.get(name), list))
        if count > limit:
            raise validation_error("too_many", message.format(count=count))
