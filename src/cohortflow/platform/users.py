"""The users API's domain: ``/users/track``, ``/users/identify``, ``/users/alias/new``, ``/users/delete`` and
``/users/export/ids``, as Braze documents them (https://www.braze.com/docs/api/endpoints/user_data/).

The request models here are the typed edge of those endpoints (the routes only parse, authenticate and call
the functions below); the same models and functions serve any other entry point. Profile attribute rules
(standard attributes to columns, everything else to ``custom_attributes``, ``null`` removes) live here too,
and the SDK ingestion endpoint (:mod:`cohortflow.platform.sdk`) applies them the same way.

Decisions where Braze is silent or where we differ, all compatible with its documented behaviour:

- ``/users/track`` validates every object before it writes anything: one invalid object rejects the whole
  request with 400 and changes nothing. Objects that are valid but name a user that does not exist and may
  not be created (``_update_existing_only``, an unknown ``braze_id``) are skipped and listed in ``errors``,
  Braze's "success with non-fatal errors".
- Objects are applied in the order attributes, events, purchases, so an attributes object can create the
  user that the request's events then name.
- ``/users/identify``: an alias that is unknown, already identified with another external id, or whose
  label the target profile already uses (Braze: "the user profiles are not combined") is skipped and
  reported in ``errors``; the others are applied.
- ``/users/delete`` accepts ``external_ids``, ``user_aliases`` and ``braze_ids`` together (at most 50 in
  total); Braze asks for one kind per request, which remains valid here.
"""

from __future__ import annotations

import math
import re
import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictBool,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from sqlalchemy import Connection, bindparam, func, insert, select, tuple_, update

from cohortflow.clock import as_utc, utcnow
from cohortflow.platform import identity
from cohortflow.platform.cohorts import in_workspace_cohorts
from cohortflow.platform.errors import InvalidRequest
from cohortflow.platform.identity import AliasKey
from cohortflow.platform.store.schema import (
    cohort_members,
    cohorts,
    partners,
    user_aliases,
    user_events,
    user_purchases,
    users,
)

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

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_DOB = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# Braze's second accepted time format: yyyy-MM-dd'T'HH:mm:ss:SSSZ (milliseconds after a colon).
_BRAZE_TIME = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}):(\d{3})(Z|[+-]\d{2}:?\d{2})?$")
_CURRENCY = re.compile(r"^[A-Za-z]{3}$")


def validation_error(kind: str, message: str) -> PydanticCustomError:
    """A validation error whose text is exactly ``message`` (the context keeps braces in it literal)."""
    return PydanticCustomError(kind, "{message}", {"message": message})


def check_storable(data: Any) -> None:
    """Reject what neither database can store, anywhere in a decoded JSON body: NUL characters (PostgreSQL text
    and JSONB refuse them), lone surrogates (not encodable as UTF-8) and non-finite numbers (JSON has none).
    Iterative, so a deeply nested body cannot exhaust the stack."""
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            _check_text(item)
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise validation_error("number", "numbers must be finite (NaN and Infinity are not JSON)")
        elif isinstance(item, dict):
            for key, value in item.items():
                if isinstance(key, str):
                    _check_text(key)
                stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)


def _check_text(text: str) -> None:
    if "\x00" in text:
        raise validation_error("string", "strings may not contain the NUL character (\\u0000)")
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


# ---------------------------------------------------------------------------------------------- profile attributes


@dataclass(frozen=True)
class CustomOp:
    """One change to a custom attribute: set, unset (``null``), inc, add (to an array) or remove (from one)."""

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
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
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


class _Identified(BaseModel):
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


class AttributesObject(ProfileAttributes, _Identified):
    """One object of ``attributes``: a user identifier plus attributes to set."""


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
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


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


class EventFields(BaseModel):
    """A custom event without its user (the SDK endpoint's event; ``time`` defaults to now)."""

    model_config = ConfigDict(extra="forbid")

    name: EventName
    time: str | None = Field(default=None, description="ISO-8601; defaults to the time of the request.")
    properties: dict[str, Any] | None = None
    app_id: str | None = None

    @field_validator("time")
    @classmethod
    def _time(cls, value: str | None) -> str | None:
        if value is not None:
            parse_time(value)
        return value

    @field_validator("properties")
    @classmethod
    def _properties(cls, value: dict[str, Any] | None) -> dict[str, Any]:
        return _validate_properties(value)

    def at(self, now: datetime) -> datetime:
        # Braze: events with a time in the future are recorded at the current time.
        return min(parse_time(self.time), now) if self.time is not None else now


