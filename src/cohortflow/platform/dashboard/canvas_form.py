"""The Canvas editor's form: entry, schedule and steps, to and from a Canvas definition (the API's body).

Steps are cards in order; each names its next step (blank: the user exits). A split's paths each hold one filter,
edited with the segment builder's filter row (:mod:`.segment_builder`), or its JSON when the path's filter is more
than one filter. Only translation and the problems a form alone can have live here; the journey's rules (ids,
unknown steps, cycles, templates, filters) are checked by :mod:`cohortflow.platform.messaging.canvas` on save.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from cohortflow.platform.dashboard import segment_builder as sb
from cohortflow.platform.dashboard.campaign_form import DEFAULT_WEBHOOK_BODY, CampaignForm
from cohortflow.platform.errors import InvalidRequest
from cohortflow.platform.messaging.canvas import (
    EVERYONE_ELSE,
    CanvasDefinition,
    DelayStep,
    EntryAt,
    EntryRecurring,
    MessageStep,
    SplitStep,
)
from cohortflow.platform.messaging.messages import EmailMessageSpec
from cohortflow.platform.segments.filters import parse_filter

STEP_TYPES: dict[str, str] = {"message": "Message", "delay": "Delay", "split": "Audience Paths", "exit": "Exit"}
SCHEDULES: dict[str, str] = {"now": "As soon as it is launched", "at": "Once, at a time", "recurring": "Recurring"}
_STEP_FIELD = re.compile(r"^s(\d+)\.(\w+)$")
_PATH_FIELD = re.compile(r"^s(\d+)\.p(\d+)\.(\w+)$")
_MESSAGE_FIELDS = ("channel", "from_address", "reply_to", "subject", "text", "html", "url", "body", "headers")


@dataclass
class PathForm:
    name: str = ""
    next: str = ""
    row: sb.Row | None = None
    filter_json: str | None = None  # a filter of more than one filter, edited as JSON


@dataclass
class StepForm:
    id: str
    type: str = "message"
    name: str = ""
    next: str = ""
    channel: str = "email"
    from_address: str = ""
    reply_to: str = ""
    subject: str = ""
    text: str = ""
    html: str = ""
    url: str = ""
    body: str = DEFAULT_WEBHOOK_BODY
    headers: str = ""
    days: str = ""
    hours: str = ""
    minutes: str = ""
    seconds: str = ""  # the API allows seconds; the editor keeps them (and shows the field) when a step has some
    paths: list[PathForm] = field(default_factory=list)
    else_next: str = ""

    @property
    def label(self) -> str:
        """How other steps' "next" selects and the flow name this step."""
        return f"{self.name or STEP_TYPES.get(self.type, self.type)} ({self.id})"

    def successors(self) -> list[tuple[str, str]]:
        """(next step id or "" for exit, edge label)."""
        if self.type == "exit":
            return []
        if self.type == "split":
            return [*((p.next, p.name or "path") for p in self.paths), (self.else_next, EVERYONE_ELSE)]
        return [(self.next, "")]


@dataclass
class CanvasForm:
    name: str = ""
    entry_segment_id: str = ""
    schedule: str = "now"
    at: str = ""
    cron: str = ""
    until: str = ""
    reentry: bool = False
    reentry_after: str = "0"
    exit_leaves_segment: bool = False
    exit_events: str = ""
    ignore_frequency_capping: bool = False
    steps: list[StepForm] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def ids(self) -> list[str]:
        return [s.id for s in self.steps]

    def next_options(self, step: StepForm) -> list[tuple[str, str]]:
        """Where a step may lead: exit, or any other step."""
        return [("", "Exit the Canvas"), *((s.id, s.label) for s in self.steps if s.id != step.id)]


