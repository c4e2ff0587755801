"""Profile attributes: standard attributes (columns) and custom attributes (``custom_attributes``), as
``/users/track`` and the SDK endpoint receive them; ``null`` removes an attribute."""

from __future__ import annotations

import math
import re
import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Annotated, Any, Literal, NamedTuple, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from cohortflow.platform import identity
from cohortflow.platform.user_requests import (
    GENDERS,
    IDENTIFIER_KEYS,
    MAX_PROPERTY_NAME,
    MAX_STRING_VALUE,
    UNSUPPORTED_ATTRIBUTES,
    validation_error,
)

# ---------------------------------------------------------------------------------------------- profile attributes

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

_DOB = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class CustomOp(NamedTuple):
    """One change to a custom attribute: set, unset (``null``), inc, add (to an array) or remove (from one).

    A tuple: a request makes one per attribute per object, and a tuple is built several times faster than a
    frozen dataclass."""

    key: str
    kind: Literal["set", "unset", "inc", "add", "remove"]
    value: Any = None


@dataclass(frozen=True)
class ProfileChanges:
    """Validated attribute changes for one profile: standard columns (None = remove) and custom attribute ops."""

    columns: dict[str, Any] = field(default_factory=dict)
    custom: list[CustomOp] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.columns or self.custom)


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | bool | int | float)


def _check_json_value(key: str, value: Any) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise validation_error("custom_attribute", f"custom attribute {key!r}: numbers must be finite")
    if isinstance(value, str) and len(value) > MAX_STRING_VALUE:
        raise validation_error("custom_attribute", f"custom attribute {key!r}: strings are limited to 255 characters")
    if isinstance(value, list):
        for item in value:
            _check_json_value(key, item)
    elif isinstance(value, dict):
        for item in value.values():
            _check_json_value(key, item)


def _unique(values: Iterable[Any]) -> list[Any]:
    """Braze keeps custom attribute arrays as sets: first occurrence wins, order kept."""
    out: list[Any] = []
    for value in values:
        if value not in out:
            out.append(value)
    return out


_PLAIN_SCALARS = (int, bool)


def parse_custom_attribute(key: str, value: Any) -> CustomOp:
    """Validate one custom attribute assignment as Braze's user attributes object describes it."""
    if not key or len(key) > MAX_PROPERTY_NAME or key.startswith("$"):
        raise validation_error(
            "custom_attribute",
            f"custom attribute name {key!r} is invalid: names are 1-255 characters and may not start with '$'",
        )
    if key in IDENTIFIER_KEYS:
        raise validation_error("custom_attribute", f"{key!r} identifies a user and cannot be set as an attribute here")
    if key in UNSUPPORTED_ATTRIBUTES:
        raise validation_error("unsupported_attribute", f"{key!r} is not supported by this platform")
    # The common values first, the rules below unchanged for them: an integer or a boolean is stored as given,
    # and so is a short enough string.
    kind = type(value)
    if kind in _PLAIN_SCALARS or (kind is str and len(value) <= MAX_STRING_VALUE):
        return CustomOp(key, "set", value)
    if value is None:
        return CustomOp(key, "unset")
    _check_json_value(key, value)
    if isinstance(value, list):
        return CustomOp(key, "set", _unique(value))
    if isinstance(value, dict) and value and set(value) == {"inc"}:
        amount = value["inc"]
        if not isinstance(amount, int) or isinstance(amount, bool):
            raise validation_error("custom_attribute", f"custom attribute {key!r}: 'inc' takes an integer")
        return CustomOp(key, "inc", amount)
    if isinstance(value, dict) and value and set(value) <= {"add", "remove"}:
        if len(value) == 2:
            raise validation_error(
                "custom_attribute", f"custom attribute {key!r}: use either 'add' or 'remove', not both"
            )
        ((kind, items),) = value.items()
        if not isinstance(items, list) or not all(_is_scalar(i) and i is not None for i in items):
            raise validation_error("custom_attribute", f"custom attribute {key!r}: {kind!r} takes an array of values")
        return CustomOp(key, kind, _unique(items))
    # Strings, numbers, booleans, and objects (Braze's nested custom attributes) are stored as given.
    return CustomOp(key, "set", value)


def _validate_email(value: str | None) -> str | None:
    if value is not None and (len(value) > 320 or not _EMAIL.match(value)):
        raise validation_error("email", f"email {value!r} is not a valid email address")
    return value