class EventObject(_Identified):
    """One object of ``events``."""

    model_config = ConfigDict(extra="forbid")

    name: EventName
    time: str = Field(description="ISO-8601 time of the event (a future time is recorded as now).")
    properties: dict[str, Any] | None = None

    @field_validator("time")
    @classmethod
    def _time(cls, value: str) -> str:
        parse_time(value)
        return value

    @field_validator("properties")
    @classmethod
    def _properties(cls, value: dict[str, Any] | None) -> dict[str, Any]:
        return _validate_properties(value)


class PurchaseObject(_Identified):
    """One object of ``purchases``."""

    model_config = ConfigDict(extra="forbid")

    product_id: EventName
    currency: str = Field(description="ISO-4217 alphabetic currency code, e.g. USD.")
    price: Annotated[float, Field(strict=True, allow_inf_nan=False)]
    quantity: Annotated[int, Field(strict=True, ge=1, le=100)] = 1
    time: str = Field(description="ISO-8601 time of the purchase.")
    properties: dict[str, Any] | None = None

    @field_validator("time")
    @classmethod
    def _time(cls, value: str) -> str:
        parse_time(value)
        return value

    @field_validator("properties")
    @classmethod
    def _properties(cls, value: dict[str, Any] | None) -> dict[str, Any]:
        return _validate_properties(value)

    @field_validator("currency")
    @classmethod
    def _currency(cls, value: str) -> str:
        if not _CURRENCY.match(value):
            raise validation_error("currency", f"currency {value!r} must be a 3-letter ISO-4217 code, e.g. USD")
        return value.upper()


def _check_array_sizes(data: Any, names: tuple[str, ...], limit: int, message: str) -> None:
    if not isinstance(data, dict):
        return
    for name in names:
        value = data.get(name)
        if isinstance(value, list) and len(value) > limit:
            raise validation_error("too_many", message.format(array=name, count=len(value)))


def _check_total_size(data: Any, names: tuple[str, ...], message: str, limit: int = MAX_IDS_PER_REQUEST) -> None:
    """Refuse a request whose arrays ``names`` hold more than ``limit`` items together, before validating them."""
    if isinstance(data, dict):
        count = sum(len(v) for name in names if isinstance(v := data.get(name), list))
        if count > limit:
            raise validation_error("too_many", message.format(count=count))


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
        _check_array_sizes(data, ("attributes", "events", "purchases"), MAX_TRACK_OBJECTS, TOO_MANY_TRACK_OBJECTS)
        return data

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


# ------------------------------------------------------------------------------------------------ applying changes


class _Profile:
    """A locked user row being changed in memory; written back once per request."""

    def __init__(self, row: dict[str, Any]) -> None:
        self.id: int = int(row["id"])
        self.row = row
        self.custom: dict[str, Any] = dict(row.get("custom_attributes") or {})
        self.columns: dict[str, Any] = {}
        self.dirty = False

    def apply(self, changes: ProfileChanges, where: str) -> None:
        if not changes:
            return
        self.dirty = True
        self.columns.update(changes.columns)
        for op in changes.custom:
            current = self.custom.get(op.key)
            if op.kind == "set":
                self.custom[op.key] = op.value
            elif op.kind == "unset":
                self.custom.pop(op.key, None)
            elif op.kind == "inc":
                if current is None:
                    current = 0
                if not isinstance(current, int) or isinstance(current, bool):
                    raise InvalidRequest(
                        f"{where}: cannot increment custom attribute {op.key!r}: its current value is not an integer"
                    )
                self.custom[op.key] = current + op.value
            else:
                if current is None:
                    current = []
                if not isinstance(current, list):
                    raise InvalidRequest(
                        f"{where}: cannot {op.kind} values of custom attribute {op.key!r}: its current value is "
                        "not an array"
                    )
                if op.kind == "add":
                    # Braze: an element already present moves to the end.
                    current = [v for v in current if v not in op.value] + list(op.value)
                else:
                    current = [v for v in current if v not in op.value]
                self.custom[op.key] = current

    def flush(self, conn: Connection, now: datetime) -> None:
        if self.dirty:
            flush_profiles(conn, [self], now)