def new_step(form: CanvasForm, kind: str, catalogue: sb.Catalogue) -> StepForm:
    used = set(form.ids)
    number = len(form.steps) + 1
    while f"step-{number}" in used:
        number += 1
    step = StepForm(id=f"step-{number}", type=kind if kind in STEP_TYPES else "message")
    if step.type == "delay":
        step.days = "1"
    if step.type == "split":
        step.paths = [PathForm(name="Path 1", row=sb.new_row(catalogue))]
    return step


def default_form(catalogue: sb.Catalogue, segment_id: str = "") -> CanvasForm:
    form = CanvasForm(entry_segment_id=segment_id)
    form.steps = [new_step(form, "message", catalogue)]
    return form


# --- form fields -----------------------------------------------------------------------------------------


def from_form(form: Mapping[str, str], catalogue: sb.Catalogue) -> CanvasForm:
    steps: dict[int, dict[str, str]] = {}
    paths: dict[tuple[int, int], dict[str, str]] = {}
    for name, value in form.items():
        if found := _PATH_FIELD.match(name):
            paths.setdefault((int(found.group(1)), int(found.group(2))), {})[found.group(3)] = str(value)
        elif found := _STEP_FIELD.match(name):
            steps.setdefault(int(found.group(1)), {})[found.group(2)] = str(value)
    result = CanvasForm(
        name=form.get("name", "").strip(),
        entry_segment_id=form.get("entry_segment_id", ""),
        schedule=form.get("schedule", "now") if form.get("schedule") in SCHEDULES else "now",
        at=form.get("at", "").strip(),
        cron=form.get("cron", "").strip(),
        until=form.get("until", "").strip(),
        reentry=form.get("reentry") == "on",
        reentry_after=form.get("reentry_after", "0").strip() or "0",
        exit_leaves_segment=form.get("exit_leaves_segment") == "on",
        exit_events=form.get("exit_events", "").strip(),
        ignore_frequency_capping=form.get("ignore_frequency_capping") == "on",
    )
    for index in sorted(steps):
        fields = steps[index]
        if not fields.get("id"):
            continue
        step = StepForm(id=fields["id"].strip(), type=fields.get("type", "message"))
        for name in ("name", "next", "else_next", "days", "hours", "minutes", "seconds", *_MESSAGE_FIELDS):
            if name in fields:
                setattr(
                    step, name, fields[name] if name in ("text", "html", "body", "headers") else fields[name].strip()
                )
        step.channel = "webhook" if step.channel == "webhook" else "email"
        for (s_index, p_index), path_fields in sorted(paths.items()):
            if s_index != index:
                continue
            prefix = f"s{index}.p{p_index}."
            path = PathForm(name=path_fields.get("name", "").strip(), next=path_fields.get("next", ""))
            if "filter_json" in path_fields:
                path.filter_json = path_fields["filter_json"]
            else:
                path.row = sb.row_from_fields(form, prefix, catalogue) or sb.new_row(catalogue)
            step.paths.append(path)
        result.steps.append(step)
    return _tidy(result, catalogue)


def _tidy(form: CanvasForm, catalogue: sb.Catalogue) -> CanvasForm:
    """Links to steps that no longer exist lead to the exit; a split has at least one path."""
    ids = set(form.ids)
    for step in form.steps:
        if step.type not in STEP_TYPES:
            step.type = "message"
        step.next = step.next if step.next in ids and step.next != step.id else ""
        step.else_next = step.else_next if step.else_next in ids and step.else_next != step.id else ""
        for path in step.paths:
            path.next = path.next if path.next in ids and path.next != step.id else ""
        if step.type == "split" and not step.paths:
            step.paths = [PathForm(name="Path 1", row=sb.new_row(catalogue))]
        if step.type == "delay" and not (step.days or step.hours or step.minutes or step.seconds):
            step.days = "1"
    return form


