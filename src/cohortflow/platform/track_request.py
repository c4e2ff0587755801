"""The typed edge of ``/users/track``: the request, its attributes, event and purchase objects, and the response.

Validation is Braze's: every object is checked before anything is written, and a request with one invalid object
is answered 400 as a whole. :mod:`cohortflow.platform.tracking` applies a validated request.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Annotated, Any, Literal, NamedTuple, Self, cast

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    StrictBool,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from cohortflow.clock import to_utc
from cohortflow.platform import identity
from cohortflow.platform.bounds import MAX_AMOUNT
from cohortflow.platform.profile_attributes import ProfileAttributes, ProfileChanges, lean_profile_changes
from cohortflow.platform.user_requests import (
    MAX_PROPERTY_NAME,
    MAX_STRING_VALUE,
    MAX_TRACK_OBJECTS,
    TOO_MANY_TRACK_OBJECTS,
    BrazeId,
    ExternalId,
    RequestBody,
    UserAlias,
    check_array_sizes,
    check_storable,
    validation_error,
)

# Braze's second accepted time format: yyyy-MM-dd'T'HH:mm:ss:SSSZ (milliseconds after a colon).
_BRAZE_TIME = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}):(\d{3})(Z|[+-]\d{2}:?\d{2})?$")

_CURRENCY = re.compile(r"^[A-Za-z]{3}$")


class Identified(BaseModel):
    """The user an object of ``/users/track`` names: exactly one of external_id, user_alias, braze_id."""

    external_id: ExternalId | None = None
    user_alias: UserAlias | None = None
    braze_id: BrazeId | None = None
    update_existing_only: StrictBool | None = Field(
        default=None,
        alias="_update_existing_only",
        description="Only update existing users. Defaults to false, except with user_alias where it defaults to true.",
    )
    app_id: str | None = Field(default=None, description="Accepted for Braze compatibility; not used.")

    @model_validator(mode="after")
    def _one_identifier(self) -> Self:
        given = [n for n in ("external_id", "user_alias", "braze_id") if getattr(self, n) is not None]
        if len(given) != 1:
            raise validation_error(
                "identifier",
                "each object must name its user with exactly one of external_id, user_alias or braze_id"
                + (f" (got {', '.join(given)})" if given else ""),
            )
        return self

    @property
    def updates_existing_only(self) -> bool:
        if self.update_existing_only is not None:
            return self.update_existing_only
        return self.external_id is None  # user_alias defaults to true (Braze); braze_id cannot create anyway


class AttributesObject(ProfileAttributes, Identified):
    """One object of ``attributes``: a user identifier plus attributes to set."""


class LeanAttributes(NamedTuple):
    """An ``attributes`` object in the common shape (a user named by external id, plain attributes), validated
    without a model: what the domain reads of an :class:`AttributesObject`, nothing more (a tuple: 75 of them
    a request, built faster than any class instance)."""

    external_id: str
    changes: ProfileChanges
    update_existing_only: bool | None = None
    user_alias: None = None
    braze_id: None = None

    @property
    def updates_existing_only(self) -> bool:
        return bool(self.update_existing_only)


_LEAN_IDENTIFIERS = frozenset(("external_id", "_update_existing_only", "app_id"))


def lean_attributes(data: Any) -> list[LeanAttributes] | None:
    """A ``/users/track`` body holding only ``attributes``, every object naming its user by external id with
    plainly valid attributes (the bulk of real traffic), validated without a model per object; None for any
    other body, which the model then validates with its exact errors."""
    if type(data) is not dict or data.keys() != {"attributes"}:
        return None
    objects = data["attributes"]
    if type(objects) is not list or len(objects) > MAX_TRACK_OBJECTS:
        return None
    try:
        check_storable(objects)
    except PydanticCustomError:
        return None
    lean = []
    for obj in objects:
        if type(obj) is not dict or "user_alias" in obj or "braze_id" in obj:
            return None
        external_id = obj.get("external_id")
        if type(external_id) is not str or not 1 <= len(external_id) <= identity.MAX_EXTERNAL_ID_LENGTH:
            return None
        only = obj.get("_update_existing_only")
        app_id = obj.get("app_id")
        if (only is not None and type(only) is not bool) or (app_id is not None and type(app_id) is not str):
            return None
        changes = lean_profile_changes(obj, _LEAN_IDENTIFIERS)
        if changes is None:
            return None
        lean.append(LeanAttributes(external_id, changes, only))
    return lean


def parse_time(value: str) -> datetime:
    """An ISO-8601 time or Braze's ``yyyy-MM-dd'T'HH:mm:ss:SSSZ``; no zone means UTC."""
    text = value.strip()
    match = _BRAZE_TIME.match(text)
    if match:
        zone = match.group(3) or ""
        if zone and zone != "Z" and ":" not in zone:
            zone = f"{zone[:3]}:{zone[3:]}"
        text = f"{match.group(1)}.{match.group(2)}{zone}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise validation_error(
            "time", f"time {value!r} must be an ISO-8601 string, e.g. 2013-07-16T19:20:30+01:00"
        ) from None
    try:
        return to_utc(parsed)
    except ValueError as exc:
        raise validation_error("time", f"time {value!r}: {exc}") from None