def flush_profiles(conn: Connection, profiles: list[_Profile], now: datetime) -> None:
    """Write changed profiles back: one executemany per set of changed columns (one round trip on psycopg)."""
    groups: dict[tuple[str, ...], list[_Profile]] = {}
    for profile in profiles:
        if profile.dirty:
            groups.setdefault(tuple(sorted(profile.columns)), []).append(profile)
    for columns, group in groups.items():
        values: dict[str, Any] = {c: bindparam(f"v_{c}", type_=users.c[c].type) for c in columns}
        values["custom_attributes"] = bindparam("v_custom_attributes", type_=users.c.custom_attributes.type)
        values["updated_at"] = bindparam("v_updated_at", type_=users.c.updated_at.type)
        conn.execute(
            update(users).where(users.c.id == bindparam("v_id")).values(values),
            [
                {
                    "v_id": p.id,
                    "v_custom_attributes": p.custom,
                    "v_updated_at": now,
                    **{f"v_{c}": p.columns[c] for c in columns},
                }
                for p in group
            ],
        )
        for p in group:
            p.dirty = False


class _Resolver:
    """Resolves the users a track request names, locking them, creating the ones it may create."""

    def __init__(self, conn: Connection, workspace_id: str, now: datetime) -> None:
        self.conn = conn
        self.workspace_id = workspace_id
        self.now = now
        self.by_external: dict[str, int] = {}
        self.by_alias: dict[AliasKey, int] = {}
        self.by_braze: dict[str, int] = {}
        self.profiles: dict[int, _Profile] = {}

    def prefetch(self, objects: list[_Identified]) -> None:
        externals = {o.external_id for o in objects if o.external_id is not None}
        aliases = {o.user_alias.key() for o in objects if o.user_alias is not None}
        brazes = {o.braze_id for o in objects if o.braze_id is not None}
        ws = self.workspace_id
        if externals:
            for uid, ext in self.conn.execute(
                select(users.c.id, users.c.external_id).where(
                    users.c.workspace_id == ws, users.c.external_id.in_(externals)
                )
            ):
                self.by_external[ext] = int(uid)
            # Create in one statement the missing users whose first mention may create them; a user whose first
            # mention is update-only is left to ``resolve``, so the request's order still decides.
            first: dict[str, _Identified] = {}
            for o in objects:
                if o.external_id is not None:
                    first.setdefault(o.external_id, o)
            creatable = [e for e, o in first.items() if e not in self.by_external and not o.updates_existing_only]
            self.by_external.update(identity.create_users_by_external_id(self.conn, ws, creatable, now=self.now))
            missing = [e for e in creatable if e not in self.by_external]
            if missing:  # created by a concurrent request since our lookup
                for uid, ext in self.conn.execute(
                    select(users.c.id, users.c.external_id).where(
                        users.c.workspace_id == ws, users.c.external_id.in_(missing)
                    )
                ):
                    self.by_external[ext] = int(uid)
        if aliases:
            for uid, label, name in self.conn.execute(
                select(user_aliases.c.user_id, user_aliases.c.alias_label, user_aliases.c.alias_name).where(
                    user_aliases.c.workspace_id == ws,
                    tuple_(user_aliases.c.alias_label, user_aliases.c.alias_name).in_(
                        [(a.alias_label, a.alias_name) for a in aliases]
                    ),
                )
            ):
                self.by_alias[AliasKey(label, name)] = int(uid)
        if brazes:
            for uid, bid in self.conn.execute(
                select(users.c.id, users.c.braze_id).where(users.c.workspace_id == ws, users.c.braze_id.in_(brazes))
            ):
                self.by_braze[bid] = int(uid)
        ids = sorted({*self.by_external.values(), *self.by_alias.values(), *self.by_braze.values()})
        if ids:
            query = select(users).where(users.c.workspace_id == ws, users.c.id.in_(ids)).order_by(users.c.id)
            if self.conn.dialect.name == "postgresql":
                query = query.with_for_update()
            for row in self.conn.execute(query).mappings():
                self.profiles[int(row["id"])] = _Profile(dict(row))
        # A user deleted between the lookups and the lock is simply not found.
        for mapping in (self.by_external, self.by_alias, self.by_braze):
            for key in [k for k, uid in mapping.items() if uid not in self.profiles]:
                del mapping[key]  # type: ignore[arg-type]

    def _load(self, user_id: int) -> _Profile:
        row = identity.get_user(self.conn, self.workspace_id, user_id, lock=True)
        assert row is not None
        profile = _Profile(row)
        self.profiles[user_id] = profile
        return profile

    def resolve(self, obj: _Identified) -> _Profile | str:
        """The profile ``obj`` names, or why it was skipped (Braze's non-fatal error ``type``)."""
        create = not obj.updates_existing_only
        if obj.external_id is not None:
            uid = self.by_external.get(obj.external_id)
            if uid is None:
                if not create:
                    return "external_id does not exist and _update_existing_only is true"
                uid, _ = identity.get_or_create_by_external_id(
                    self.conn, self.workspace_id, obj.external_id, now=self.now
                )
                self.by_external[obj.external_id] = uid
                return self.profiles.get(uid) or self._load(uid)
            return self.profiles[uid]
        if obj.user_alias is not None:
            key = obj.user_alias.key()
            uid = self.by_alias.get(key)
            if uid is None:
                if not create:
                    return "user_alias does not exist and _update_existing_only is true (the default with user_alias)"
                uid, _ = identity.create_alias_only_user(self.conn, self.workspace_id, key, now=self.now)
                self.by_alias[key] = uid
                return self.profiles.get(uid) or self._load(uid)
            return self.profiles[uid]
        assert obj.braze_id is not None
        uid = self.by_braze.get(obj.braze_id)
        if uid is None:
            return "braze_id does not exist"
        return self.profiles[uid]

    def flush(self) -> None:
        flush_profiles(self.conn, list(self.profiles.values()), self.now)


