"""The campaign editor's form: its fields, to and from a campaign definition (the API's request body).

Only translation and the problems a form alone can have (a JSON body that does not parse, a header line without
a colon) live here; everything a definition must satisfy is checked by the messaging domain when it is saved.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from starlette.datastructures import FormData

from cohortflow.platform.messaging.campaigns import Campaign
from cohortflow.platform.messaging.messages import EmailMessageSpec

DEFAULT_WEBHOOK_BODY = '{\n  "external_id": "{{ external_id }}",\n  "first_name": "{{ first_name | default: \'\' }}"\n}'


@dataclass
class CampaignForm:
    name: str = ""
    channel: str = "email"
    segment_ids: list[str] = field(default_factory=list)
    from_address: str = ""
    reply_to: str = ""
    subject: str = ""
    text: str = ""
    html: str = ""
    url: str = ""
    body: str = DEFAULT_WEBHOOK_BODY
    headers: str = ""
    rate_limit: str = ""
    ignore_frequency_capping: bool = False
    extra_filter: str = ""  # kept as it is: the API may set one, the editor does not show a builder for it
    preview_user: str = ""
    errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_form(cls, form: FormData) -> CampaignForm:
        def text(name: str) -> str:
            value = form.get(name)
            return value if isinstance(value, str) else ""

        return cls(
            name=text("name").strip(),
            channel="webhook" if text("channel") == "webhook" else "email",
            segment_ids=[s for s in form.getlist("segment_ids") if isinstance(s, str) and s],
            from_address=text("from_address").strip(),
            reply_to=text("reply_to").strip(),
            subject=text("subject"),
            text=text("text"),
            html=text("html"),
            url=text("url").strip(),
            body=text("body"),
            headers=text("headers"),
            rate_limit=text("rate_limit").strip(),
            ignore_frequency_capping=text("ignore_frequency_capping") == "on",
            extra_filter=text("extra_filter"),
            preview_user=text("preview_user").strip(),
        )

    @classmethod
    def from_campaign(cls, campaign: Campaign) -> CampaignForm:
        d = campaign.definition
        form = cls(
            name=campaign.name,
            channel=campaign.channel,
            segment_ids=list(d.segment_ids),
            rate_limit=str(d.rate_limit_per_minute or ""),
            ignore_frequency_capping=d.ignore_frequency_capping,
            extra_filter=json.dumps(d.extra_filter) if d.extra_filter is not None else "",
        )
        message = d.message
        if isinstance(message, EmailMessageSpec):
            form.from_address = message.from_address
            form.reply_to = message.reply_to or ""
            form.subject, form.text, form.html = message.subject, message.text, message.html or ""
        else:
            form.url = message.url
            form.body = json.dumps(message.body, indent=2, ensure_ascii=False)
            form.headers = "\n".join(f"{k}: {v}" for k, v in message.headers.items())
            form.preview_user = ""
        return form

    # --- to the domain's shapes ------------------------------------------------------------------------

    def message(self) -> dict[str, Any] | None:
        """The ``message`` object, or None with the form's own problems in ``errors``."""
        if self.channel == "email":
            message: dict[str, Any] = {
                "channel": "email",
                "from_address": self.from_address,
                "subject": self.subject,
                "text": self.text,
            }
            if self.reply_to:
                message["reply_to"] = self.reply_to
            if self.html.strip():
                message["html"] = self.html
            for name, label in (("from_address", "a sender"), ("subject", "a subject"), ("text", "a text body")):
                if not str(message[name]).strip():
                    self.errors[name] = f"Enter {label}."
            return None if self.errors else message
        message = {"channel": "webhook", "url": self.url}
        if not self.url:
            self.errors["url"] = "Enter the URL the webhook is sent to."
        try:
            body = json.loads(self.body or "{}")
        except ValueError as exc:
            self.errors["body"] = f"The body is not valid JSON: {exc}."
        else:
            if isinstance(body, dict):
                message["body"] = body
            else:
                self.errors["body"] = "The body must be a JSON object ({...})."
        headers: dict[str, str] = {}
        for number, line in enumerate(self.headers.splitlines(), start=1):
            if not line.strip():
                continue
            name, colon, value = line.partition(":")
            if not colon or not name.strip():
                self.errors["headers"] = f"Header line {number} must read “Name: value”."
                break
            headers[name.strip()] = value.strip()
        message["headers"] = headers
        return None if self.errors else message

    def definition(self) -> dict[str, Any] | None:
        """The campaign definition (the API's body), or None with the form's own problems in ``errors``."""
        self.errors = {}
        message = self.message()
        if not self.name:
            self.errors["name"] = "Give the campaign a name."
        if not self.segment_ids:
            self.errors["segment_ids"] = "Choose at least one segment to send to."
        rate: int | None = None
        if self.rate_limit:
            if not self.rate_limit.isdigit() or int(self.rate_limit) < 1:
                self.errors["rate_limit"] = "The rate limit must be a whole number of messages per minute, at least 1."
            else:
                rate = int(self.rate_limit)
        extra: Any = None
        if self.extra_filter.strip():
            try:
                extra = json.loads(self.extra_filter)
            except ValueError:
                self.errors["extra_filter"] = "The extra filter is not valid JSON."
        if self.errors or message is None:
            return None
        data: dict[str, Any] = {"name": self.name, "segment_ids": self.segment_ids, "message": message}
        if rate is not None:
            data["rate_limit_per_minute"] = rate
        if self.ignore_frequency_capping:
            data["ignore_frequency_capping"] = True
        if extra is not None:
            data["extra_filter"] = extra
        return data