def _validate_dob(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        if not _DOB.match(value):
            raise ValueError
        date.fromisoformat(value)
    except ValueError:
        raise validation_error(
            "dob", f"dob {value!r} must be a date in the format YYYY-MM-DD, e.g. 1980-12-21"
        ) from None
    return value


def _validate_gender(value: str | None) -> str | None:
    if value is None:
        return None
    if value.upper() not in GENDERS:
        raise validation_error(
            "gender", f"gender {value!r} must be one of M, F, O (other), N (not applicable), P (prefer not to say)"
        )
    return value.upper()


def _validate_time_zone(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name too long for a file name
        raise validation_error(
            "time_zone", f"time_zone {value!r} is not a time zone of the IANA database (e.g. America/New_York)"
        ) from None
    return value


Short = Annotated[str, StringConstraints(max_length=255)]
SubscriptionState = Literal["subscribed", "opted_in", "unsubscribed"]  # Braze's email/push subscription states


class ProfileAttributes(BaseModel):
    """Braze's user attributes, without identifiers. Standard attributes are listed; any other key is a custom
    attribute (string, number, boolean, array, object, ``{"inc": n}``, ``{"add": [...]}``, ``{"remove": [...]}``).
    ``null`` removes an attribute."""

    model_config = ConfigDict(extra="allow")

    first_name: Short | None = None
    last_name: Short | None = None
    email: str | None = Field(default=None, description="A valid email address.")
    phone: Annotated[str, StringConstraints(max_length=64)] | None = None
    country: Annotated[str, StringConstraints(max_length=64)] | None = Field(
        default=None, description="ISO-3166-1 alpha-2 code, e.g. US."
    )
    home_city: Short | None = None
    language: Annotated[str, StringConstraints(max_length=32)] | None = Field(
        default=None, description="ISO-639-1 code, e.g. en."
    )
    gender: str | None = Field(default=None, description="M, F, O, N or P.")
    dob: str | None = Field(default=None, description="Date of birth, YYYY-MM-DD.")
    time_zone: str | None = Field(default=None, description="IANA time zone name, e.g. America/New_York.")
    email_subscribe: SubscriptionState | None = None
    push_subscribe: SubscriptionState | None = None

    _changes: ProfileChanges = PrivateAttr(default_factory=ProfileChanges)

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        return _validate_email(value)

    @field_validator("dob")
    @classmethod
    def _dob(cls, value: str | None) -> str | None:
        return _validate_dob(value)

    @field_validator("gender")
    @classmethod
    def _gender(cls, value: str | None) -> str | None:
        return _validate_gender(value)

    @field_validator("time_zone")
    @classmethod
    def _time_zone(cls, value: str | None) -> str | None:
        return _validate_time_zone(value)

    @field_validator("country")
    @classmethod
    def _country(cls, value: str | None) -> str | None:
        return value.upper() if value is not None and len(value) == 2 else value

    @model_validator(mode="after")
    def _collect_changes(self) -> Self:
        columns = {name: getattr(self, name) for name in identity.PROFILE_COLUMNS if name in self.model_fields_set}
        custom = [parse_custom_attribute(k, v) for k, v in (self.model_extra or {}).items()]
        self._changes = ProfileChanges(columns=columns, custom=custom)
        return self

    @property
    def changes(self) -> ProfileChanges:
        return self._changes


# ------------------------------------------------------------------------------------- the lean path (no model)

# Standard attributes the lean path checks itself, with their length limits (as ProfileAttributes declares them).
_LEAN_TEXT: dict[str, int] = {
    "first_name": 255,
    "last_name": 255,
    "phone": 64,
    "country": 64,
    "home_city": 255,
    "language": 32,
}
_SUBSCRIPTION_STATES = frozenset(("subscribed", "opted_in", "unsubscribed"))


def lean_profile_changes(obj: dict[str, Any], identifiers: frozenset[str]) -> ProfileChanges | None:
    """The changes of an attributes object in the common shape, without building a model (a model per object
    was most of a /users/track request's validation). Keys in ``identifiers`` are skipped. None when any value
    is not plainly valid or needs a rarer rule (gender, dob, time_zone): the caller then validates the object
    with :class:`ProfileAttributes`, whose errors are the API's; whatever this accepts, that model accepts
    with the same changes (a property-based test holds the two to it)."""
    columns: dict[str, Any] = {}
    custom: list[CustomOp] = []
    for key, value in obj.items():
        if key in identifiers:
            continue
        limit = _LEAN_TEXT.get(key)
        if limit is not None:
            if value is not None:
                if type(value) is not str or len(value) > limit:
                    return None
                if key == "country" and len(value) == 2:
                    value = value.upper()
            columns[key] = value
        elif key == "email":
            if value is not None and (type(value) is not str or len(value) > 320 or not _EMAIL.match(value)):
                return None
            columns[key] = value
        elif key in ("email_subscribe", "push_subscribe"):
            if value is not None and (type(value) is not str or value not in _SUBSCRIPTION_STATES):
                return None
            columns[key] = value
        elif key in identity.PROFILE_COLUMNS:
            return None
        else:
            try:
                custom.append(parse_custom_attribute(key, value))
            except PydanticCustomError:
                return None
    return ProfileChanges(columns=columns, custom=custom)