def _validate_properties(value: dict[str, Any] | None) -> dict[str, Any]:
    if value is None:
        return {}
    for key, item in value.items():
        if not key or len(key) > MAX_PROPERTY_NAME or key.startswith("$"):
            raise validation_error(
                "property", f"property name {key!r} is invalid: names are 1-255 characters and may not start with '$'"
            )
        if isinstance(item, str) and len(item) > MAX_STRING_VALUE:
            raise validation_error("property", f"property {key!r}: strings are limited to 255 characters")
        if isinstance(item, float) and not math.isfinite(item):
            raise validation_error("property", f"property {key!r}: numbers must be finite")
    return value


EventName = Annotated[str, StringConstraints(min_length=1, max_length=255)]


def _checked_time(value: str) -> str:
    parse_time(value)
    return value


#: A time in one of Braze's formats: checked here, kept as given (it is parsed again when applied).
BrazeTime = Annotated[str, AfterValidator(_checked_time)]
#: Event and purchase properties, checked; null becomes no properties.
Properties = Annotated[dict[str, Any] | None, AfterValidator(_validate_properties)]


class EventFields(BaseModel):
    """A custom event without its user (the SDK endpoint's event; ``time`` defaults to now)."""

    model_config = ConfigDict(extra="forbid")

    name: EventName
    time: BrazeTime | None = Field(default=None, description="ISO-8601; defaults to the time of the request.")
    properties: Properties = None
    app_id: str | None = None

    def at(self, now: datetime) -> datetime:
        # Braze: events with a time in the future are recorded at the current time.
        return min(parse_time(self.time), now) if self.time is not None else now


class EventObject(Identified):
    """One object of ``events``."""

    model_config = ConfigDict(extra="forbid")

    name: EventName
    time: BrazeTime = Field(description="ISO-8601 time of the event (a future time is recorded as now).")
    properties: Properties = None


class PurchaseObject(Identified):
    """One object of ``purchases``."""

    model_config = ConfigDict(extra="forbid")

    product_id: EventName
    currency: str = Field(description="ISO-4217 alphabetic currency code, e.g. USD.")
    price: Annotated[float, Field(strict=True, allow_inf_nan=False, ge=-MAX_AMOUNT, le=MAX_AMOUNT)]
    quantity: Annotated[int, Field(strict=True, ge=1, le=100)] = 1
    time: BrazeTime = Field(description="ISO-8601 time of the purchase.")
    properties: Properties = None

    @field_validator("currency")
    @classmethod
    def _currency(cls, value: str) -> str:
        if not _CURRENCY.match(value):
            raise validation_error("currency", f"currency {value!r} must be a 3-letter ISO-4217 code, e.g. USD")
        return value.upper()


class TrackRequest(RequestBody):
    """``POST /users/track``: at most 75 objects in each array."""

    model_config = ConfigDict(extra="forbid")

    attributes: list[AttributesObject] | None = None
    events: list[EventObject] | None = None
    purchases: list[PurchaseObject] | None = None

    @model_validator(mode="before")
    @classmethod
    def _limits(cls, data: Any) -> Any:
        # Checked before the objects so an oversized request is refused without validating its contents.
        check_array_sizes(data, ("attributes", "events", "purchases"), MAX_TRACK_OBJECTS, TOO_MANY_TRACK_OBJECTS)
        return data

    @model_validator(mode="wrap")
    @classmethod
    def _lean(cls, data: Any, handler: ModelWrapValidatorHandler[TrackRequest]) -> TrackRequest:
        # The common body skips the per-object models; its objects are then LeanAttributes, which carry what
        # the domain reads of an AttributesObject (the field keeps the model's type for the API's schema). Any
        # other body goes through the model and its errors.
        lean = lean_attributes(data)
        if lean is None:
            return handler(data)
        return cls.model_construct(attributes=cast(Any, lean))

    @model_validator(mode="after")
    def _not_empty(self) -> Self:
        if self.attributes is None and self.events is None and self.purchases is None:
            raise validation_error("empty", "the request must contain at least one of attributes, events or purchases")
        return self


class TrackError(BaseModel):
    """A non-fatal error: the object at ``index`` of ``input_array`` was skipped."""

    type: str
    input_array: Literal["attributes", "events", "purchases"]
    index: int


class TrackResponse(BaseModel):
    message: str = "success"
    attributes_processed: int | None = None
    events_processed: int | None = None
    purchases_processed: int | None = None
    errors: list[TrackError] | None = None
