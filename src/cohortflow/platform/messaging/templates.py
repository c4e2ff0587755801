"""Liquid templates rendered per user.

The context a template sees: the user's profile fields at the top level (``first_name``, ``email``,
``external_id``, ``country``, ...; ``nil`` when unset) and their custom attributes both under
``custom_attributes`` and, when the name does not shadow a profile field, at the top level too.

Undefined names are errors, except under ``default`` (``{{ plan | default: "free" }}``): a message that
silently renders an empty hole is worse than one that fails with the reason, because a failure for one
user is logged for that user and the others still get theirs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from liquid import BoundTemplate, DictLoader, Environment, StrictDefaultUndefined
from liquid.exceptions import LiquidError

from cohortflow.platform.errors import InvalidRequest
from cohortflow.platform.identity import PROFILE_COLUMNS as STANDARD_ATTRIBUTE_COLUMNS
from cohortflow.platform.store.schema import users

# ``include``/``render`` would read other templates; campaigns have none, so a DictLoader with nothing in
# it turns those tags into errors at save time.
_env = Environment(undefined=StrictDefaultUndefined, loader=DictLoader({}))

PROFILE_FIELDS: tuple[str, ...] = ("external_id", "braze_id", *STANDARD_ATTRIBUTE_COLUMNS)
# The user columns a render needs, for callers that load users in bulk.
PROFILE_COLUMNS = [users.c.id, *(users.c[name] for name in PROFILE_FIELDS), users.c.custom_attributes]


class TemplateRenderError(Exception):
    """Rendering failed for one user; ``reason`` names what went wrong."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _first_line(exc: Exception) -> str:
    text = str(getattr(exc, "message", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@lru_cache(maxsize=512)
def _parse(source: str) -> BoundTemplate:
    return _env.from_string(source)


def validate_template(source: str, *, field: str) -> None:
    """Raise :class:`InvalidRequest` naming ``field`` if ``source`` is not a usable Liquid template."""
    try:
        template = _parse(source)
        unknown = sorted(name for name in template.filter_names() if name not in _env.filters)
    except LiquidError as exc:
        raise InvalidRequest(f"{field}: malformed Liquid template: {_first_line(exc)}") from exc
    if unknown:
        raise InvalidRequest(f"{field}: unknown Liquid filter {', '.join(repr(n) for n in unknown)}")


def user_context(profile: Mapping[Any, Any]) -> dict[str, Any]:
    """The variables a template sees for one user (``profile``: a row with :data:`PROFILE_COLUMNS`)."""
    attributes = dict(profile.get("custom_attributes") or {})
    context: dict[str, Any] = {name: value for name, value in attributes.items() if name not in PROFILE_FIELDS}
    context.update({name: profile.get(name) for name in PROFILE_FIELDS})
    context["custom_attributes"] = attributes
    return context


def render(source: str, context: Mapping[str, Any]) -> str:
    if "{{" not in source and "{%" not in source:
        # Text without output or tag markup renders as itself; Liquid would still build a render context for it.
        return source
    try:
        return _parse(source).render(**context)
    except LiquidError as exc:
        raise TemplateRenderError(f"template error: {_first_line(exc)}") from exc


def render_json(value: Any, context: Mapping[str, Any]) -> Any:
    """Render every string inside a JSON value; keys and structure stay as written, so the result is JSON."""
    if isinstance(value, str):
        return render(value, context)
    if isinstance(value, list):
        return [render_json(item, context) for item in value]
    if isinstance(value, dict):
        return {key: render_json(item, context) for key, item in value.items()}
    return value


def validate_json_templates(value: Any, *, field: str) -> None:
    if isinstance(value, str):
        validate_template(value, field=field)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            validate_json_templates(item, field=f"{field}[{index}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            validate_json_templates(item, field=f"{field}.{key}")


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str | None
