"""Jinja filters the pages share: numbers, percentages, durations and status badges."""

from __future__ import annotations

from typing import Any

from jinja2 import Environment

NONE = "\u2013"  # an en dash: "no value" in a table cell

_STATUS_CLASS = {
    "succeeded": "ok",
    "partial": "warn",
    "failed": "bad",
    "cancelled": "off",
    "disabled": "off",
    "pending": "off",
    "queued": "run",
    "querying": "run",
    "planning": "run",
    "sending": "run",
}


def num(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else (NONE if value is None else str(value))


def pct(value: float | None, digits: int = 1) -> str:
    return NONE if value is None else f"{value * 100:.{digits}f}%"


def seconds(value: float | None) -> str:
    if value is None:
        return NONE
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 120:
        return f"{value:.1f} s"
    return f"{value / 60:.1f} min"


def status_class(status: str) -> str:
    return _STATUS_CLASS.get(status, "off")


def trigger_words(trigger: str | None) -> str:
    """Who started a run, as a sentence ends: "from the web app", "by the schedule", "after load_users succeeded"."""
    if trigger and trigger.startswith("after:"):
        return f"after {trigger.removeprefix('after:')} succeeded"
    return {
        "web": "from the web app",
        "api": "through the API",
        "schedule": "by the schedule",
        "cli": "from the command line",
    }.get(trigger or "cli", f"by {trigger}")


def sends(sync: Any) -> str:
    """What a sync sends, as its pages name it: a model, or an audience with its split group / priority list."""
    if sync.audience is None:
        return str(sync.model)
    ref = sync.audience
    parts = [f"split {ref.split}"] if ref.split else []
    if ref.priority_list:
        parts.append(f"priority list {ref.priority_list}")
    return f"audience {ref.name}" + (f" ({', '.join(parts)})" if parts else "")


def install(env: Environment) -> None:
    env.filters.update(
        num=num, pct=pct, seconds=seconds, status_class=status_class, trigger_words=trigger_words, sends=sends
    )