def event_row(
    workspace_id: str, user_id: int, name: str, at: datetime, properties: dict[str, Any] | None
) -> dict[str, Any]:
    return {"workspace_id": workspace_id, "user_id": user_id, "name": name, "time": at, "properties": properties or {}}


def track(conn: Connection, workspace_id: str, request: TrackRequest, *, now: datetime | None = None) -> TrackResponse:
    """Apply a validated ``/users/track`` request: attributes, then events, then purchases."""
    now = now or utcnow()
    attributes = request.attributes or []
    events = request.events or []
    purchases = request.purchases or []
    resolver = _Resolver(conn, workspace_id, now)
    resolver.prefetch([*attributes, *events, *purchases])
    errors: list[TrackError] = []
    processed = {"attributes": 0, "events": 0, "purchases": 0}

    for index, attr in enumerate(attributes):
        target = resolver.resolve(attr)
        if isinstance(target, str):
            errors.append(TrackError(type=target, input_array="attributes", index=index))
            continue
        target.apply(attr.changes, f"attributes[{index}]")
        processed["attributes"] += 1

    event_rows: list[dict[str, Any]] = []
    for index, event in enumerate(events):
        target = resolver.resolve(event)
        if isinstance(target, str):
            errors.append(TrackError(type=target, input_array="events", index=index))
            continue
        event_rows.append(
            event_row(workspace_id, target.id, event.name, min(parse_time(event.time), now), event.properties)
        )
        processed["events"] += 1

    purchase_rows: list[dict[str, Any]] = []
    for index, purchase in enumerate(purchases):
        target = resolver.resolve(purchase)
        if isinstance(target, str):
            errors.append(TrackError(type=target, input_array="purchases", index=index))
            continue
        purchase_rows.append(
            {
                "workspace_id": workspace_id,
                "user_id": target.id,
                "product_id": purchase.product_id,
                "currency": purchase.currency,
                "price": float(purchase.price),
                "quantity": purchase.quantity,
                "time": min(parse_time(purchase.time), now),
                "properties": purchase.properties or {},
            }
        )
        processed["purchases"] += 1

    resolver.flush()
    if event_rows:
        conn.execute(insert(user_events), event_rows)
    if purchase_rows:
        conn.execute(insert(user_purchases), purchase_rows)
    return TrackResponse(
        attributes_processed=processed["attributes"] if request.attributes is not None else None,
        events_processed=processed["events"] if request.events is not None else None,
        purchases_processed=processed["purchases"] if request.purchases is not None else None,
        errors=errors or None,
    )


