"""Reading form fields: strings trimmed, empty fields as None, numbers with a clear error naming the field."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import TypeAdapter, ValidationError

from cohortflow.sync.errors import InvalidInput


def text(form: Mapping[str, Any], key: str) -> str | None:
    value = form.get(key)
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value or None


def required(form: Mapping[str, Any], key: str, label: str) -> str:
    value = text(form, key)
    if value is None:
        raise InvalidInput(f"{label} is required")
    return value


def number(form: Mapping[str, Any], key: str, label: str) -> float | None:
    value = text(form, key)
    if value is None:
        return None
    try:
        return float(value)
    except ValueError as exc:
        raise InvalidInput(f"{label} must be a number, not {value!r}") from exc


def validated(adapter: TypeAdapter[Any], data: Any) -> Any:
    """Validate ``data`` with the workspace file's own models; errors become one readable InvalidInput."""
    try:
        return adapter.validate_python(data)
    except ValidationError as exc:
        parts = []
        for err in exc.errors(include_url=False):
            loc = ".".join(
                str(p)
                for p in err["loc"]
                if str(p) not in ("braze_cohorts", "braze_users_track", "duckdb", "sqlite", "postgres", "sqlalchemy")
            )
            msg = err["msg"].removeprefix("Value error, ")
            parts.append(f"{loc.replace('_', ' ')}: {msg}" if loc else msg)
        raise InvalidInput("; ".join(parts)) from None