def apply_action(form: CanvasForm, action: str, catalogue: sb.Catalogue) -> CanvasForm:
    """The editor's buttons: add_step:TYPE, remove:N, up:N, down:N, add_path:N, remove_path:N:M."""
    parts = action.split(":")
    steps = list(form.steps)
    try:
        if parts[0] == "add_step" and len(parts) == 2:
            step = new_step(form, parts[1], catalogue)
            # The journey grows at its end: the last step that led to the exit now leads to the new one.
            if steps and steps[-1].type in ("message", "delay") and not steps[-1].next:
                steps[-1] = replace(steps[-1], next=step.id)
            steps.append(step)
        elif parts[0] == "remove" and len(parts) == 2:
            del steps[int(parts[1])]
        elif parts[0] in ("up", "down") and len(parts) == 2:
            i = int(parts[1])
            j = i - 1 if parts[0] == "up" else i + 1
            if 0 <= j < len(steps):
                steps[i], steps[j] = steps[j], steps[i]
        elif parts[0] == "add_path" and len(parts) == 2:
            step = steps[int(parts[1])]
            step.paths = [*step.paths, PathForm(name=f"Path {len(step.paths) + 1}", row=sb.new_row(catalogue))]
        elif parts[0] == "remove_path" and len(parts) == 3:
            step = steps[int(parts[1])]
            step.paths = [p for k, p in enumerate(step.paths) if k != int(parts[2])]
    except (ValueError, IndexError):
        pass  # a stale button of a form that changed meanwhile
    return _tidy(replace(form, steps=steps), catalogue)


# --- form -> definition ----------------------------------------------------------------------------------


def _utc(text: str, what: str) -> str:
    try:
        return datetime.fromisoformat(text).replace(tzinfo=UTC).isoformat()
    except ValueError:
        raise ValueError(f"{what} must be a date and a time (UTC), e.g. 2030-01-31 09:00") from None


def definition(form: CanvasForm) -> dict[str, Any] | None:
    """The Canvas definition, or None with the form's own problems in ``errors`` (keyed by field name)."""
    form.errors = {}
    errors = form.errors
    if not form.name:
        errors["name"] = "Give the Canvas a name."
    if not form.entry_segment_id:
        errors["entry_segment_id"] = "Choose the entry segment."
    schedule: dict[str, Any] = {"type": form.schedule}
    try:
        if form.schedule == "at":
            if not form.at:
                raise ValueError("Enter the entry time (UTC)")
            schedule["at"] = _utc(form.at, "The entry time")
        elif form.schedule == "recurring":
            if not form.cron:
                raise ValueError("Enter a cron expression, e.g. 0 9 * * 1 for Mondays at 09:00 UTC")
            schedule["cron"] = form.cron
            if form.until:
                schedule["until"] = _utc(form.until, "The end")
    except ValueError as exc:
        errors["schedule"] = f"{exc}."
    if not form.steps:
        errors["steps"] = "Add at least one step."
    steps = []
    for index, step in enumerate(form.steps):
        data = _step(step, f"s{index}.", errors)
        if data is not None:
            steps.append(data)
    if not form.reentry_after.isdigit():
        errors["rules"] = "The re-entry wait must be a whole number of seconds."
    if errors:
        return None
    return {
        "name": form.name,
        "entry_segment_id": form.entry_segment_id,
        "entry_schedule": schedule,
        "reentry": {"allowed": form.reentry, "after_seconds": int(form.reentry_after)},
        "exit_criteria": {
            "leaves_entry_segment": form.exit_leaves_segment,
            "performs_events": [e.strip() for e in form.exit_events.split(",") if e.strip()],
        },
        "ignore_frequency_capping": form.ignore_frequency_capping,
        "steps": steps,
    }