def apply_profile_changes(
    conn: Connection, workspace_id: str, user_id: int, changes: ProfileChanges, *, now: datetime, where: str
) -> None:
    """Apply attribute changes to one user (the SDK endpoint's path; ``/users/track`` batches its own)."""
    row = identity.get_user(conn, workspace_id, user_id, lock=True)
    if row is None:
        raise InvalidRequest(f"{where}: the user no longer exists")
    profile = _Profile(row)
    profile.apply(changes, where)
    profile.flush(conn, now)


# ------------------------------------------------------------------------------------------------------ identify


class AliasToIdentify(BaseModel):
    model_config = ConfigDict(extra="forbid")

    external_id: ExternalId
    user_alias: UserAlias


class IdentifyRequest(RequestBody):
    """``POST /users/identify``: at most 50 aliases to identify."""

    model_config = ConfigDict(extra="forbid")

    aliases_to_identify: list[AliasToIdentify]

    @model_validator(mode="before")
    @classmethod
    def _limits(cls, data: Any) -> Any:
        _check_total_size(data, ("aliases_to_identify",), TOO_MANY_ALIASES)
        return data


class IdentifyError(BaseModel):
    type: str
    input_array: Literal["aliases_to_identify"] = "aliases_to_identify"
    index: int


class IdentifyResponse(BaseModel):
    message: str = "success"
    aliases_processed: int
    identified: int = Field(description="Alias-only profiles that received the external id.")
    merged: int = Field(description="Alias-only profiles merged into an existing profile with that external id.")
    errors: list[IdentifyError] | None = None


def identify(
    conn: Connection, workspace_id: str, request: IdentifyRequest, *, now: datetime | None = None
) -> IdentifyResponse:
    now = now or utcnow()
    identified = merged = 0
    errors: list[IdentifyError] = []
    for index, item in enumerate(request.aliases_to_identify):
        alias = item.user_alias.key()
        source_id = identity.find_by_alias(conn, workspace_id, alias)
        if source_id is None:
            errors.append(IdentifyError(type="user_alias does not exist", index=index))
            continue
        source = identity.get_user(conn, workspace_id, source_id, lock=True)
        assert source is not None
        if source["external_id"] == item.external_id:
            continue  # already identified with this id: a retried request changes nothing
        if source["external_id"] is not None:
            errors.append(IdentifyError(type="user_alias is already identified with another external_id", index=index))
            continue
        target_id = identity.find_by_external_id(conn, workspace_id, item.external_id)
        if target_id is None:
            if identity.claim_external_id(conn, workspace_id, source_id, item.external_id, now=now):
                identified += 1
                continue
            # Another request created the external id meanwhile: merge into it instead.
            target_id = identity.find_by_external_id(conn, workspace_id, item.external_id)
            if target_id is None:
                errors.append(IdentifyError(type="external_id is being changed concurrently; retry", index=index))
                continue
        target_labels = {a.alias_label for a in identity.aliases_of(conn, target_id)}
        if alias.alias_label in target_labels:
            errors.append(
                IdentifyError(
                    type="the user with this external_id already has an alias with this alias_label; "
                    "profiles not combined",
                    index=index,
                )
            )
            continue
        identity.merge_users(conn, workspace_id, source_id, target_id, now=now)
        merged += 1
    return IdentifyResponse(
        aliases_processed=len(request.aliases_to_identify) - len(errors),
        identified=identified,
        merged=merged,
        errors=errors or None,
    )


# ----------------------------------------------------------------------------------------------------- alias/new


class NewUserAlias(BaseModel):
    model_config = ConfigDict(extra="forbid")

    external_id: ExternalId | None = None
    alias_name: Annotated[str, StringConstraints(min_length=1, max_length=identity.MAX_ALIAS_NAME_LENGTH)]
    alias_label: Annotated[str, StringConstraints(min_length=1, max_length=identity.MAX_ALIAS_LABEL_LENGTH)]


class NewAliasesRequest(RequestBody):
    """``POST /users/alias/new``: at most 50 aliases."""

    model_config = ConfigDict(extra="forbid")

    user_aliases: list[NewUserAlias]

    @model_validator(mode="before")
    @classmethod
    def _limits(cls, data: Any) -> Any:
        _check_total_size(data, ("user_aliases",), TOO_MANY_ALIASES)
        return data


