"""What a campaign or a Canvas message step sends: an email or a webhook, with Liquid templates.

Definitions are checked when saved (fields, URL, addresses, every template parses and uses only known
filters), so a send never starts with a message that cannot render for anyone.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializationInfo,
    ValidationError,
    field_serializer,
    field_validator,
)

from cohortflow.platform.errors import InvalidRequest
from cohortflow.platform.messaging.templates import validate_json_templates, validate_template
from cohortflow.redact import MASK, is_secret_name, redact_url, redact_urls

# A deliberately plain check: one @, no spaces, a dot in the domain. SMTP servers have the last word.
EMAIL_ADDRESS = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")
_NAMED_ADDRESS = re.compile(r"^[^<>]*<([^<>]+)>$")


def _check_address(value: str, field: str) -> str:
    value = value.strip()
    named = _NAMED_ADDRESS.match(value)
    if not EMAIL_ADDRESS.match(named.group(1).strip() if named else value):
        raise ValueError(f"{field} must be an email address such as news@example.com or 'News <news@example.com>'")
    return value


class EmailMessageSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channel: Literal["email"]
    from_address: str = Field(description="Sender, e.g. 'Acme <news@acme.example>'.")
    reply_to: str | None = None
    subject: str = Field(min_length=1, description="Liquid template.")
    text: str = Field(min_length=1, description="Plain-text part (Liquid template).")
    html: str | None = Field(default=None, description="HTML part (Liquid template); optional.")

    @field_validator("from_address")
    @classmethod
    def _from(cls, value: str) -> str:
        return _check_address(value, "from_address")

    @field_validator("reply_to")
    @classmethod
    def _reply_to(cls, value: str | None) -> str | None:
        return None if value is None else _check_address(value, "reply_to")


class WebhookMessageSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channel: Literal["webhook"]
    url: str = Field(description="http(s) URL the JSON body is POSTed to.")
    body: dict[str, Any] = Field(description="JSON object; every string in it is a Liquid template.")
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_seconds: float | None = Field(default=None, gt=0, le=300)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url must be an absolute http:// or https:// URL, got {redact_url(value)!r}")
        return value.strip()

    @field_serializer("url")
    def _shown_url(self, value: str, info: SerializationInfo) -> str:
        return redact_url(value) if _shown(info) else value

    @field_serializer("headers")
    def _shown_headers(self, value: dict[str, str], info: SerializationInfo) -> dict[str, str]:
        if not _shown(info):
            return value
        return {name: MASK if is_secret_name(name) else redact_urls(v) for name, v in value.items()}

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name):
                raise ValueError(f"headers: {name!r} is not a valid HTTP header name")
            if name.lower() in ("idempotency-key", "content-length", "host"):
                raise ValueError(f"headers: {name!r} is set by the platform")
        return value


M = TypeVar("M", bound=BaseModel)

# Serialization context for a definition that is shown (API answers, CLI output) rather than stored: credentials in
# webhook URLs and secret-named headers are masked. What is stored keeps them, since sending needs them.
SHOWN: dict[str, bool] = {"shown": True}


def _shown(info: SerializationInfo) -> bool:
    return isinstance(info.context, dict) and bool(info.context.get("shown"))


def shown_dump(model: BaseModel, **kwargs: Any) -> dict[str, Any]:
    """``model`` as JSON-ready data for people and API clients, credentials masked."""
    return model.model_dump(mode="json", context=SHOWN, **kwargs)


MessageSpec = Annotated[EmailMessageSpec | WebhookMessageSpec, Field(discriminator="channel")]
Channel = Literal["email", "webhook"]


def check_message_templates(message: EmailMessageSpec | WebhookMessageSpec, *, field: str = "message") -> None:
    if isinstance(message, EmailMessageSpec):
        validate_template(message.subject, field=f"{field}.subject")
        validate_template(message.text, field=f"{field}.text")
        if message.html is not None:
            validate_template(message.html, field=f"{field}.html")
    else:
        validate_json_templates(message.body, field=f"{field}.body")


def validation_message(exc: ValidationError, *, what: str) -> str:
    """One readable sentence from a Pydantic error: the first few problems with their locations."""
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()))
        msg = str(err.get("msg", "")).removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return f"invalid {what}: " + "; ".join(parts)


def parse_model(model: type[M], data: Any, *, what: str) -> M:
    if isinstance(data, model):
        return data
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidRequest(validation_message(exc, what=what)) from exc