def _step(step: StepForm, prefix: str, errors: dict[str, str]) -> dict[str, Any] | None:
    data: dict[str, Any] = {"id": step.id, "type": step.type}
    if step.name:
        data["name"] = step.name
    if step.type in ("message", "delay") and step.next:
        data["next"] = step.next
    if step.type == "message":
        draft = CampaignForm(
            channel=step.channel, **{name: getattr(step, name) for name in _MESSAGE_FIELDS if name != "channel"}
        )
        message = draft.message()
        for name, problem in draft.errors.items():
            errors[prefix + name] = problem
        data["message"] = message
        return data if message is not None else None
    if step.type == "delay":
        ok = True
        for unit in ("days", "hours", "minutes", "seconds"):
            text = getattr(step, unit)
            if text and not text.isdigit():
                errors[prefix + unit] = f"The {unit} must be a whole number."
                ok = False
            elif text:
                data[unit] = int(text)
        if ok and not any(data.get(u) for u in ("days", "hours", "minutes", "seconds")):
            errors[prefix + "days"] = "A delay needs a duration: days, hours and/or minutes."
            ok = False
        return data if ok else None
    if step.type == "split":
        paths = []
        for p_index, path in enumerate(step.paths):
            where = f"{prefix}p{p_index}."
            if not path.name:
                errors[where + "name"] = "Name the path."
            try:
                if path.filter_json is not None:
                    tree = json.loads(path.filter_json)
                    parse_filter(tree)
                elif path.row is not None:
                    tree = sb.row_to_leaf(path.row)
                    parse_filter(tree)
                else:  # pragma: no cover - every path has one or the other
                    raise ValueError("Choose a filter.")
            except (ValueError, InvalidRequest) as exc:
                text = exc.message if isinstance(exc, InvalidRequest) else str(exc)
                errors[where + "filter"] = text.removeprefix("invalid segment filter: ")
                continue
            item: dict[str, Any] = {"name": path.name, "filter": tree}
            if path.next:
                item["next"] = path.next
            paths.append(item)
        data["paths"] = paths
        if step.else_next:
            data["else_next"] = step.else_next
        return data
    return data


# --- definition -> form ----------------------------------------------------------------------------------


def from_definition(d: CanvasDefinition, catalogue: sb.Catalogue) -> CanvasForm:
    form = CanvasForm(
        name=d.name,
        entry_segment_id=d.entry_segment_id,
        schedule=d.entry_schedule.type,
        reentry=d.reentry.allowed,
        reentry_after=str(d.reentry.after_seconds),
        exit_leaves_segment=d.exit_criteria.leaves_entry_segment,
        exit_events=", ".join(d.exit_criteria.performs_events),
        ignore_frequency_capping=d.ignore_frequency_capping,
    )
    schedule = d.entry_schedule
    if isinstance(schedule, EntryAt):
        form.at = schedule.at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M")
    elif isinstance(schedule, EntryRecurring):
        form.cron = schedule.cron
        form.until = schedule.until.astimezone(UTC).strftime("%Y-%m-%dT%H:%M") if schedule.until else ""
    for step in d.steps:
        item = StepForm(id=step.id, type=step.type, name=step.name or "")
        if isinstance(step, MessageStep):
            item.next = step.next or ""
            message = step.message
            if isinstance(message, EmailMessageSpec):
                item.channel = "email"
                item.from_address, item.reply_to = message.from_address, message.reply_to or ""
                item.subject, item.text, item.html = message.subject, message.text, message.html or ""
            else:
                item.channel = "webhook"
                item.url = message.url
                item.body = json.dumps(message.body, indent=2, ensure_ascii=False)
                item.headers = "\n".join(f"{k}: {v}" for k, v in message.headers.items())
        elif isinstance(step, DelayStep):
            item.next = step.next or ""
            for unit in ("days", "hours", "minutes", "seconds"):
                value = getattr(step, unit)
                setattr(item, unit, str(value) if value else "")
        elif isinstance(step, SplitStep):
            item.else_next = step.else_next or ""
            for path in step.paths:
                node = parse_filter(path.filter)
                row = sb.leaf_row(node, catalogue)
                item.paths.append(
                    PathForm(
                        name=path.name,
                        next=path.next or "",
                        row=row,
                        filter_json=None if row is not None else json.dumps(path.filter, indent=2),
                    )
                )
        form.steps.append(item)
    return form