class NewAliasesResponse(BaseModel):
    message: str = "success"
    aliases_processed: int
    users_created: int = Field(description="Alias-only users created (objects without external_id).")


def new_aliases(
    conn: Connection, workspace_id: str, request: NewAliasesRequest, *, now: datetime | None = None
) -> NewAliasesResponse:
    """Add aliases to identified users or create alias-only users; any conflict rejects the whole request."""
    now = now or utcnow()
    created = 0
    for index, item in enumerate(request.user_aliases):
        alias = AliasKey(alias_label=item.alias_label, alias_name=item.alias_name)
        where = f"user_aliases[{index}]"
        if item.external_id is None:
            if identity.find_by_alias(conn, workspace_id, alias) is not None:
                raise InvalidRequest(
                    f"{where}: alias {alias.alias_name!r} with label {alias.alias_label!r} already exists "
                    "(a label and name pair is unique in the workspace)"
                )
            identity.create_alias_only_user(conn, workspace_id, alias, now=now)
            created += 1
            continue
        user_id = identity.find_by_external_id(conn, workspace_id, item.external_id)
        if user_id is None:
            raise InvalidRequest(f"{where}: no user has external_id {item.external_id!r}")
        try:
            identity.add_alias(conn, workspace_id, user_id, alias, now=now)
        except InvalidRequest as exc:
            raise InvalidRequest(f"{where}: {exc.message}") from exc
    return NewAliasesResponse(aliases_processed=len(request.user_aliases), users_created=created)


# -------------------------------------------------------------------------------------------------------- delete


class DeleteRequest(RequestBody):
    """``POST /users/delete``: at most 50 identifiers in total."""

    model_config = ConfigDict(extra="forbid")

    external_ids: list[ExternalId] | None = None
    user_aliases: list[UserAlias] | None = None
    braze_ids: list[BrazeId] | None = None

    @model_validator(mode="before")
    @classmethod
    def _limits(cls, data: Any) -> Any:
        _check_total_size(data, ("external_ids", "user_aliases", "braze_ids"), TOO_MANY_IDS)
        return data

    @model_validator(mode="after")
    def _something(self) -> Self:
        if not (self.external_ids or self.user_aliases or self.braze_ids):
            raise validation_error(
                "empty", "the request must contain at least one of external_ids, user_aliases or braze_ids"
            )
        return self


class DeleteResponse(BaseModel):
    message: str = "success"
    deleted: int = Field(description="Users deleted (identifiers naming no user are ignored).")


def delete(conn: Connection, workspace_id: str, request: DeleteRequest) -> DeleteResponse:
    ids: set[int] = set()
    for ext in request.external_ids or []:
        if (uid := identity.find_by_external_id(conn, workspace_id, ext)) is not None:
            ids.add(uid)
    for alias in request.user_aliases or []:
        if (uid := identity.find_by_alias(conn, workspace_id, alias.key())) is not None:
            ids.add(uid)
    for bid in request.braze_ids or []:
        if (uid := identity.find_by_braze_id(conn, workspace_id, bid)) is not None:
            ids.add(uid)
    return DeleteResponse(deleted=identity.delete_users(conn, workspace_id, sorted(ids)))


# -------------------------------------------------------------------------------------------------------- export

EXPORT_FIELDS: tuple[str, ...] = (
    "braze_id",
    "external_id",
    "user_aliases",
    "created_at",
    "random_bucket",
    *identity.PROFILE_COLUMNS,
    "custom_attributes",
    "custom_events",
    "purchases",
    "total_revenue",
    "devices",
    "cohorts",
)


class ExportRequest(RequestBody):
    """``POST /users/export/ids``: up to 50 external_ids and user_aliases together; at most one of device_id,
    email_address and phone; ``braze_id`` alone or with the others."""

    model_config = ConfigDict(extra="forbid")

    external_ids: list[ExternalId] | None = None
    user_aliases: list[UserAlias] | None = None
    device_id: DeviceId | None = None
    braze_id: BrazeId | None = None
    email_address: NonEmpty | None = None
    phone: NonEmpty | None = None
    fields_to_export: list[str] | None = Field(
        default=None, description=f"Fields to return (default: all). One of: {', '.join(EXPORT_FIELDS)}."
    )

    @model_validator(mode="before")
    @classmethod
    def _limits(cls, data: Any) -> Any:
        _check_total_size(data, ("external_ids", "user_aliases"), TOO_MANY_ALIASES)
        return data

    @model_validator(mode="after")
    def _identifiers(self) -> Self:
        single = [n for n in ("device_id", "email_address", "phone") if getattr(self, n) is not None]
        if len(single) > 1:
            raise validation_error(
                "identifier", f"only one of device_id, email_address or phone per request (got {', '.join(single)})"
            )
        if not (self.external_ids or self.user_aliases or self.braze_id or single):
            raise validation_error(
                "empty",
                "the request must name users by external_ids, user_aliases, device_id, braze_id, email_address "
                "or phone",
            )
        if self.fields_to_export is not None:
            unknown = [f for f in self.fields_to_export if f not in EXPORT_FIELDS]
            if unknown:
                raise validation_error(
                    "fields_to_export",
                    f"fields_to_export has unsupported field(s) {', '.join(map(repr, unknown))}; "
                    f"supported: {', '.join(EXPORT_FIELDS)}",
                )
        return self


class EventSummary(BaseModel):
    name: str
    first: datetime
    last: datetime
    count: int


class ExportedDevice(BaseModel):
    device_id: str
    created_at: datetime
    last_seen_at: datetime


class CohortMembership(BaseModel):
    partner: str
    cohort_id: str
    name: str


class ExportedUser(BaseModel):
    """A user profile; fields that are empty or not requested are left out (Braze's convention)."""

    braze_id: str | None = None
    external_id: str | None = None
    user_aliases: list[UserAlias] | None = None
    created_at: datetime | None = None
    random_bucket: int | None = None
    first_name: str | None = None
    last_name: str | None = None
    email: str | None = None
    phone: str | None = None
    country: str | None = None
    home_city: str | None = None
    language: str | None = None
    gender: str | None = None
    dob: str | None = None
    time_zone: str | None = None
    email_subscribe: str | None = None
    push_subscribe: str | None = None
    custom_attributes: dict[str, Any] | None = None
    custom_events: list[EventSummary] | None = None
    purchases: list[EventSummary] | None = None
    total_revenue: float | None = Field(default=None, description="Sum of price x quantity over all purchases.")
    devices: list[ExportedDevice] | None = None
    cohorts: list[CohortMembership] | None = Field(default=None, description="Partner cohorts the user belongs to.")


class ExportResponse(BaseModel):
    message: str = "success"
    users: list[ExportedUser]
    invalid_user_ids: list[str] | None = Field(
        default=None, description="Identifiers (other than aliases) that named no user."
    )
    invalid_user_aliases: list[UserAlias] | None = Field(default=None, description="Aliases that named no user.")


def export_ids(conn: Connection, workspace_id: str, request: ExportRequest) -> ExportResponse:
    order: list[int] = []
    invalid: list[str] = []
    invalid_aliases: list[UserAlias] = []

    def found(uids: Iterable[int]) -> None:
        for uid in uids:
            if uid not in order:
                order.append(uid)

    for ext in request.external_ids or []:
        uid = identity.find_by_external_id(conn, workspace_id, ext)
        found([uid]) if uid is not None else invalid.append(ext)
    for alias in request.user_aliases or []:
        uid = identity.find_by_alias(conn, workspace_id, alias.key())
        found([uid]) if uid is not None else invalid_aliases.append(alias)
    if request.braze_id is not None:
        uid = identity.find_by_braze_id(conn, workspace_id, request.braze_id)
        found([uid]) if uid is not None else invalid.append(request.braze_id)
    if request.device_id is not None:
        uid = identity.find_by_device(conn, workspace_id, request.device_id)
        found([uid]) if uid is not None else invalid.append(request.device_id)
    if request.email_address is not None:
        uids = identity.find_by_email(conn, workspace_id, request.email_address)
        found(uids) if uids else invalid.append(request.email_address)
    if request.phone is not None:
        uids = identity.find_by_phone(conn, workspace_id, request.phone)
        found(uids) if uids else invalid.append(request.phone)

    wanted = set(request.fields_to_export) if request.fields_to_export is not None else set(EXPORT_FIELDS)
    return ExportResponse(
        users=_export_users(conn, workspace_id, order, wanted),
        invalid_user_ids=invalid or None,
        invalid_user_aliases=invalid_aliases or None,
    )


def export_users(conn: Connection, workspace_id: str, user_ids: list[int]) -> list[ExportedUser]:
    """Whole profiles of the workspace's users ``user_ids`` (every export field), in that order."""
    return _export_users(conn, workspace_id, user_ids, set(EXPORT_FIELDS))


def _export_users(conn: Connection, workspace_id: str, user_ids: list[int], wanted: set[str]) -> list[ExportedUser]:
    if not user_ids:
        return []
    rows = {
        int(r["id"]): dict(r)
        for r in conn.execute(
            select(users).where(users.c.workspace_id == workspace_id, users.c.id.in_(user_ids))
        ).mappings()
    }
    aliases: dict[int, list[UserAlias]] = {}
    if "user_aliases" in wanted:
        for r in conn.execute(
            select(user_aliases.c.user_id, user_aliases.c.alias_label, user_aliases.c.alias_name)
            .where(user_aliases.c.user_id.in_(user_ids))
            .order_by(user_aliases.c.alias_label)
        ):
            aliases.setdefault(int(r.user_id), []).append(UserAlias(alias_name=r.alias_name, alias_label=r.alias_label))
    devices = {uid: identity.devices_of(conn, uid) for uid in user_ids} if "devices" in wanted else {}
    events = _summaries(conn, user_events, user_events.c.name, user_ids) if "custom_events" in wanted else {}
    buys = _summaries(conn, user_purchases, user_purchases.c.product_id, user_ids) if "purchases" in wanted else {}
    revenue: dict[int, float] = {}
    if "total_revenue" in wanted:
        for uid, total in conn.execute(
            select(user_purchases.c.user_id, func.sum(user_purchases.c.price * user_purchases.c.quantity))
            .where(user_purchases.c.user_id.in_(user_ids))
            .group_by(user_purchases.c.user_id)
        ):
            revenue[int(uid)] = float(total)
    memberships: dict[int, list[CohortMembership]] = {}
    if "cohorts" in wanted:
        for m in conn.execute(
            select(cohort_members.c.user_id, partners.c.name.label("partner"), cohorts.c.cohort_id, cohorts.c.name)
            .join(cohorts, cohorts.c.id == cohort_members.c.cohort_pk)
            .join(partners, partners.c.id == cohorts.c.partner_id)
            .where(cohort_members.c.user_id.in_(user_ids), in_workspace_cohorts(conn, workspace_id))
            .order_by(partners.c.name, cohorts.c.cohort_id)
        ):
            memberships.setdefault(int(m.user_id), []).append(
                CohortMembership(partner=m.partner, cohort_id=m.cohort_id, name=m.name)
            )

    out = []
    for uid in user_ids:
        row = rows.get(uid)
        if row is None:
            continue
        data: dict[str, Any] = {}
        for name in ("braze_id", "external_id", "random_bucket", *identity.PROFILE_COLUMNS):
            if name in wanted:
                data[name] = row[name]
        if "created_at" in wanted:
            data["created_at"] = as_utc(row["created_at"])
        if "custom_attributes" in wanted and row["custom_attributes"]:
            data["custom_attributes"] = row["custom_attributes"]
        if aliases.get(uid):
            data["user_aliases"] = aliases[uid]
        if devices.get(uid):
            data["devices"] = [ExportedDevice(**d) for d in devices[uid]]
        if events.get(uid):
            data["custom_events"] = events[uid]
        if buys.get(uid):
            data["purchases"] = buys[uid]
        if uid in revenue:
            data["total_revenue"] = revenue[uid]
        if memberships.get(uid):
            data["cohorts"] = memberships[uid]
        out.append(ExportedUser(**data))
    return out


def _summaries(conn: Connection, table: Any, name_column: Any, user_ids: list[int]) -> dict[int, list[EventSummary]]:
    out: dict[int, list[EventSummary]] = {}
    for uid, name, first, last, count in conn.execute(
        select(table.c.user_id, name_column, func.min(table.c.time), func.max(table.c.time), func.count())
        .where(table.c.user_id.in_(user_ids))
        .group_by(table.c.user_id, name_column)
        .order_by(table.c.user_id, name_column)
    ):
        out.setdefault(int(uid), []).append(
            EventSummary(name=name, first=as_utc(first), last=as_utc(last), count=int(count))
        )
    return out
